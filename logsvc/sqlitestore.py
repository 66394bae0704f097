"""
The default journal store: one SQLite file in WAL mode.

One writer thread commits everything that queued up while the previous commit was on
its way to disk in a single transaction (group commit), so many writers share one
fsync and the reactor never waits on the disk.  Reads run on a second connection in a
reader thread; WAL lets them proceed while the writer commits.
"""

import fcntl
import os
import sqlite3
import threading
import time
from queue import SimpleQueue

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from .errors import EntryError, StoreError
from .interfaces import IJournalStore
from .store import RECENT_WRITES, Followers, RecentWrites, entryHash

# PRAGMA synchronous per --sync mode: "always" fsyncs the WAL at every commit, so an
# acknowledged entry survives power loss; "os" acknowledges once the commit is in the
# operating system's cache (survives a crash of logsvc, not of the machine).
SYNC_MODES = {"always": "FULL", "os": "NORMAL"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS blobs (
    id INTEGER PRIMARY KEY, hash BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS hashes (hash BLOB PRIMARY KEY, blob INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, blob INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS writes (idx INTEGER PRIMARY KEY, writeId TEXT NOT NULL);
"""

READ_RANGE = """
SELECT e.idx, b.hash, b.data FROM entries e LEFT JOIN blobs b ON b.id = e.blob
WHERE e.idx BETWEEN ? AND ? ORDER BY e.idx
"""

MERGE_EVERY = 20_000
"""
New blobs are found by their hash in memory until this many have accumulated, then
merged into the C{hashes} index in one sorted batch: inserting each random hash into
a B-tree as it arrives would dirty a random page per entry in every commit.
"""

LOOKUP_CHUNK = 500
"""Hashes looked up in the index per query."""

# Identified writes are pruned from the table in steps of this many, keeping the
# newest RECENT_WRITES rows.
PRUNE_EVERY = RECENT_WRITES // 2


@implementer(IJournalStore)
class SQLiteStore:
    """
    Entries content-addressed in C{blobs} (one row per distinct SHA-256, in the order
    first written), C{hashes} indexing blobs by hash (merged in batches, see
    L{MERGE_EVERY}), C{entries} mapping each dense index to a blob, and C{writes}
    keeping the write ids of the newest identified writes so retries are recognised
    across restarts.
    """

    log = Logger()

    def __init__(self, reactor, path: str, sync: str = "always"):
        if sync not in SYNC_MODES:
            raise StoreError(f"unknown sync mode {sync!r}: use "
                             + " or ".join(SYNC_MODES))
        self._reactor = reactor
        self.path = path
        self._sync = sync
        self._recent = RecentWrites()
        self._followers = Followers()
        self._commitObservers: list = []
        self._wakeup = threading.Condition()
        self._queue: list = []      # (data, writeId, Deferred) awaiting the writer
        self._probes: list = []     # Deferreds of check() awaiting the writer
        self._accepting = False
        self._closing = False
        self._closed: list = []     # Deferreds of close() callers
        self._head = 0              # last committed index, as the writer thread knows it
        self._announcedHead = 0     # last index handed to followers, on the reactor
        self._unprunedWrites = 0
        self._write = self._read = None
        self._lockFile: int | None = None
        self._reads: SimpleQueue = SimpleQueue()

    def __repr__(self) -> str:
        return f"<SQLiteStore sqlite:{self.path} sync={self._sync}>"

    # Opening and closing

    def open(self):
        """Open synchronously (start-up runs before the reactor), reporting via Deferred."""
        try:
            self._open()
        except (sqlite3.Error, OSError, StoreError) as e:
            self._release()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            if isinstance(e, StoreError):
                return fail(e)
            return fail(StoreError(f"cannot open store sqlite:{self.path}: {reason}"))
        self._accepting = True
        threading.Thread(target=self._writeLoop, name="logsvc-store-writer",
                         daemon=True).start()
        threading.Thread(target=self._readLoop, name="logsvc-store-reader",
                         daemon=True).start()
        return succeed(None)

    def _open(self) -> None:
        self._write = sqlite3.connect(self.path, isolation_level=None,
                                      check_same_thread=False)
        self._lockFile = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(self._lockFile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"cannot open store sqlite:{self.path}: "
                             "in use by another process") from None
        mode = self._write.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"cannot open store sqlite:{self.path}: "
                             f"WAL mode unavailable (journal mode {mode})")
        for pragma in (f"synchronous={SYNC_MODES[self._sync]}", "busy_timeout=10000",
                       "cache_size=-32768", "wal_autocheckpoint=4000",
                       "journal_size_limit=67108864"):
            self._write.execute(f"PRAGMA {pragma}")
        self._write.executescript(SCHEMA)
        # Proves at start-up that the file is writable, not merely readable.
        self._write.execute("INSERT OR REPLACE INTO meta VALUES ('opened', ?)",
                            (time.time(),))
        self._head = self._announcedHead = self._lastIndex()
        self._loadUnindexed()
        recent = self._write.execute(
            "SELECT w.writeId, b.hash, w.idx FROM writes w JOIN entries e ON e.idx = w.idx"
            " JOIN blobs b ON b.id = e.blob ORDER BY w.idx DESC LIMIT ?",
            (RECENT_WRITES,)).fetchall()
        for writeId, digest, index in reversed(recent):
            self._recent.add(writeId, digest, index)
        self._read = sqlite3.connect(self.path, isolation_level=None,
                                     check_same_thread=False)
        for pragma in ("query_only=1", "busy_timeout=10000", "cache_size=-16384"):
            self._read.execute(f"PRAGMA {pragma}")

    def close(self):
        """Commit everything queued, stop both threads and release the file."""
        if not self._accepting and not self._closing:
            return succeed(None)
        closed = Deferred()
        with self._wakeup:
            self._closed.append(closed)
            self._accepting = False
            self._closing = True
            self._wakeup.notify()
        return closed

    def _release(self) -> None:
        for connection in (self._write, self._read):
            if connection is not None:
                connection.close()
        self._write = self._read = None
        if self._lockFile is not None:
            os.close(self._lockFile)
            self._lockFile = None

    # Writing

    def append(self, data: bytes, writeId: str | None = None):
        appended = Deferred()
        with self._wakeup:
            if not self._accepting:
                return fail(StoreError(f"store sqlite:{self.path} is closed"))
            self._queue.append((data, writeId, appended))
            if len(self._queue) == 1:
                self._wakeup.notify()
        return appended

    def check(self):
        """Fires once a write transaction has committed, proving the file is writable."""
        checked = Deferred()
        with self._wakeup:
            if not self._accepting:
                return fail(StoreError(f"store sqlite:{self.path} is closed"))
            self._probes.append(checked)
            self._wakeup.notify()
        return checked

    def _writeLoop(self) -> None:
        while True:
            with self._wakeup:
                while not (self._queue or self._probes or self._closing):
                    self._wakeup.wait()
                batch, self._queue = self._queue, []
                probes, self._probes = self._probes, []
            if batch or probes:
                self._commit(batch, probes)
            else:
                break
        self._reads.put(None)

    def _commit(self, batch: list, probes: list) -> None:
        """Runs in the writer thread; hands the outcome to the reactor thread."""
        started = time.perf_counter()
        try:
            indices, committed = self._store(batch, bool(probes))
        except Exception as e:
            self._rollback()
            error = StoreError(f"cannot write to store sqlite:{self.path}: {e}")
            self._reactor.callFromThread(self._failed, batch, probes, error)
        else:
            self._reactor.callFromThread(self._committed, batch, indices, committed,
                                         probes, time.perf_counter() - started)

    def _store(self, batch: list, probe: bool) -> tuple:
        """
        One transaction for the whole batch.  Indices are assigned here, after the
        head is read inside the transaction, so they stay dense even when an earlier
        commit reported an error but reached the disk anyway.  What this thread
        remembers (blob ids, unmerged hashes, write ids) changes only after COMMIT.
        """
        write = self._write
        write.execute("BEGIN IMMEDIATE")
        head = self._lastIndex()
        committed = self._unannounced() if head > self._head else []
        nextIndex = head + 1
        digests = [entryHash(data) for data, _, _ in batch]
        known = self._lookup(digests)
        recent, pending, added = self._recent, {}, {}
        lastBlob = self._lastBlob
        indices, blobs, entries, writes = [], [], [], []
        for (data, writeId, _), digest in zip(batch, digests):
            if writeId is not None:
                index = pending.get((writeId, digest)) or recent.get(writeId, digest)
                if index is not None:
                    indices.append(index)
                    continue
                pending[writeId, digest] = nextIndex
                writes.append((nextIndex, writeId))
            blob = known.get(digest) or added.get(digest)
            if blob is None:
                lastBlob += 1
                blob = added[digest] = lastBlob
                blobs.append((blob, digest, data))
            entries.append((nextIndex, blob))
            committed.append((nextIndex, data))
            indices.append(nextIndex)
            nextIndex += 1
        merge = len(self._unindexed) + len(added) >= MERGE_EVERY
        if entries:
            write.executemany("INSERT INTO blobs (id, hash, data) VALUES (?, ?, ?)", blobs)
            write.executemany("INSERT INTO entries (idx, blob) VALUES (?, ?)", entries)
            if writes:
                write.executemany("INSERT INTO writes (idx, writeId) VALUES (?, ?)", writes)
                self._pruneWrites(len(writes))
        elif probe:
            write.execute("INSERT OR REPLACE INTO meta VALUES ('checked', ?)", (time.time(),))
        if merge:
            write.executemany("INSERT OR IGNORE INTO hashes (hash, blob) VALUES (?, ?)",
                              sorted([*self._unindexed.items(), *added.items()]))
            write.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)", (lastBlob,))
        write.execute("COMMIT")
        self._head = nextIndex - 1
        self._lastBlob = lastBlob
        if merge:
            self._unindexed = {}
        else:
            self._unindexed.update(added)
        for (writeId, digest), index in pending.items():
            recent.add(writeId, digest, index)
        return indices, committed

    def _lookup(self, digests: list) -> dict:
        """Blob ids of the hashes already stored: unmerged ones first, then the index."""
        unindexed = self._unindexed
        found = {d: unindexed[d] for d in digests if d in unindexed}
        unknown = list({d for d in digests if d not in found})
        for start in range(0, len(unknown), LOOKUP_CHUNK):
            chunk = unknown[start:start + LOOKUP_CHUNK]
            found.update(self._write.execute(
                "SELECT hash, blob FROM hashes WHERE hash IN (%s)" % ",".join("?" * len(chunk)),
                chunk))
        return found

    def _loadUnindexed(self) -> None:
        """Blobs written since the last merge into C{hashes}, found by hash in memory."""
        indexed = self._write.execute(
            "SELECT value FROM meta WHERE key = 'indexed'").fetchone()
        self._unindexed = dict(self._write.execute(
            "SELECT hash, id FROM blobs WHERE id > ?", (indexed[0] if indexed else 0,)))
        self._lastBlob = self._write.execute("SELECT max(id) FROM blobs").fetchone()[0] or 0

    def _lastIndex(self) -> int:
        return self._write.execute("SELECT max(idx) FROM entries").fetchone()[0] or 0

    def _unannounced(self) -> list:
        """Entries committed without this thread knowing (a commit that reported a
        failure but reached the disk): remember their blobs and write ids, and
        announce them."""
        rows = self._write.execute(
            "SELECT e.idx, b.data, w.writeId, b.hash FROM entries e"
            " LEFT JOIN blobs b ON b.id = e.blob LEFT JOIN writes w ON w.idx = e.idx"
            " WHERE e.idx > ? ORDER BY e.idx", (self._head,)).fetchall()
        self._loadUnindexed()
        for index, _, writeId, digest in rows:
            if writeId is not None:
                self._recent.add(writeId, digest, index)
        self.log.warn("{store}: found {count} entries committed by a commit that "
                      "reported an error", store=self, count=len(rows))
        return [(index, data if data is not None else EntryError("entry missing"))
                for index, data, _, _ in rows]

    def _pruneWrites(self, added: int) -> None:
        self._unprunedWrites += added
        if self._unprunedWrites >= PRUNE_EVERY:
            self._write.execute(
                "DELETE FROM writes WHERE idx < (SELECT idx FROM writes"
                " ORDER BY idx DESC LIMIT 1 OFFSET ?)", (RECENT_WRITES - 1,))
            self._unprunedWrites = 0

    def _rollback(self) -> None:
        try:
            if self._write.in_transaction:
                self._write.execute("ROLLBACK")
        except sqlite3.Error as e:
            self.log.warn("{store}: rollback failed: {error}", store=self, error=e)

    def _committed(self, batch: list, indices: list, committed: list, probes: list,
                   seconds: float) -> None:
        """
        On the reactor: L{head} and L{read} include the batch before anyone hears of
        it; acknowledgements go before followers, so a writer that also follows sees
        its ack before its entry.
        """
        if committed:
            self._announcedHead = committed[-1][0]
        for (_, _, appended), index in zip(batch, indices):
            appended.callback(index)
        if committed:
            self._followers.deliver(committed)
        for checked in probes:
            checked.callback(None)
        if batch:
            for observer in self._commitObservers:
                observer(seconds, len(committed))

    def _failed(self, batch: list, probes: list, error: StoreError) -> None:
        self.log.error("{error}", error=error)
        for _, _, appended in batch:
            appended.errback(error)
        for checked in probes:
            checked.errback(error)

    # Reading

    def head(self):
        """
        The last committed index this process has announced.  A reader that calls
        L{follow}, then reads up to L{head}, misses no entry; a follower added while
        a batch is being acknowledged may also be given entries up to L{head}, so
        followers skip indices they already have.
        """
        return succeed(self._announcedHead)

    def read(self, start: int, limit: int):
        """Entries up to L{head} only: later ones reach readers through L{follow}."""
        if not self._accepting:
            return fail(StoreError(f"store sqlite:{self.path} is closed"))
        start = max(start, 1)
        last = min(self._announcedHead, start + limit - 1)
        if start > last:
            return succeed([])
        result = Deferred()
        self._reads.put((start, last, result))
        return result

    def _readLoop(self) -> None:
        while (job := self._reads.get()) is not None:
            start, last, result = job
            try:
                rows = self._readRange(start, last)
            except sqlite3.Error as e:
                error = StoreError(f"cannot read store sqlite:{self.path}: {e}")
                self._reactor.callFromThread(result.errback, error)
            else:
                self._reactor.callFromThread(result.callback, rows)
        self._release()
        self._reactor.callFromThread(self._finishClosing)

    def _readRange(self, start: int, last: int) -> list:
        rows = [(index, data if isinstance(data, bytes) and entryHash(data) == digest
                 else _unreadable(data))
                for index, digest, data in self._read.execute(READ_RANGE, (start, last))]
        if len(rows) != last - start + 1:
            found = dict(rows)
            rows = [(i, found.get(i) or EntryError("entry missing"))
                    for i in range(start, last + 1)]
        return rows

    def _finishClosing(self) -> None:
        closed, self._closed = self._closed, []
        self._closing = False
        for waiter in closed:
            waiter.callback(None)

    # Observers

    def follow(self, callback):
        return self._followers.add(callback)

    def addCommitObserver(self, observer) -> None:
        self._commitObservers.append(observer)


def _unreadable(data) -> EntryError:
    if data is None:
        return EntryError("entry missing")
    return EntryError("entry corrupt: content does not match its hash")
