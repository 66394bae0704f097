"""
The default journal store: one SQLite file in WAL mode.

One writer thread commits everything that queued up while the previous commit was on
its way to disk in a single transaction (group commit), so many writers share one
fsync and the reactor never waits on the disk.  Reads run on a second connection in a
reader thread; WAL lets them proceed while the writer commits.
"""

import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from hashlib import sha256
from itertools import accumulate, repeat
from operator import add
from queue import SimpleQueue

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from .errors import EntryError, StoreError, Trimmed
from .interfaces import IJournalStore
from .store import (
    CHUNK_BYTES, CHUNK_ENTRIES, CORRUPT, DIGEST, RECENT_WRITES, TIME_STEP, TRIM_STEP, Followers,
    RecentWrites,
)

# PRAGMA synchronous per --sync mode: "always" fsyncs the WAL at every commit, so an
# acknowledged entry survives power loss; "os" acknowledges once the commit is in the
# operating system's cache (survives a crash of logsvc, not of the machine).
SYNC_MODES = {"always": "FULL", "os": "NORMAL"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS chunks (
    first INTEGER PRIMARY KEY, count INTEGER NOT NULL,
    digests BLOB NOT NULL, data BLOB NOT NULL, ids TEXT);
CREATE INDEX IF NOT EXISTS identified ON chunks (first) WHERE ids IS NOT NULL;
CREATE TABLE IF NOT EXISTS hashes (
    hash BLOB PRIMARY KEY, idx INTEGER NOT NULL, last INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (hash BLOB PRIMARY KEY, last INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS blobs_last ON blobs (last);
CREATE TABLE IF NOT EXISTS times (idx INTEGER PRIMARY KEY, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS times_time ON times (time);
CREATE TABLE IF NOT EXISTS retries (
    first INTEGER PRIMARY KEY, count INTEGER NOT NULL, digests BLOB NOT NULL, ids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS referenced (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sweep (
    first INTEGER PRIMARY KEY, count INTEGER NOT NULL, digests BLOB NOT NULL);
"""

SCHEMA_VERSION = 2
"""
1: chunks and hashes.  2 (retention): C{hashes.last}, the highest index of a copy;
C{referenced}, the first copies that have later copies; C{blobs}, entries whose first
copy was deleted while later copies are kept; C{sweep}, the hashes of deleted entries
still to be removed from C{hashes}; C{times}, the sparse record of commit times;
C{retries}, the write ids of deleted chunks; and meta C{first}.  A version-1 file is
upgraded at open without rewriting it: its copies' C{last} is taken as the index
deduplicated at the upgrade (meta C{copies_before}).
"""

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

CHUNKS_FROM = """
SELECT first, count, digests, data FROM chunks
WHERE first >= coalesce((SELECT max(first) FROM chunks WHERE first <= ?1), 0) AND first <= ?2
ORDER BY first
"""

INDEX_STEP = 5_000
"""Entries the deduplicating indexer handles per transaction."""

INDEX_WHEN_IDLE = 0.05
"""Seconds without a commit after which the indexer runs: writers come first."""

INDEX_MAX_LAG = 10_000_000
"""
Entries the indexer may fall behind the head before it takes turns with commits.
Deduplication only saves space, so a burst may outrun it: at worst this many entries
are stored twice until it catches up (about 1.3 GB of 130-byte entries).
"""

# An indexing step's hashes are passed as one blob (?1) and their indices as a JSON
# array (?2): the first index of each hash is kept, and the copies are found after, as
# one JSON list of [copy, original] (not a row each: see INSERT_CHUNKS on the GIL).
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

CHECKPOINT_PAGES = 4000
"""Pages the WAL holds before a commit copies them into the database (a checkpoint)."""

WAL_HEADER, WAL_FRAME_HEADER = 32, 24


@implementer(IJournalStore)
class SQLiteStore:
    """
    Entries live in C{chunks}: one row per run of consecutive indices written by one
    commit, holding their canonical JSON separated by newlines (which canonical JSON
    never contains), their SHA-256 digests, and the ids of identified writes (so
    retries are recognised across restarts).  One row per commit rather than per
    entry is what lets a commit of thousands of entries cost about as much as one.

    Identical entries are stored once: between commits, an indexer walks the new
    entries in index order, records each new hash in C{hashes}, and rewrites a later
    copy of an entry as C{=INDEX} pointing at the first.  Keeping that B-tree off the
    commit path is what keeps random hash inserts from slowing acknowledgements; under
    sustained load deduplication lags behind the head and catches up when writes ease.
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
        self._queue: list = []      # (entries, digests, writeIds, Deferred) for the writer
        self._probes: list = []     # Deferreds of check() awaiting the writer
        self._accepting = False
        self._closing = False
        self._closed: list = []     # Deferreds of close() callers
        self._head = 0              # last committed index, as the writer thread knows it
        self._headUnsure = False    # a commit failed: it may have reached the disk anyway
        self._indexed = 0           # last index the deduplicating indexer has handled
        self._indexing = True       # False after an indexing error, until the next commit
        self._announcedHead = 0     # last index handed to followers, on the reactor
        self._writeError: StoreError | None = None  # the last commit of entries failed
        self._first = 1             # lowest index kept, as the writer thread knows it
        self._announcedFirst = 1    # the same, on the reactor
        self._trims: list = []      # _Trim jobs for the writer thread, oldest first
        self._lastTime = 0.0        # when a commit time was last recorded
        self._untimed = None        # (first index, time) of a commit to record
        self._bytes: int | None = None  # stored entry data, once a trim needed it
        self._copiesBefore = 0      # copies up to here were made before hashes.last
        self._unswept = False       # hashes of deleted entries wait in sweep
        self._sweepTurn = False     # the sweeper goes next, if it has work
        self._write = self._read = None
        self.journalId: str | None = None
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
                       "cache_size=-32768", f"wal_autocheckpoint={CHECKPOINT_PAGES}",
                       "journal_size_limit=67108864"):
            self._write.execute(f"PRAGMA {pragma}")
        self._createOrUpgrade()
        self._write.execute("INSERT OR IGNORE INTO meta VALUES ('journal_id', ?)",
                            (str(uuid.uuid4()),))
        self.journalId = self._write.execute(
            "SELECT value FROM meta WHERE key = 'journal_id'").fetchone()[0]
        # Proves at start-up that the file is writable, not merely readable.
        self._write.execute("INSERT OR REPLACE INTO meta VALUES ('opened', ?)",
                            (time.time(),))
        try:
            preallocateWAL(self._write, self.path)
        except OSError as e:
            self.log.warn("{store}: WAL not preallocated: {error}", store=self,
                          error=e.strerror or e)
        self._first = self._announcedFirst = self._meta("first", 1)
        self._head = self._announcedHead = self._lastIndex()
        self._indexed = self._meta("indexed", 0)
        self._copiesBefore = self._meta("copies_before", 0)
        self._unswept = bool(self._write.execute("SELECT 1 FROM sweep LIMIT 1").fetchone())
        self._loadRecentWrites()
        self._read = sqlite3.connect(self.path, isolation_level=None,
                                     check_same_thread=False)
        for pragma in ("query_only=1", "busy_timeout=10000", "cache_size=-16384"):
            self._read.execute(f"PRAGMA {pragma}")

    def _createOrUpgrade(self) -> None:
        """
        The tables of L{SCHEMA_VERSION}, and a version-1 file upgraded in place.
        Pages retention frees go to SQLite's free list and take later writes, so the
        file stops growing without shrinking: auto-vacuum, which would give them back,
        keeps pointer-map pages up to date in every commit, which slowed commits.
        """
        write = self._write
        legacy = write.execute("SELECT count(*) FROM sqlite_master WHERE name = 'hashes'"
                               ).fetchone()[0]
        write.executescript(SCHEMA)
        version = self._meta("schema", 1 if legacy else SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise StoreError(f"cannot open store sqlite:{self.path}: schema version "
                             f"{version} is newer than this logsvc's {SCHEMA_VERSION}")
        if version == 1:
            write.execute("BEGIN IMMEDIATE")
            if "last" not in [row[1] for row in write.execute("PRAGMA table_info(hashes)")]:
                write.execute("ALTER TABLE hashes ADD COLUMN last INTEGER")
            write.execute("INSERT OR REPLACE INTO meta VALUES ('copies_before', ?)",
                          (self._meta("indexed", 0),))
            write.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                          (SCHEMA_VERSION,))
            write.execute("COMMIT")
            self.log.info("{store}: schema upgraded from version 1 to {version}",
                          store=self, version=SCHEMA_VERSION)
        write.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def _meta(self, key: str, default: int) -> int:
        row = self._write.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _loadRecentWrites(self) -> None:
        """
        The newest identified writes, newest chunk first, until there are enough:
        those of deleted chunks too, so a retry still gets its original index.
        """
        found = []
        for first, digests, ids in self._write.execute(
                "SELECT first, digests, ids FROM chunks WHERE ids IS NOT NULL UNION ALL"
                " SELECT first, digests, ids FROM retries ORDER BY first DESC"):
            for index, writeId in reversed(json.loads(ids)):
                at = (index - first) * DIGEST
                found.append((writeId, digests[at:at + DIGEST], index))
            if len(found) >= RECENT_WRITES:
                break
        for writeId, digest, index in reversed(found[:RECENT_WRITES]):
            self._recent.add(writeId, digest, index)

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

    def append(self, entries: list, writeIds: list | None = None):
        """Hashes on the caller's thread, so that the writer thread needs the GIL little."""
        appended = Deferred()
        digests = [sha256(data).digest() for data in entries]
        with self._wakeup:
            if not self._accepting:
                return fail(StoreError(f"store sqlite:{self.path} is closed"))
            self._queue.append((entries, digests, writeIds, appended))
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
                    lag = self._lag()
                    idleWork = lag or self._unswept
                    if lag > INDEX_MAX_LAG or (
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
                elif indexTurn and self._lag() > INDEX_MAX_LAG:
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
                                         (job.before or self._first, self._first))
        self._trims = []
        self._reads.put(None)

    def _commit(self, batch: list, probes: list) -> None:
        """Runs in the writer thread; hands the outcome to the reactor thread."""
        started = time.perf_counter()
        try:
            indices, first, committed = self._store(batch, bool(probes))
        except Exception as e:
            self._rollback()
            self._headUnsure = True
            error = StoreError(f"cannot write to store sqlite:{self.path}: {e}")
            self._reactor.callFromThread(self._failed, batch, probes, error)
        else:
            self._indexing = True
            self._reactor.callFromThread(self._committed, batch, indices, first, committed,
                                         probes, time.perf_counter() - started)
            if self._untimed is not None:
                self._recordTime()

    def _recordTime(self) -> None:
        """
        The sparse record of commit times, once the acks are on their way: a commit a
        second notes when it started which index.  Losing one (a crash, a disk error)
        only makes retention by age keep a little more.
        """
        (index, now), self._untimed = self._untimed, None
        try:
            self._write.execute("INSERT OR REPLACE INTO times VALUES (?, ?)", (index, now))
        except sqlite3.Error as e:
            self.log.warn("{store}: commit time not recorded: {error}", store=self, error=e)
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
        write = self._write
        head = self._lastIndex() if self._headUnsure else self._head
        first = self._head + 1
        committed = self._unannounced() if head > self._head else []
        nextIndex = head + 1
        recent, pending = self._recent, {}   # pending: (writeId, digest) -> index
        indices, accepted, digests, identified = [], [], [], []
        for entries, hashes, writeIds, _ in batch:
            keys = list(zip(writeIds, hashes)) if writeIds is not None else None
            if keys is None or None not in writeIds and recent.allNew(keys, pending):
                given = range(nextIndex, nextIndex + len(entries))
                if keys is not None:
                    pending.update(zip(keys, given))
                    identified += zip(given, writeIds)
                accepted += entries
                digests += hashes
                nextIndex += len(entries)
                indices.append(given)
                continue
            given = []      # a retry or an unidentified write among them: one by one
            for data, key in zip(entries, keys):
                if key[0] is not None:
                    index = pending.get(key) or recent.get(*key)
                    if index is not None:
                        given.append(index)
                        continue
                    pending[key] = nextIndex
                    identified.append((nextIndex, key[0]))
                accepted.append(data)
                digests.append(key[1])
                given.append(nextIndex)
                nextIndex += 1
            indices.append(given)
        if accepted:
            data = b"\n".join(accepted)
            write.execute(INSERT_CHUNKS, (b"".join(digests), data,
                                          _chunkRows(head + 1, accepted, identified)))
            now = time.time()
            if now - self._lastTime >= TIME_STEP:
                self._untimed = (head + 1, now)
            if self._bytes is not None:
                self._bytes += len(data)
        elif probe:
            write.execute("INSERT OR REPLACE INTO meta VALUES ('checked', ?)", (time.time(),))
        self._head = nextIndex - 1
        self._headUnsure = False
        recent.update(pending)
        committed += accepted
        return indices, first, committed

    def _lastIndex(self) -> int:
        """The head as the file says: the last chunk's, or below the first kept index."""
        row = self._write.execute(
            "SELECT first + count - 1 FROM chunks ORDER BY first DESC LIMIT 1").fetchone()
        return max(row[0] if row else 0, self._first - 1)

    def _unannounced(self) -> list:
        """Entries committed without this thread knowing (a commit that reported a
        failure but reached the disk), from the head it knew on: remember their write
        ids, and announce them."""
        committed = []
        for first, count, digests, data, ids in self._write.execute(
                "SELECT first, count, digests, data, ids FROM chunks WHERE first > ?"
                " ORDER BY first", (self._head,)).fetchall():
            committed += data.split(b"\n")
            for index, writeId in json.loads(ids or "[]"):
                at = (index - first) * DIGEST
                self._recent.add(writeId, digests[at:at + DIGEST], index)
        self.log.warn("{store}: found {count} entries committed by a commit that "
                      "reported an error", store=self, count=len(committed))
        return committed

    def _rollback(self) -> None:
        try:
            if self._write.in_transaction:
                self._write.execute("ROLLBACK")
        except sqlite3.Error as e:
            self.log.warn("{store}: rollback failed: {error}", store=self, error=e)

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
        done = Deferred()
        with self._wakeup:
            if not self._accepting:
                return fail(StoreError(f"store sqlite:{self.path} is closed"))
            self._trims.append(_Trim(retention, now, done))
            self._wakeup.notify()
        return done

    def _trim(self) -> None:
        """One step of the oldest pending trim, in the writer thread."""
        job = self._trims[0]
        try:
            if job.target is None:
                job.before = self._first
                job.target = self._trimTarget(job.retention, job.now)
            if self._first < job.target:
                self._trimStep(job.target)
                return
            self._pruneRetries()
        except sqlite3.Error as e:
            self._rollback()
            outcome = job.done.errback, StoreError(
                f"cannot apply retention to store sqlite:{self.path}: {e}")
        else:
            outcome = job.done.callback, (job.before, self._first)
        with self._wakeup:
            self._trims.pop(0)
        self._reactor.callFromThread(*outcome)

    def _trimTarget(self, retention, now: float) -> int:
        """The first index of the chunk holding the lowest index any limit needs."""
        write, head = self._write, self._head
        if not retention or head < self._first:
            return self._first
        target = head + 1
        if retention.entries is not None:
            target = min(target, head - retention.entries + 1)
        if retention.seconds is not None:
            row = write.execute("SELECT max(idx) FROM times WHERE time <= ?",
                                (now - retention.seconds,)).fetchone()
            target = min(target, row[0] or self._first)
        if retention.bytes is not None:
            target = min(target, self._bytesTarget(retention.bytes))
        if target <= self._first:
            return self._first
        if target <= head:
            target = write.execute("SELECT max(first) FROM chunks WHERE first <= ?",
                                   (target,)).fetchone()[0] or self._first
        return max(target, self._first)

    def _bytesTarget(self, keep: int) -> int:
        """The first chunk that must stay so that at least C{keep} bytes are kept."""
        write = self._write
        if self._bytes is None:
            self._bytes = int(sum(write.execute(
                f"SELECT total(length(data)) FROM {table}").fetchone()[0]
                for table in ("chunks", "blobs")))
        excess, removed = self._bytes - keep, 0
        cursor = write.execute("SELECT first, length(data) FROM chunks WHERE first >= ?"
                               " ORDER BY first", (self._first,))
        try:
            for first, size in cursor:
                if removed + size > excess:
                    return first
                removed += size
        finally:
            cursor.close()
        return self._head + 1

    def _trimStep(self, target: int) -> None:
        """
        Delete the oldest chunks below C{target}, about L{TRIM_STEP} entries, in one
        transaction, touching only rows in index order: a first copy that a kept entry
        still refers to moves to C{blobs}, and a blob goes with its last copy; the
        hashes of deleted entries are queued in C{sweep} for idle time, since removing
        them from C{hashes} costs a random page each; write ids go to C{retries}, so the
        retry window outlives them.
        """
        write = self._write
        rows, count = [], 0
        cursor = write.execute("SELECT first, count, digests, data FROM chunks"
                               " WHERE first >= ? AND first < ? ORDER BY first",
                               (self._first, target))
        try:
            for row in cursor:
                rows.append(row)
                count += row[1]
                if count >= TRIM_STEP:
                    break
        finally:
            cursor.close()
        low = rows[0][0] if rows else self._first
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
            latest = {}     # an original both paths found keeps the higher last copy
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
                              (low, end, self._indexed)).rowcount
        write.execute("INSERT OR REPLACE INTO retries SELECT first, json_array_length(ids),"
                      " digests, ids FROM chunks WHERE first >= ? AND first < ?"
                      " AND ids IS NOT NULL", (low, end))
        write.execute("DELETE FROM chunks WHERE first >= ? AND first < ?", (low, end))
        write.execute("DELETE FROM times WHERE idx < ?", (end,))
        write.execute("INSERT OR REPLACE INTO meta VALUES ('first', ?)", (end,))
        indexed = max(self._indexed, end - 1)
        write.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)", (indexed,))
        write.execute("COMMIT")
        self._first, self._indexed = end, indexed
        self._unswept = self._unswept or swept > 0
        if self._bytes is not None:
            self._bytes += int(moved) - sum(len(row[3]) for row in rows)
        self._reactor.callFromThread(self._trimmed, end)

    def _legacyOriginals(self, rows: list, low: int, end: int) -> list:
        """
        First copies among entries deduplicated before schema version 2, which has no
        C{referenced} rows for them: looked up by hash, and taken to have copies up to
        C{copies_before}.
        """
        digests = b"".join(row[2] for row in rows)
        found = self._write.execute(
            "SELECT j.key FROM json_each(?2) j JOIN hashes h"
            " ON h.hash = substr(?1, j.key * 32 + 1, 32) AND h.idx = j.value",
            (digests, json.dumps(list(range(low, end))))).fetchall()
        return [(low + at, digests[at * DIGEST:(at + 1) * DIGEST], self._copiesBefore)
                for (at,) in found]

    def _sweepStep(self) -> None:
        """Remove the hashes of deleted entries, about L{INDEX_STEP} at a time."""
        write = self._write
        digests, indices, last = [], [], None
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
            self._unswept = False
            return
        write.execute("BEGIN IMMEDIATE")
        write.execute(SWEEP_HASHES, (b"".join(digests), json.dumps(indices)))
        write.execute("DELETE FROM sweep WHERE first <= ?", (last,))
        write.execute("COMMIT")

    def _trimmed(self, first: int) -> None:
        """On the reactor: reads below C{first} are refused from now on."""
        self._announcedFirst = first

    def _pruneRetries(self) -> None:
        """Keep the deleted write ids the retry window still covers."""
        write, total, oldest = self._write, 0, None
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

    # Deduplicating

    @property
    def indexed(self) -> int:
        """The last index deduplicated so far (the head, once writes ease)."""
        return self._indexed

    def deduplicationLag(self):
        """Entries committed but not yet deduplicated, as the writer thread knows them."""
        return succeed(self._head - self._indexed)

    def _lag(self) -> int:
        """Entries committed but not yet deduplicated (none while indexing is paused)."""
        return self._head - self._indexed if self._indexing else 0

    def _index(self) -> None:
        """
        One step of the indexer or of the sweeper, in the writer thread; they take
        turns, since each entry costs each a random page and neither may starve.
        """
        try:
            if self._unswept and (self._sweepTurn or not self._lag()):
                self._sweepTurn = False
                self._sweepStep()
            else:
                self._sweepTurn = True
                self._indexStep()
        except sqlite3.Error as e:
            self._rollback()
            self._indexing = False
            self.log.warn("{store}: deduplication paused until the next commit: {error}",
                          store=self, error=e)

    def _indexStep(self) -> None:
        """
        Record the hashes of the next entries in C{hashes} (the first index of each),
        and rewrite each entry whose hash was already there as a reference to it
        (C{=0} when that entry was deleted and its data kept in C{blobs}); each hash
        notes its highest copy, so retention knows whether its data is still needed.
        The hashes go to SQLite as one blob, so the work per entry runs in SQLite's C
        code.
        """
        write = self._write
        write.execute("BEGIN IMMEDIATE")
        hashes, indices, last = [], [], self._indexed
        for first, count, digests in write.execute(
                "SELECT first, count, digests FROM chunks WHERE first > ? AND first <= ?"
                " ORDER BY first", (self._indexed, self._head)):
            hashes.append(digests)
            indices += range(first, first + count)
            last = first + count - 1
            if len(indices) >= INDEX_STEP:
                break
        step = (b"".join(hashes), json.dumps(indices))
        if self._unswept:
            write.execute(STALE_HASHES, (*step, self._first))
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
        self._indexed = last

    def _replaceCopies(self, copies: dict) -> None:
        rows = self._write.execute(CHUNKS_FROM, (min(copies), max(copies))).fetchall()
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
                self._write.execute("UPDATE chunks SET data = ? WHERE first = ?",
                                    (rewritten, first))
                if self._bytes is not None:
                    self._bytes += len(rewritten) - len(data)

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
        if start < self._announcedFirst:
            return fail(Trimmed(self._announcedFirst, self._announcedHead))
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
                rows = self._readKept(start, last)
            except Trimmed as e:
                self._reactor.callFromThread(result.errback, e)
            except sqlite3.Error as e:
                error = StoreError(f"cannot read store sqlite:{self.path}: {e}")
                self._reactor.callFromThread(result.errback, error)
            else:
                self._reactor.callFromThread(result.callback, rows)
        self._release()
        self._reactor.callFromThread(self._finishClosing)

    def _readKept(self, start: int, last: int) -> list:
        """
        One read transaction, so that retention deletes either all or none of what it
        sees: below C{first}, L{Trimmed}.
        """
        read = self._read
        read.execute("BEGIN")
        try:
            row = read.execute("SELECT value FROM meta WHERE key = 'first'").fetchone()
            first = row[0] if row else 1
            if start < first:
                raise Trimmed(first, max(first - 1, self._announcedHead))
            return self._readRange(start, last, first)
        finally:
            read.execute("COMMIT")

    def _readRange(self, start: int, last: int, kept: int) -> list:
        """
        Each entry checked against its hash; references to a first copy resolved,
        from C{blobs} when that copy was deleted (below C{kept}, the first index kept).
        """
        rows, copies = [], []
        for first, count, digests, data in self._read.execute(CHUNKS_FROM, (start, last)):
            low, high = max(first, start), min(first + count - 1, last)
            records = data.split(b"\n")
            if len(records) != count or len(digests) != count * DIGEST:
                rows += [(index, EntryError("entry corrupt: its chunk is damaged"))
                         for index in range(low, high + 1)]
                continue
            for index in range(low, high + 1):
                record = records[index - first]
                at = (index - first) * DIGEST
                digest = digests[at:at + DIGEST]
                if record[:1] == b"=":
                    copies.append((len(rows), index, int(record[1:]), digest))
                    rows.append(None)
                else:
                    rows.append((index, record if sha256(record).digest() == digest
                                 else CORRUPT))
        for at, index, original, digest in copies:
            if original < kept:
                found = self._read.execute("SELECT data FROM blobs WHERE hash = ?",
                                           (digest,)).fetchone()
                data = found[0] if found else None
            else:
                found = self._readRange(original, original, kept) if original < index else []
                data = found[0][1] if found else None
            rows[at] = (index, data if data.__class__ is bytes
                        and sha256(data).digest() == digest else CORRUPT)
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


class _Trim:
    """One L{SQLiteStore.trim} call, as the writer thread works through it."""

    def __init__(self, retention, now: float, done: Deferred):
        self.retention = retention
        self.now = now
        self.done = done
        self.before: int | None = None
        self.target: int | None = None


def _chunkRows(first: int, entries: list, identified: list) -> str:
    """
    L{INSERT_CHUNKS}'s rows for consecutive entries from index C{first}: at most
    L{CHUNK_ENTRIES} entries or L{CHUNK_BYTES} bytes per row (a larger entry gets a row
    of its own).  C{identified} lists (index, write id) in index order.
    """
    ends = list(accumulate(map(add, map(len, entries), repeat(1))))  # past each newline
    rows, start, ids = [], 0, 0
    while start < len(entries):
        offset = ends[start - 1] if start else 0
        end = max(start + 1, bisect_right(ends, offset + CHUNK_BYTES + 1, start,
                                          min(len(entries), start + CHUNK_ENTRIES)))
        idsEnd = bisect_left(identified, (first + end,), ids)
        rows.append([first + start, end - start, start, offset, ends[end - 1] - 1 - offset,
                     identified[ids:idsEnd] or None])
        start, ids = end, idsEnd
    return json.dumps(rows)
