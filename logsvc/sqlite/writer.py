"""
The SQLite journal's one writer: a thread that commits everything that queued up while
the previous commit was on its way to disk in a single transaction (group commit), so
many writers share one fsync and the reactor never waits on the disk.  Between commits
it takes a retention step or a deduplicating step.  And the WAL's preallocation.
"""

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from ..errors import StoreError
from ..store import DIGEST, RECENT_WRITES, TIME_STEP, RecentWrites, assignIndices, chunkSpans
from .indexer import Indexer
from .schema import meta
from .trimmer import Trim, Trimmer

INDEX_WHEN_IDLE = 0.05
"""Seconds without a commit after which the indexer runs: writers come first."""

INDEX_MAX_LAG = 10_000_000
"""
Entries the indexer may fall behind the head before it takes turns with commits.
Deduplication only saves space, so a burst may outrun it: at worst this many entries
are stored twice until it catches up (about 1.3 GB of 130-byte entries).
"""

CHECKPOINT_PAGES = 4000
"""Pages the WAL holds before a commit copies them into the database (a checkpoint)."""

WAL_HEADER, WAL_FRAME_HEADER = 32, 24

# One statement inserts a commit's rows, so the writer thread releases the GIL once
# for all of them rather than once per row (each time it takes the GIL back, it may wait
# for the reactor).  ?1 holds the batch's digests, ?2 its entries joined by newlines and
# ?3 a JSON list of rows: [first, count, first digest, data offset, data length, ids].
INSERT_CHUNKS = """
INSERT INTO chunks (first, count, digests, data, ids)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
       substr(?1, json_extract(value, '$[2]') * 32 + 1, json_extract(value, '$[1]') * 32),
       substr(?2, json_extract(value, '$[3]') + 1, json_extract(value, '$[4]')),
       json_extract(value, '$[5]')
FROM json_each(?3)
"""


class Writer:
    """
    The writer thread and what it knows of the file: C{head} (the last committed
    index), C{first} (the lowest kept), C{bytes} (stored entry data, once a trim
    needed it) and the retry window.  Outcomes go to the reactor thread through the
    callables it is given: C{committed(batch, indices, first, entries, probes,
    seconds)}, C{failed(batch, probes, error)}, C{trimmed(first)} and C{stopped()}.
    """

    log = Logger()
    connection: sqlite3.Connection      # the file's only writing connection, once loaded

    def __init__(self, reactor: IReactorThreads, name: str, committed: Callable,
                 failed: Callable, trimmed: Callable, stopped: Callable):
        self._reactor = reactor
        self._name = name               # the store in messages: sqlite:PATH
        self._committed, self._failed = committed, failed
        self._trimmed, self._stopped = trimmed, stopped
        self.head = 0
        self.first = 1
        self.bytes: int | None = None
        self.indexer = Indexer(self)
        self.trimmer = Trimmer(self)
        self.accepting = False
        self._recent = RecentWrites()
        self._wakeup = threading.Condition()
        self._queue: list = []      # (entries, digests, writeIds, Deferred) to commit
        self._probes: list = []     # Deferreds of check() awaiting a commit
        self._trims: list = []      # Trim jobs, oldest first
        self._closing = False
        self._headUnsure = False    # a commit failed: it may have reached the disk anyway
        self._lastTime = 0.0        # when a commit time was last recorded
        self._untimed: tuple[int, float] | None = None  # a commit's (first index, time)

    def load(self, connection: sqlite3.Connection) -> None:
        """What the file open on C{connection} says."""
        self.connection = connection
        self.first = meta(connection, "first", 1)
        self.head = self._lastIndex()
        self.indexer.load()
        self.trimmer.load()
        self._loadRecentWrites()

    def _loadRecentWrites(self) -> None:
        """
        The newest identified writes, newest chunk first, until there are enough:
        those of deleted chunks too, so a retry still gets its original index.
        """
        found = []
        for first, digests, ids in self.connection.execute(
                "SELECT first, digests, ids FROM chunks WHERE ids IS NOT NULL UNION ALL"
                " SELECT first, digests, ids FROM retries ORDER BY first DESC"):
            for index, writeId in reversed(json.loads(ids)):
                at = (index - first) * DIGEST
                found.append((writeId, digests[at:at + DIGEST], index))
            if len(found) >= RECENT_WRITES:
                break
        for writeId, digest, index in reversed(found[:RECENT_WRITES]):
            self._recent.add(writeId, digest, index)

    def start(self) -> None:
        self.accepting = True
        threading.Thread(target=self._writeLoop, name="logsvc-store-writer",
                         daemon=True).start()

    def stop(self) -> None:
        """Commit everything queued, then end the thread and call C{stopped}."""
        with self._wakeup:
            self.accepting = False
            self._closing = True
            self._wakeup.notify()

    # The reactor's requests

    def append(self, entries: list, digests: list, writeIds: list | None) -> Deferred:
        appended: Deferred[list[int]] = Deferred()
        with self._wakeup:
            if not self.accepting:
                return fail(self.closedError())
            self._queue.append((entries, digests, writeIds, appended))
            if len(self._queue) == 1:
                self._wakeup.notify()
        return appended

    def probe(self) -> Deferred:
        """Fires once a write transaction has committed."""
        checked: Deferred[None] = Deferred()
        with self._wakeup:
            if not self.accepting:
                return fail(self.closedError())
            self._probes.append(checked)
            self._wakeup.notify()
        return checked

    def trim(self, retention, now: float) -> Deferred:
        """Queued: a step of it follows each commit."""
        done: Deferred[tuple[int, int]] = Deferred()
        with self._wakeup:
            if not self.accepting:
                return fail(self.closedError())
            self._trims.append(Trim(retention, now, done))
            self._wakeup.notify()
        return done

    def closedError(self) -> StoreError:
        return StoreError(f"store {self._name} is closed")

    # The thread

    def _writeLoop(self) -> None:
        """
        Commit whatever is queued; a retention step after each commit while a trim
        is pending (so a trim never waits for the queue to empty, and a commit waits
        for at most one step); deduplicate once no commit came for
        L{INDEX_WHEN_IDLE}, and take turns with commits while more than
        L{INDEX_MAX_LAG} behind.
        """
        indexTurn = trimTurn = False
        while True:
            trim = False
            with self._wakeup:
                while not (self._queue or self._probes or self._closing or self._trims):
                    behind = self.indexer.lag()
                    idleWork = behind or self.indexer.unswept
                    if behind > INDEX_MAX_LAG or (
                            idleWork and not self._wakeup.wait(INDEX_WHEN_IDLE)
                            and not self._queue):
                        break
                    if not idleWork:
                        self._wakeup.wait()
                if self._closing:
                    batch, self._queue = self._queue, []
                    probes, self._probes = self._probes, []
                elif self._trims and (trimTurn or not (self._queue or self._probes)):
                    batch = probes = []     # the queue waits for one retention step
                    trim = True
                elif indexTurn and self.indexer.lag() > INDEX_MAX_LAG:
                    batch = probes = []     # the queue waits for one indexing step
                else:
                    batch, self._queue = self._queue, []
                    probes, self._probes = self._probes, []
            if batch or probes:
                self._commit(batch, probes)
                indexTurn = trimTurn = True
            elif self._closing:
                break
            elif trim:
                self._trim()
                trimTurn = False
            else:
                self._index()
                indexTurn = False
        for job in self._trims:     # what is deleted so far stays deleted
            self._reactor.callFromThread(job.done.callback,
                                         (job.before or self.first, self.first))
        self._trims = []
        self._reactor.callFromThread(self._stopped)

    def _commit(self, batch: list, probes: list) -> None:
        """Hands the outcome to the reactor thread."""
        started = time.perf_counter()
        try:
            indices, first, committed = self._store(batch, bool(probes))
        except Exception as e:
            self.rollback()
            self._headUnsure = True
            error = StoreError(f"cannot write to store {self._name}: {e}")
            self._reactor.callFromThread(self._failed, batch, probes, error)
        else:
            self.indexer.indexing = True
            self._reactor.callFromThread(self._committed, batch, indices, first, committed,
                                         probes, time.perf_counter() - started)
            untimed, self._untimed = self._untimed, None
            if untimed is not None:
                self._recordTime(*untimed)

    def _recordTime(self, index: int, now: float) -> None:
        """
        The sparse record of commit times, once the acks are on their way: a commit a
        second notes when it started which index.  Losing one (a crash, a disk error)
        only makes retention by age keep a little more.
        """
        try:
            self.connection.execute("INSERT OR REPLACE INTO times VALUES (?, ?)",
                                    (index, now))
        except sqlite3.Error as e:
            self.log.warn("{store}: commit time not recorded: {error}", store=self._name,
                          error=e)
        else:
            self._lastTime = now

    def _store(self, batch: list, probe: bool) -> tuple:
        """
        One statement, so one transaction, for the whole batch: SQLite commits it as it
        runs, and this thread takes the GIL back once, not once per BEGIN, INSERT and
        COMMIT.  Indices are assigned here; after a commit reported an error, the head
        is read from the file first (this thread is the file's only writer), so indices
        stay dense even if that commit reached the disk anyway.  What this thread
        remembers (head, write ids) changes only after the commit.
        """
        write = self.connection
        head = self._lastIndex() if self._headUnsure else self.head
        first = self.head + 1
        committed = self._unannounced() if head > self.head else []
        indices, accepted, digests, identified, pending = assignIndices(
            batch, head, self._recent)
        if accepted:
            data = b"\n".join(accepted)
            write.execute(INSERT_CHUNKS, (b"".join(digests), data,
                                          _chunkRows(head + 1, accepted, identified)))
            now = time.time()
            if now - self._lastTime >= TIME_STEP:
                self._untimed = (head + 1, now)
            if self.bytes is not None:
                self.bytes += len(data)
        elif probe:
            write.execute("INSERT OR REPLACE INTO meta VALUES ('checked', ?)", (time.time(),))
        self.head = head + len(accepted)
        self._headUnsure = False
        self._recent.update(pending)
        committed += accepted
        return indices, first, committed

    def _lastIndex(self) -> int:
        """The head as the file says: the last chunk's, or below the first kept index."""
        row = self.connection.execute(
            "SELECT first + count - 1 FROM chunks ORDER BY first DESC LIMIT 1").fetchone()
        return max(row[0] if row else 0, self.first - 1)

    def _unannounced(self) -> list:
        """Entries committed without this thread knowing (a commit that reported a
        failure but reached the disk), from the head it knew on: remember their write
        ids, and announce them."""
        committed = []
        for first, count, digests, data, ids in self.connection.execute(
                "SELECT first, count, digests, data, ids FROM chunks WHERE first > ?"
                " ORDER BY first", (self.head,)).fetchall():
            committed += data.split(b"\n")
            for index, writeId in json.loads(ids or "[]"):
                at = (index - first) * DIGEST
                self._recent.add(writeId, digests[at:at + DIGEST], index)
        self.log.warn("{store}: found {count} entries committed by a commit that "
                      "reported an error", store=self._name, count=len(committed))
        return committed

    def rollback(self) -> None:
        try:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
        except sqlite3.Error as e:
            self.log.warn("{store}: rollback failed: {error}", store=self._name, error=e)

    def _trim(self) -> None:
        """One step of the oldest pending trim."""
        job, first = self._trims[0], self.first
        outcome: tuple[Callable, object]
        try:
            finished = self.trimmer.step(job)
        except sqlite3.Error as e:
            self.rollback()
            outcome = job.done.errback, StoreError(
                f"cannot apply retention to store {self._name}: {e}")
        else:
            if self.first != first:
                self._reactor.callFromThread(self._trimmed, self.first)
            if not finished:
                return
            outcome = job.done.callback, (job.before, self.first)
        with self._wakeup:
            self._trims.pop(0)
        self._reactor.callFromThread(*outcome)

    def _index(self) -> None:
        """One step of the indexer or of the sweeper; on an error, none until the next
        commit."""
        try:
            self.indexer.step()
        except sqlite3.Error as e:
            self.rollback()
            self.indexer.indexing = False
            self.log.warn("{store}: deduplication paused until the next commit: {error}",
                          store=self._name, error=e)


def _chunkRows(first: int, entries: list, identified: list) -> str:
    """L{INSERT_CHUNKS}'s rows for consecutive entries from index C{first}."""
    return json.dumps([[first + start, end - start, start, offset, length, ids or None]
                       for start, end, offset, length, ids
                       in chunkSpans(first, entries, identified)])


def preallocateWAL(connection: sqlite3.Connection, path: str) -> None:
    """
    Fill the WAL of the database at C{path} (in WAL mode, written to at least once)
    with zeros up to the size it reaches between checkpoints, as PostgreSQL does with
    its WAL segments.  A commit then overwrites blocks the file already has, and its
    fsync need not also commit the file's new size to the filesystem journal.  SQLite
    ignores the zeros: a frame counts only with the WAL header's salt and a valid
    checksum, so recovery stops at the first zeroed one.

    Only a speed-up: if the disk is too full for it, the zeros are taken back and the
    C{OSError} raised.  No larger than a checkpoint's worth of pages (fewer than the
    4,062 frames the first block of the WAL index holds), so that when the disk fills,
    the commit that fails is one that grows the WAL, and it says "database or disk is
    full".
    """
    pageSize = connection.execute("PRAGMA page_size").fetchone()[0]
    target = WAL_HEADER + CHECKPOINT_PAGES * (WAL_FRAME_HEADER + pageSize)
    fd = os.open(path + "-wal", os.O_WRONLY)
    try:
        size = original = os.fstat(fd).st_size
        zeros = bytes(1 << 20)
        try:
            while size < target:
                size += os.pwrite(fd, zeros[:target - size], size)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, original)
            raise
    finally:
        os.close(fd)
