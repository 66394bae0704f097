"""
The SQLite journal's deduplicating indexer: between commits, in the writer thread, it
walks the new entries in index order, records each new hash in C{hashes}, and rewrites
a later copy of an entry as C{=INDEX} pointing at the first.  Keeping that B-tree off
the commit path is what keeps random hash inserts from slowing acknowledgements; under
sustained load deduplication lags behind the head and catches up when writes ease.
Its sweeper removes the hashes of entries retention deleted.
"""

import json

from ..store import DIGEST
from .schema import CHUNKS_FROM, meta

INDEX_STEP = 5_000
"""Entries the indexer handles per transaction."""

# An indexing step's hashes are passed as one blob (?1) and their indices as a JSON
# array (?2): the first index of each hash is kept, and the copies are found after, as
# one JSON list of [copy, original] (not a row each: the writer thread would take the
# GIL back once per row).
INDEX_HASHES = """
INSERT OR IGNORE INTO hashes (hash, idx)
SELECT substr(?1, key * 32 + 1, 32), value FROM json_each(?2) ORDER BY value
"""
FIND_COPIES = """
SELECT json_group_array(json_array(j.value, h.idx)) FROM json_each(?2) j
JOIN hashes h ON h.hash = substr(?1, j.key * 32 + 1, 32) WHERE h.idx <> j.value
"""

# The copies an indexing step found, as one blob of digests (?1) and a JSON array of
# their indices (?2): each hash's C{last} becomes its highest copy.
UPDATE_LAST = """
UPDATE {table} SET last = c.last FROM (
    SELECT substr(?1, key * 32 + 1, 32) AS hash, max(value) AS last FROM json_each(?2)
    GROUP BY 1) AS c
WHERE {table}.hash = c.hash
"""

# The first copies an indexing step found copies of: ?1 the copies' digests, ?2 a JSON
# list of [original, position of a copy in ?1].
INSERT_REFERENCED = """
INSERT OR IGNORE INTO referenced (idx, hash)
SELECT json_extract(value, '$[0]'), substr(?1, json_extract(value, '$[1]') * 32 + 1, 32)
FROM json_each(?2)
"""

# Hashes of entries with indices ?2 (a JSON list) and digests ?1: a sweeping step
# deletes them, and an indexing step first deletes those still there (?3 = first).
SWEEP_HASHES = """
DELETE FROM hashes WHERE (hash, idx) IN (
    SELECT substr(?1, key * 32 + 1, 32), value FROM json_each(?2))
"""
STALE_HASHES = """
DELETE FROM hashes WHERE hash IN (SELECT substr(?1, key * 32 + 1, 32) FROM json_each(?2))
AND idx > 0 AND idx < ?3
"""


class Indexer:
    """
    Deduplicates what the L{Writer} committed: C{indexed} is the last index handled,
    C{indexing} false after an error until the next commit, C{unswept} true while
    hashes of deleted entries wait in C{sweep}.
    """

    def __init__(self, writer):
        self._writer = writer
        self.indexed = 0
        self.indexing = True
        self.unswept = False
        self._sweepTurn = False     # the sweeper goes next, if it has work

    def load(self) -> None:
        connection = self._writer.connection
        self.indexed = meta(connection, "indexed", 0)
        self.unswept = bool(connection.execute("SELECT 1 FROM sweep LIMIT 1").fetchone())

    def lag(self) -> int:
        """Entries committed but not yet deduplicated (none while indexing is paused)."""
        return self._writer.head - self.indexed if self.indexing else 0

    def step(self) -> None:
        """
        One step of the indexer or of the sweeper; they take turns, since each entry
        costs each a random page and neither may starve.
        """
        if self.unswept and (self._sweepTurn or not self.lag()):
            self._sweepTurn = False
            self._sweepStep()
        else:
            self._sweepTurn = True
            self._indexStep()

    def _indexStep(self) -> None:
        """
        Record the hashes of the next entries in C{hashes} (the first index of each),
        and rewrite each entry whose hash was already there as a reference to it
        (C{=0} when that entry was deleted and its data kept in C{blobs}); each hash
        notes its highest copy, so retention knows whether its data is still needed.
        The hashes go to SQLite as one blob, so the work per entry runs in SQLite's C
        code.
        """
        write = self._writer.connection
        write.execute("BEGIN IMMEDIATE")
        hashes: list[bytes] = []
        indices: list[int] = []
        last = self.indexed
        for first, count, digests in write.execute(
                "SELECT first, count, digests FROM chunks WHERE first > ? AND first <= ?"
                " ORDER BY first", (self.indexed, self._writer.head)):
            hashes.append(digests)
            indices += range(first, first + count)
            last = first + count - 1
            if len(indices) >= INDEX_STEP:
                break
        step = (b"".join(hashes), json.dumps(indices))
        if self.unswept:
            write.execute(STALE_HASHES, (*step, self._writer.first))
        write.execute(INDEX_HASHES, step)
        copies = dict(json.loads(write.execute(FIND_COPIES, step).fetchone()[0]))
        if copies:
            self._replaceCopies(copies)
            order = sorted(copies)
            at = [(index - indices[0]) * DIGEST for index in order]
            found = (b"".join([step[0][i:i + DIGEST] for i in at]), json.dumps(order))
            write.execute(UPDATE_LAST.format(table="hashes"), found)
            if 0 in copies.values():
                write.execute(UPDATE_LAST.format(table="blobs"), found)
            positions = {copies[index]: at for at, index in enumerate(order)}
            positions.pop(0, None)
            write.execute(INSERT_REFERENCED, (found[0], json.dumps(list(positions.items()))))
        write.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)", (last,))
        write.execute("COMMIT")
        self.indexed = last

    def _replaceCopies(self, copies: dict) -> None:
        write = self._writer.connection
        rows = write.execute(CHUNKS_FROM, (min(copies), max(copies))).fetchall()
        for first, count, _, data in rows:
            records = data.split(b"\n")
            replaced = False
            for index in range(first, first + count):
                original = copies.get(index)
                if original is not None:
                    records[index - first] = b"=%d" % original
                    replaced = True
            if replaced:
                rewritten = b"\n".join(records)
                write.execute("UPDATE chunks SET data = ? WHERE first = ?", (rewritten, first))
                if self._writer.bytes is not None:
                    self._writer.bytes += len(rewritten) - len(data)

    def _sweepStep(self) -> None:
        """Remove the hashes of deleted entries, about L{INDEX_STEP} at a time."""
        write = self._writer.connection
        digests: list[bytes] = []
        indices: list[int] = []
        last = None
        cursor = write.execute("SELECT first, count, digests FROM sweep ORDER BY first")
        try:
            for first, count, blob in cursor:
                digests.append(blob)
                indices += range(first, first + count)
                last = first
                if len(indices) >= INDEX_STEP:
                    break
        finally:
            cursor.close()
        if last is None:
            self.unswept = False
            return
        write.execute("BEGIN IMMEDIATE")
        write.execute(SWEEP_HASHES, (b"".join(digests), json.dumps(indices)))
        write.execute("DELETE FROM sweep WHERE first <= ?", (last,))
        write.execute("COMMIT")
