"""
The default journal store: one SQLite file in WAL mode, written by the L{Writer}'s
thread and read through a thread pool on a second connection, which WAL lets proceed
while the writer commits.
"""

import fcntl
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from threading import Thread
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..errors import EntryError, StoreError, Trimmed
from ..interfaces import IJournalStore
from ..store import CORRUPT, DIGEST, Followers, entryHash, entryHashes
from .schema import CHUNKS_FROM, createOrUpgrade
from .writer import CHECKPOINT_PAGES, Writer, preallocateWAL

# PRAGMA synchronous per --sync mode: "always" fsyncs the WAL at every commit, so an
# acknowledged entry survives power loss; "os" acknowledges once the commit is in the
# operating system's cache (survives a crash of logsvc, not of the machine).
SYNC_MODES = {"always": "FULL", "os": "NORMAL"}


class _ReaderThread(Thread):
    """A reader thread never holds up the process's exit."""

    def __init__(self, *args: Any, **options: Any):
        super().__init__(*args, **options, daemon=True)


@implementer(IJournalStore)
class SQLiteStore:
    """
    Entries live in C{chunks}: one row per run of consecutive indices written by one
    commit, holding their canonical JSON separated by newlines (which canonical JSON
    never contains), their SHA-256 digests, and the ids of identified writes (so
    retries are recognised across restarts).  One row per commit rather than per
    entry is what lets a commit of thousands of entries cost about as much as one.
    Identical entries are stored once, by the L{Indexer} between commits.
    """

    log = Logger()
    _read: sqlite3.Connection           # the reader thread's, once open
    _closeFile: Callable[[], None]      # closes both connections, then the lock

    def __init__(self, reactor: IReactorThreads, path: str, sync: str = "always"):
        if sync not in SYNC_MODES:
            raise StoreError(f"unknown sync mode {sync!r}: use "
                             + " or ".join(SYNC_MODES))
        self._reactor = reactor
        self.path = path
        self._sync = sync
        self._followers = Followers()
        self._commitObservers: list = []
        self._writer = Writer(reactor, f"sqlite:{path}", self._committed, self._failed,
                              self._trimmed, self._writerStopped)
        self._readers = ThreadPool(1, 1, "logsvc-store-reader")
        self._readers.threadFactory = _ReaderThread
        self._closed: list = []     # Deferreds of close() callers
        self._announcedHead = 0     # last index handed to followers, on the reactor
        self._announcedFirst = 1    # lowest index kept, on the reactor
        self._writeError: StoreError | None = None  # the last commit of entries failed
        self.journalId: str | None = None

    def __repr__(self) -> str:
        return f"<SQLiteStore sqlite:{self.path} sync={self._sync}>"

    # Opening and closing

    def open(self):
        """Open synchronously (start-up runs before the reactor), reporting via Deferred."""
        try:
            self._open()
        except (sqlite3.Error, OSError, StoreError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            if isinstance(e, StoreError):
                return fail(e)
            return fail(StoreError(f"cannot open store sqlite:{self.path}: {reason}"))
        self._writer.start()
        self._readers.start()
        return succeed(None)

    def _open(self) -> None:
        """Nothing stays open if it fails."""
        with ExitStack() as opened:
            write = sqlite3.connect(self.path, isolation_level=None,
                                    check_same_thread=False)
            try:
                lock = os.open(self.path, os.O_RDONLY)
            except OSError:
                write.close()
                raise
            opened.callback(os.close, lock)
            opened.callback(write.close)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(f"cannot open store sqlite:{self.path}: "
                                 "in use by another process") from None
            self._prepare(write)
            self._read = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False)
            opened.callback(self._read.close)
            for pragma in ("query_only=1", "busy_timeout=10000", "cache_size=-16384"):
                self._read.execute(f"PRAGMA {pragma}")
            self._closeFile = opened.pop_all().close

    def _prepare(self, write: sqlite3.Connection) -> None:
        """The writer's connection: WAL mode, the schema, and what the file holds."""
        mode = write.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"cannot open store sqlite:{self.path}: "
                             f"WAL mode unavailable (journal mode {mode})")
        for pragma in (f"synchronous={SYNC_MODES[self._sync]}", "busy_timeout=10000",
                       "cache_size=-32768", f"wal_autocheckpoint={CHECKPOINT_PAGES}",
                       "journal_size_limit=67108864"):
            write.execute(f"PRAGMA {pragma}")
        createOrUpgrade(write, f"sqlite:{self.path}")
        write.execute("INSERT OR IGNORE INTO meta VALUES ('journal_id', ?)",
                      (str(uuid.uuid4()),))
        self.journalId = write.execute(
            "SELECT value FROM meta WHERE key = 'journal_id'").fetchone()[0]
        # Proves at start-up that the file is writable, not merely readable.
        write.execute("INSERT OR REPLACE INTO meta VALUES ('opened', ?)", (time.time(),))
        try:
            preallocateWAL(write, self.path)
        except OSError as e:
            self.log.warn("{store}: WAL not preallocated: {error}", store=self,
                          error=e.strerror or e)
        self._writer.load(write)
        self._announcedFirst, self._announcedHead = self._writer.first, self._writer.head

    def close(self):
        """Commit everything queued, stop both threads and release the file."""
        if not self._writer.accepting and not self._closed:
            return succeed(None)
        closed = Deferred()
        self._closed.append(closed)
        self._writer.stop()
        return closed

    def _writerStopped(self) -> None:
        """On the reactor: the file is released after the reads queued before."""
        released = deferToThreadPool(self._reactor, self._readers, self._closeFile)
        released.addBoth(self._finishClosing)

    def _finishClosing(self, result):
        self._readers.stop()
        closed, self._closed = self._closed, []
        for waiter in closed:
            waiter.callback(None)
        return result

    # Writing

    def append(self, entries: list, writeIds: list | None = None):
        """Hashes on the caller's thread, so that the writer thread needs the GIL little."""
        return self._writer.append(entries, entryHashes(entries), writeIds)

    def check(self):
        """Fires once a write transaction has committed, proving the file is writable."""
        return self._writer.probe()

    def _committed(self, batch: list, indices: list, first: int, committed: list,
                   probes: list, seconds: float) -> None:
        """
        On the reactor: L{head} and L{read} include the batch before anyone hears of
        it; acknowledgements go before followers, so a writer that also follows sees
        its ack before its entry.  C{committed} holds the entries from C{first} on.
        """
        if committed:
            self._announcedHead = first + len(committed) - 1
            self._writeError = None
        for (*_, appended), given in zip(batch, indices):
            appended.callback(list(given))
        if committed:
            self._followers.deliver(first, committed)
        for checked in probes:
            # A probe's transaction needs no new page, so it commits on a full disk.
            if self._writeError is not None:
                checked.errback(self._writeError)
            else:
                checked.callback(None)
        if batch:
            for observer in self._commitObservers:
                observer(seconds, len(committed))

    def _failed(self, batch: list, probes: list, error: StoreError) -> None:
        self.log.error("{error}", error=error)
        if batch:
            self._writeError = error
        for *_, appended in batch:
            appended.errback(error)
        for checked in probes:
            checked.errback(error)

    # Retention

    def first(self):
        """The lowest index kept, as this process has announced it."""
        return succeed(self._announcedFirst)

    def trim(self, retention, now: float):
        """Queued for the writer thread, which takes a step of it after each commit."""
        return self._writer.trim(retention, now)

    def _trimmed(self, first: int) -> None:
        """On the reactor: reads below C{first} are refused from now on."""
        self._announcedFirst = first

    def deduplicationLag(self):
        """Entries committed but not yet deduplicated, as the writer thread knows them."""
        return succeed(self._writer.head - self._writer.indexer.indexed)

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
        if not self._writer.accepting:
            return fail(self._writer.closedError())
        start = max(start, 1)
        if start < self._announcedFirst:
            return fail(Trimmed(self._announcedFirst, self._announcedHead))
        last = min(self._announcedHead, start + limit - 1)
        if start > last:
            return succeed([])
        return deferToThreadPool(self._reactor, self._readers, self._readKept, start, last)

    def _readKept(self, start: int, last: int) -> list:
        """
        In the reader thread, one read transaction, so that retention deletes either
        all or none of what it sees: below C{first}, L{Trimmed}.
        """
        read = self._read
        try:
            read.execute("BEGIN")
            try:
                row = read.execute("SELECT value FROM meta WHERE key = 'first'").fetchone()
                first = row[0] if row else 1
                if start < first:
                    raise Trimmed(first, max(first - 1, self._announcedHead))
                return self._readRange(start, last, first)
            finally:
                read.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"cannot read store sqlite:{self.path}: {e}") from None

    def _readRange(self, start: int, last: int, kept: int) -> list:
        """
        Each entry checked against its hash; references to a first copy resolved,
        from C{blobs} when that copy was deleted (below C{kept}, the first index kept).
        """
        rows: list = []     # (index, data), None where a copy is resolved after
        copies = []
        for first, count, digests, data in self._read.execute(CHUNKS_FROM, (start, last)):
            low, high = max(first, start), min(first + count - 1, last)
            records = data.split(b"\n")
            if len(records) != count or len(digests) != count * DIGEST:
                rows += [(index, EntryError("entry corrupt: its chunk is damaged"))
                         for index in range(low, high + 1)]
                continue
            span = records[low - first:high + 1 - first]
            for index, record, hashed in zip(range(low, high + 1), span, entryHashes(span)):
                at = (index - first) * DIGEST
                digest = digests[at:at + DIGEST]
                if record[:1] == b"=":
                    copies.append((len(rows), index, int(record[1:]), digest))
                    rows.append(None)
                else:
                    rows.append((index, record if hashed == digest else CORRUPT))
        for at, index, original, digest in copies:
            if original < kept:
                found = self._read.execute("SELECT data FROM blobs WHERE hash = ?",
                                           (digest,)).fetchone()
                data = found[0] if found else None
            else:
                found = self._readRange(original, original, kept) if original < index else []
                data = found[0][1] if found else None
            rows[at] = (index, data if data.__class__ is bytes
                        and entryHash(data) == digest else CORRUPT)
        if len(rows) != last - start + 1:
            found = dict(rows)
            rows = [(i, found.get(i) or EntryError("entry missing"))
                    for i in range(start, last + 1)]
        return rows

    # Observers

    def follow(self, callback):
        return self._followers.add(callback)

    def addCommitObserver(self, observer) -> None:
        self._commitObservers.append(observer)
