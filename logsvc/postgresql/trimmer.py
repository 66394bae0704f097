"""
Retention in the PostgreSQL journal: the oldest chunks deleted a step at a time, by the
writer thread between commits, holding the counter so that commits on every node take
turns with it.
"""

from ..store import RECENT_WRITES, TRIM_STEP

# A retention step, once it holds the counter and the indexer's row: the chunks below
# C{end} (their write ids kept in logsvc_retries), and the content of digests no copy
# from C{end} on refers to; entries not yet indexed there are never indexed.
TRIM = """
WITH deleted AS (DELETE FROM logsvc_chunks WHERE first < %(end)s
                 RETURNING first, digests, ids),
retried AS (
    INSERT INTO logsvc_retries SELECT first, json_array_length(ids::json), digests, ids
    FROM deleted WHERE ids IS NOT NULL),
hashes AS (
    DELETE FROM logsvc_hashes h USING (
        SELECT DISTINCT substring(d.digests FROM i * 32 + 1 FOR 32) AS digest
        FROM deleted d, generate_series(0, length(d.digests) / 32 - 1) AS i) g
    WHERE h.digest = g.digest AND h.last < %(end)s),
times AS (DELETE FROM logsvc_times WHERE idx < %(end)s),
indexed AS (UPDATE logsvc_indexed SET indexed = greatest(indexed, %(end)s - 1))
UPDATE logsvc_counter SET first = %(end)s
"""

# The deleted write ids the retry window still covers are kept, the rest forgotten.
PRUNE_RETRIES = """
DELETE FROM logsvc_retries WHERE first < (
    SELECT first FROM (SELECT first, sum(count) OVER (ORDER BY first DESC) AS newer
                       FROM logsvc_retries) r
    WHERE newer >= %s ORDER BY first DESC LIMIT 1)
"""


def trimStep(write, retention, now: float) -> tuple[int, int, int]:
    """
    Delete up to L{TRIM_STEP} entries towards C{retention}'s limits at time C{now},
    whole chunks, in C{write}'s transaction (left for the caller to commit), which holds
    the counter.  Returns the first index before and after, and the first index the
    limits need.
    """
    (head, first), = write.execute(
        "SELECT head, first FROM logsvc_counter FOR UPDATE")
    target = trimTarget(write, retention, now, head, first)
    end = first
    if target > first:
        # Whole chunks, about TRIM_STEP entries, at least one.
        (end,), = write.execute(
            "SELECT coalesce(max(first), (SELECT min(first) FROM logsvc_chunks"
            " WHERE first > %(first)s), %(target)s) FROM logsvc_chunks"
            " WHERE first > %(first)s AND first <= %(limit)s",
            {"first": first, "target": target,
             "limit": min(target, first + TRIM_STEP)})
        end = min(end, target)
        write.execute("SELECT indexed FROM logsvc_indexed FOR UPDATE")
        write.execute(TRIM, {"end": end})
        write.execute(PRUNE_RETRIES, (RECENT_WRITES,))
    return first, end, target


def trimTarget(write, retention, now: float, head: int, first: int) -> int:
    """The first index of the chunk holding the lowest index any limit needs."""
    if not retention or head < first:
        return first
    target = head + 1
    if retention.entries is not None:
        target = min(target, head - retention.entries + 1)
    if retention.seconds is not None:
        (latest,), = write.execute("SELECT max(idx) FROM logsvc_times WHERE time <= %s",
                                   (now - retention.seconds,))
        target = min(target, latest or first)
    if retention.bytes is not None:
        # The oldest chunk needed: the newer ones hold less than the limit.
        (needed,), = write.execute(
            "SELECT min(first) FROM (SELECT first, sum(length(data)) OVER"
            " (ORDER BY first DESC) - length(data) AS newer FROM logsvc_chunks) k"
            " WHERE newer < %s", (retention.bytes,))
        target = min(target, needed if needed is not None else head + 1)
    if target <= first:
        return first
    if target <= head:
        (chunk,), = write.execute("SELECT max(first) FROM logsvc_chunks WHERE first <= %s",
                                  (target,))
        target = chunk or first
    return max(target, first)
