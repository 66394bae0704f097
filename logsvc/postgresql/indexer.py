"""
The PostgreSQL journal's deduplicating indexer: off the commit path, in the writer
thread of one node at a time, each content stored more than once moves to
C{logsvc_hashes} and every copy's record becomes L{REFERENCE}.
"""

from bisect import bisect_right

from ..store import DIGEST, entryHash

# A step of the indexer: the first copy of each new digest is noted; a later copy and
# the first both become C{=} (their content moves to logsvc_hashes.data, once).  The
# rows: new hashes (digest, idx, last, data); changed hashes (digest, idx, last, data,
# or NULL to keep it); and rewritten chunks (first, data).
INDEX = """
WITH added AS (
    INSERT INTO logsvc_hashes (digest, idx, last, data)
    SELECT * FROM unnest(%(newDigests)b::bytea[], %(newIdx)b::bigint[],
                         %(newLast)b::bigint[], %(newData)b::bytea[])),
changed AS (
    UPDATE logsvc_hashes h SET idx = u.idx, last = u.last, data = coalesce(u.data, h.data)
    FROM unnest(%(digests)b::bytea[], %(idx)b::bigint[], %(last)b::bigint[],
                %(data)b::bytea[]) AS u (digest, idx, last, data)
    WHERE h.digest = u.digest),
rewritten AS (
    UPDATE logsvc_chunks c SET data = u.data
    FROM unnest(%(firsts)b::bigint[], %(chunks)b::bytea[]) AS u (first, data)
    WHERE c.first = u.first)
UPDATE logsvc_indexed SET indexed = %(indexed)s
"""

# The chunk holding each of the given indices.
CHUNKS_AT = """
SELECT DISTINCT c.first, c.count, c.digests, c.data FROM unnest(%b::bigint[]) AS i (idx)
JOIN LATERAL (SELECT * FROM logsvc_chunks WHERE first <= i.idx
              ORDER BY first DESC LIMIT 1) c ON c.first + c.count > i.idx
"""

REFERENCE = b"="
"""A stored record whose content is in C{logsvc_hashes}, under the entry's digest."""

INDEX_STEP = 5_000
"""Entries the deduplicating indexer handles per transaction."""


def deduplicate(write, indexed: int) -> int:
    """
    The entries after C{indexed}, in C{write}'s transaction (which holds the indexer's
    row): each digest's first copy is noted in C{logsvc_hashes}; once a second copy is
    found, the content moves there and every copy becomes a L{REFERENCE}.  Copies whose
    content does not match its digest are left alone.  Returns the last index handled.
    """
    (head,), = write.execute("SELECT head FROM logsvc_counter")
    rows = write.execute(
        "SELECT first, count, digests, data FROM logsvc_chunks WHERE first > %s"
        " AND first <= %s ORDER BY first", (indexed, min(head, indexed + INDEX_STEP)),
        binary=True).fetchall()
    last = head         # when no chunk is left to read (lost rows), up to the head
    chunks = {}         # first -> (digests, records), of chunks read whole
    step = []           # (index, digest, chunk first) of entries to index
    for first, count, digests, data in rows:
        records = bytes(data).split(b"\n")
        digests = bytes(digests)
        if len(records) == count and len(digests) == count * DIGEST:
            chunks[first] = (digests, records)
            step += [(first + at, digests[at * DIGEST:(at + 1) * DIGEST], first)
                     for at in range(count)]
        last = first + count - 1
    known = {bytes(digest): [idx, lastCopy, shared]
             for digest, idx, lastCopy, shared in write.execute(
                 "SELECT digest, idx, last, data IS NOT NULL FROM logsvc_hashes"
                 " WHERE digest = ANY(%b)", (list({d for _, d, _ in step}),))}
    originals = [state[0] for state in known.values() if not state[2]]
    for first, count, digests, data in (write.execute(CHUNKS_AT, (originals,), binary=True)
                                        if originals else ()):
        records = bytes(data).split(b"\n")
        if len(records) == count and len(bytes(digests)) == count * DIGEST:
            chunks.setdefault(first, (bytes(digests), records))
    new: dict
    new, changed, moved, rewritten = {}, {}, {}, set()
    starts = sorted(chunks)

    def record(index):
        """The chunk first and position of C{index}, if its chunk was read whole."""
        at = bisect_right(starts, index) - 1
        if at >= 0 and index < starts[at] + len(chunks[starts[at]][1]):
            return starts[at], index - starts[at]
        return None

    for index, digest, first in step:
        records = chunks[first][1]
        at = index - first
        content = records[at]
        if entryHash(content) != digest:
            continue
        state = new.get(digest) or known.get(digest)
        if state is None:
            new[digest] = [index, index, False]
            continue
        original, _, shared = state
        if not shared:
            where = record(original)
            kept = where and chunks[where[0]][1][where[1]]
            if not kept or entryHash(kept) != digest:
                state[:] = [index, index, False]     # the first copy is lost: this one
                changed[digest] = state
                continue
            chunks[where[0]][1][where[1]] = REFERENCE
            rewritten.add(where[0])
            moved[digest] = content
            state[0], state[2] = 0, True
        state[1] = index
        records[at] = REFERENCE
        rewritten.add(first)
        if digest not in new:
            changed[digest] = state
    added = list(new.items())
    updated = list(changed.items())
    write.execute(INDEX, {
        "newDigests": [d for d, _ in added], "newIdx": [s[0] for _, s in added],
        "newLast": [s[1] for _, s in added], "newData": [moved.get(d) for d, _ in added],
        "digests": [d for d, _ in updated], "idx": [s[0] for _, s in updated],
        "last": [s[1] for _, s in updated], "data": [moved.get(d) for d, _ in updated],
        "firsts": sorted(rewritten),
        "chunks": [b"\n".join(chunks[first][1]) for first in sorted(rewritten)],
        "indexed": last})
    return last
