"""
Retention in the SQLite journal: deleting the oldest chunks a step at a time, in the
writer thread between commits, so that entries stored once for several indices stay
readable and retries of deleted writes keep their indices.
"""

import json

from twisted.internet.defer import Deferred

from ..store import DIGEST, RECENT_WRITES, TRIM_STEP
from .schema import meta


class Trim:
    """One trim call, as the writer thread works through it."""

    def __init__(self, retention, now: float, done: Deferred):
        self.retention = retention
        self.now = now
        self.done = done
        self.before: int | None = None
        self.target: int | None = None


class Trimmer:
    """
    Deletes for the L{Writer}, keeping its C{first} and C{bytes}, and its indexer's
    C{indexed}, up to date.
    """

    def __init__(self, writer):
        self._writer = writer
        self._copiesBefore = 0      # copies up to here were made before hashes.last

    def load(self) -> None:
        self._copiesBefore = meta(self._writer.connection, "copies_before", 0)

    def step(self, job: Trim) -> bool:
        """One step of C{job}; whether it is finished."""
        writer = self._writer
        if job.target is None:
            job.before = writer.first
            job.target = self._target(job.retention, job.now)
        if writer.first < job.target:
            self._deleteStep(job.target)
            return False
        self._pruneRetries()
        return True

    def _target(self, retention, now: float) -> int:
        """The first index of the chunk holding the lowest index any limit needs."""
        writer = self._writer
        write, head, first = writer.connection, writer.head, writer.first
        if not retention or head < first:
            return first
        target = head + 1
        if retention.entries is not None:
            target = min(target, head - retention.entries + 1)
        if retention.seconds is not None:
            row = write.execute("SELECT max(idx) FROM times WHERE time <= ?",
                                (now - retention.seconds,)).fetchone()
            target = min(target, row[0] or first)
        if retention.bytes is not None:
            target = min(target, self._bytesTarget(retention.bytes))
        if target <= first:
            return first
        if target <= head:
            target = write.execute("SELECT max(first) FROM chunks WHERE first <= ?",
                                   (target,)).fetchone()[0] or first
        return max(target, first)

    def _bytesTarget(self, keep: int) -> int:
        """The first chunk that must stay so that at least C{keep} bytes are kept."""
        writer = self._writer
        write = writer.connection
        if writer.bytes is None:
            writer.bytes = int(sum(write.execute(
                f"SELECT total(length(data)) FROM {table}").fetchone()[0]
                for table in ("chunks", "blobs")))
        excess, removed = writer.bytes - keep, 0
        cursor = write.execute("SELECT first, length(data) FROM chunks WHERE first >= ?"
                               " ORDER BY first", (writer.first,))
        try:
            for first, size in cursor:
                if removed + size > excess:
                    return first
                removed += size
        finally:
            cursor.close()
        return writer.head + 1

    def _deleteStep(self, target: int) -> None:
        """
        Delete the oldest chunks below C{target}, about L{TRIM_STEP} entries, in one
        transaction, touching only rows in index order: a first copy that a kept entry
        still refers to moves to C{blobs}, and a blob goes with its last copy; the
        hashes of deleted entries are queued in C{sweep} for idle time, since removing
        them from C{hashes} costs a random page each; write ids go to C{retries}, so the
        retry window outlives them.
        """
        writer, indexer = self._writer, self._writer.indexer
        write = writer.connection
        rows, count = [], 0
        cursor = write.execute("SELECT first, count, digests, data FROM chunks"
                               " WHERE first >= ? AND first < ? ORDER BY first",
                               (writer.first, target))
        try:
            for row in cursor:
                rows.append(row)
                count += row[1]
                if count >= TRIM_STEP:
                    break
        finally:
            cursor.close()
        low = rows[0][0] if rows else writer.first
        end = rows[-1][0] + rows[-1][1] if rows else target
        write.execute("BEGIN IMMEDIATE")
        kept = [(index, digest, last) for index, digest, last in write.execute(
            "SELECT r.idx, r.hash, h.last FROM referenced r"
            " JOIN hashes h ON h.hash = r.hash AND h.idx = r.idx"
            " WHERE r.idx >= ? AND r.idx < ?", (low, end)) if (last or 0) >= end]
        if self._copiesBefore >= end:
            kept += self._legacyOriginals(rows, low, end)
        moved = 0
        if kept:
            records = [record for row in rows for record in row[3].split(b"\n")]
            latest: dict = {}   # an original both paths found keeps the higher last copy
            for index, digest, last in kept:
                latest[digest] = max(latest.get(digest, (0, 0)), (last, index))
            for digest, (last, index) in latest.items():
                write.execute("INSERT OR REPLACE INTO blobs (hash, last, data)"
                              " VALUES (?, ?, ?)", (digest, last, records[index - low]))
                write.execute("UPDATE hashes SET idx = 0 WHERE hash = ?", (digest,))
                moved += len(records[index - low])
        write.execute("DELETE FROM referenced WHERE idx >= ? AND idx < ?", (low, end))
        moved -= write.execute("SELECT total(length(data)) FROM blobs WHERE last < ?",
                               (end,)).fetchone()[0]
        write.execute("DELETE FROM hashes WHERE idx = 0 AND hash IN"
                      " (SELECT hash FROM blobs WHERE last < ?)", (end,))
        write.execute("DELETE FROM blobs WHERE last < ?", (end,))
        swept = write.execute("INSERT INTO sweep SELECT first, count, digests FROM chunks"
                              " WHERE first >= ? AND first < ? AND first <= ?",
                              (low, end, indexer.indexed)).rowcount
        write.execute("INSERT OR REPLACE INTO retries SELECT first, json_array_length(ids),"
                      " digests, ids FROM chunks WHERE first >= ? AND first < ?"
                      " AND ids IS NOT NULL", (low, end))
        write.execute("DELETE FROM chunks WHERE first >= ? AND first < ?", (low, end))
        write.execute("DELETE FROM times WHERE idx < ?", (end,))
        write.execute("INSERT OR REPLACE INTO meta VALUES ('first', ?)", (end,))
        indexed = max(indexer.indexed, end - 1)
        write.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)", (indexed,))
        write.execute("COMMIT")
        writer.first, indexer.indexed = end, indexed
        indexer.unswept = indexer.unswept or swept > 0
        if writer.bytes is not None:
            writer.bytes += int(moved) - sum(len(row[3]) for row in rows)

    def _legacyOriginals(self, rows: list, low: int, end: int) -> list:
        """
        First copies among entries deduplicated before schema version 2, which has no
        C{referenced} rows for them: looked up by hash, and taken to have copies up to
        C{copies_before}.
        """
        digests = b"".join(row[2] for row in rows)
        found = self._writer.connection.execute(
            "SELECT j.key FROM json_each(?2) j JOIN hashes h"
            " ON h.hash = substr(?1, j.key * 32 + 1, 32) AND h.idx = j.value",
            (digests, json.dumps(list(range(low, end))))).fetchall()
        return [(low + at, digests[at * DIGEST:(at + 1) * DIGEST], self._copiesBefore)
                for (at,) in found]

    def _pruneRetries(self) -> None:
        """Keep the deleted write ids the retry window still covers."""
        write, total, oldest = self._writer.connection, 0, None
        cursor = write.execute("SELECT first, count FROM retries ORDER BY first DESC")
        try:
            for first, count in cursor:
                total += count
                if total >= RECENT_WRITES:
                    oldest = first
                    break
        finally:
            cursor.close()
        if oldest is not None:
            write.execute("DELETE FROM retries WHERE first < ?", (oldest,))
