"""
The journal on PostgreSQL (C{--store postgresql://USER:PASSWORD@HOST:PORT/DB}), shared
by every logsvc node pointed at the same database.

The same shape as the SQLite store, with psycopg 3 in threads of its own (the reactor
never waits on the server): one writer thread commits whatever queued up while the
previous commit was on its way (group commit), in one statement per commit (one round
trip with COMMIT while no other node writes, two otherwise); reads run in a thread
pool of their own; one listening connection hears of every commit (each commit sends
a notification) and reads other nodes' new entries, which reach the followers in
index order with this node's own (handed over by the writer as it acks them, never
read back).  Indices come from one counter row that every commit locks and updates
in its own transaction, so they are dense and in commit order across nodes (a
sequence would leave gaps on rollback).
"""

import threading
import time
import uuid
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..errors import EntryError, StoreError, Trimmed, oneLine
from ..interfaces import IJournalStore
from ..store import (
    CORRUPT, DIGEST, RECENT_WRITES, TIME_STEP, Followers, assignIndices, entryHash, entryHashes,
)
from .indexer import REFERENCE, deduplicate
from .schema import SCHEMA_VERSION, createOrUpgrade
from .trimmer import trimStep
from .window import identifiedWrites, RetryWindow, chunkRows

if TYPE_CHECKING:
    import psycopg

CHANNEL = "logsvc_commit"
"""
Each commit notifies this channel with C{"FIRST LAST TOKEN"}: its indices, and the
committing store's token.
"""

# When another node may have committed since this node's retry window was last up to
# date, a commit first locks the counter, then (once the lock is held, so seeing every
# commit before this one) reads the write ids of chunks committed after C{covered},
# the last index the window has (by another node, or by a commit of its own that
# reported an error).
LOCK = "SELECT head FROM logsvc_counter FOR UPDATE"

UNSEEN = """
SELECT first, digests, ids FROM logsvc_chunks WHERE first > %(covered)s AND ids IS NOT NULL
UNION ALL SELECT first, digests, ids FROM logsvc_retries WHERE first > %(covered)s
"""

# The newest identified writes first, for the retry window of a node starting.
RECENT = """
SELECT first, digests, ids FROM logsvc_chunks WHERE ids IS NOT NULL
UNION ALL SELECT first, digests, ids FROM logsvc_retries ORDER BY first DESC
"""

# One statement stores a commit, if the head is still C{expected}: the new head, the
# chunk rows (with their write ids), the commit's time when one is due, and the
# notification; it returns a row if it stored them.  The UPDATE locks the counter (or
# waits for the node holding it, then finds the head moved and stores nothing), so a
# commit that expects the head its window covers needs one round trip, with COMMIT.
# Arrays go in binary (%b): as text, hex-encoding and parsing them took most of a
# commit's time.
STORE = f"""
WITH counter AS (
    UPDATE logsvc_counter SET head = %(head)s WHERE head = %(expected)s RETURNING head),
chunks AS (
    INSERT INTO logsvc_chunks (first, count, digests, data, ids)
    SELECT u.* FROM counter, unnest(%(firsts)b::bigint[], %(counts)b::int[],
        %(digests)b::bytea[], %(data)b::bytea[], %(ids)b::text[]) AS u),
times AS (
    INSERT INTO logsvc_times SELECT %(expected)s + 1, %(time)s::float8 FROM counter
    WHERE %(time)s::float8 IS NOT NULL ON CONFLICT DO NOTHING)
SELECT pg_notify('{CHANNEL}', %(payload)s) FROM counter
"""

# One statement, so one snapshot: the counter, and the chunks holding [start, last].
READ_CHUNKS = """
SELECT k.first, k.head, c.first, c.count, c.digests, c.data{ids} FROM logsvc_counter k
LEFT JOIN LATERAL (
    SELECT * FROM logsvc_chunks WHERE first <= %(last)s AND first >= coalesce(
        (SELECT max(first) FROM logsvc_chunks WHERE first <= %(start)s), 0)
    ORDER BY first) c ON true
"""
READ = READ_CHUNKS.format(ids="")

DIGEST_AT = """
SELECT substring(digests FROM ((%(index)s - first) * 32 + 1)::int FOR 32) FROM logsvc_chunks
WHERE first <= %(index)s AND first + count > %(index)s ORDER BY first DESC LIMIT 1
"""

# The listening thread's one statement per wake-up: L{READ} with the chunks' write
# ids (for the retry window), and what rewind detection compares (the journal id, and
# the digest of the highest entry served).
FOLLOW = f"""
SELECT r.*, (SELECT value FROM logsvc_meta WHERE key = 'journal_id'),
       ({DIGEST_AT.replace("%(index)s", "%(served)s")})
FROM ({READ_CHUNKS.format(ids=", c.ids")}) r
"""

INDEX_WHEN_IDLE = 0.05
"""Seconds without a commit after which the indexer runs: writers come first."""

INDEX_MAX_LAG = 10_000_000
"""Entries the indexer may fall behind the head before it takes turns with commits."""

PAGE = 2000
"""Most entries the listening thread reads at once when catching up."""

READ_POOL = 4
"""Threads (each with its connection) serving reads."""

POLL = 1.0
"""Seconds between the listening thread's checks when no notification comes."""

BACKOFF = (0.1, 2.0)
"""First and longest wait between attempts to reach a server that is down."""

CLOSE_WAIT = 2.0
"""Seconds L{PostgreSQLStore.close} waits for followers to be given what was acked."""

CONNECT_TIMEOUT = 10
"""Seconds to reach the server, when the URI does not say."""


def isPostgreSQL(description: str) -> bool:
    return description.startswith(("postgresql://", "postgres://"))


def connect(uri: str, **options):
    """A psycopg connection to C{uri}, or L{StoreError} with libpq's message on one
    line (it spans several, and never holds the password)."""
    import psycopg
    try:
        return psycopg.connect(uri, connect_timeout=CONNECT_TIMEOUT, **options)
    except psycopg.Error as e:
        raise StoreError(oneLine(e)) from None


class _HeadMoved(Exception):
    """Another node committed after the head a commit expected: nothing was stored."""


class _Backoff:
    """Waits that grow from L{BACKOFF}[0] to L{BACKOFF}[1] while attempts fail."""

    def __init__(self):
        self.wait = 0.0
        self.until = 0.0

    def failed(self) -> None:
        self.wait = min(BACKOFF[1], max(BACKOFF[0], self.wait * 2))
        self.until = time.monotonic() + self.wait

    def succeeded(self) -> None:
        self.wait = self.until = 0.0


@implementer(IJournalStore)
class PostgreSQLStore:
    """
    Entries live in C{logsvc_chunks}, as on SQLite: one row per run of a commit's
    entries, their canonical JSON joined by newlines and their SHA-256 digests, each
    entry checked against its digest when read, and the write ids of its identified
    entries.  The retry window is shared by every node: each keeps at least the last
    L{RECENT_WRITES} identified writes (L{RetryWindow}), and reads in each commit's
    transaction those it has not seen, so a retry gets its original index whichever
    node it reaches.

    Identical content is stored once, as on SQLite and off the commit path: once writes
    pause, the writer thread of one node at a time (the one holding C{logsvc_indexed})
    notes each new entry's digest in C{logsvc_hashes}; when a second copy turns up, the
    content moves to that row and every copy's record becomes L{REFERENCE}.  Retention
    deletes a row with the chunk holding its last copy (C{last}).

    A node never serves a journal that went backwards: if the head falls below an index
    it served, the entry at that index changes, or the journal id changes (the database
    was replaced), it refuses writes, reads and health checks until restarted.
    """

    log = Logger()

    def __init__(self, reactor, uri: str):
        self._reactor = reactor
        self._uri = uri
        self._followers = Followers()
        self._commitObservers: list = []
        self._wakeup = threading.Condition()
        self._queue: list = []      # (entries, digests, writeIds, Deferred) for the writer
        self._probes: list = []
        self._trims: list = []      # (retention, now, Deferred)
        self._accepting = False
        self._closing = False
        self._closed: list = []
        self._write: psycopg.Connection | None = None  # the writer thread's, None while down
        self._writeBackoff = _Backoff()
        self._writeError: StoreError | None = None
        self._window = RetryWindow()
        self._alone = True          # writer thread: no other node committed lately
        self._headSeen = 0          # writer and listener threads: the highest head seen
        self._indexed = 0           # writer thread: the last index deduplicated
        self._indexing = True       # False after an indexing error, until the next commit
        self._lastTime = 0.0
        self._ackedHead = 0         # on the reactor: highest index this node acked
        self._announcedHead = 0     # on the reactor: highest index given to followers
        self._announcedFirst = 1
        self._served = (0, b"")     # (index, digest) of the highest entry served
        self._servedLock = threading.Lock()
        self._ownLock = threading.Lock()
        self._ownPending: list = []  # first indices of own commits not yet acked on the reactor
        self._inDoubt: int | None = None  # the first index of own commits that may have landed
        self._token = uuid.uuid4().hex[:16]  # names this store's commits in notifications
        self._heldBack: list = []   # (first, entries) waiting for acks or earlier entries
        self._rewound: StoreError | None = None
        self.journalId: str | None = None
        self._pool = ThreadPool(minthreads=1, maxthreads=READ_POOL, name="logsvc-pg-read")
        self._local = threading.local()
        self._readConnections: list = []
        self._listening = threading.Event()

    def __repr__(self) -> str:
        return f"<PostgreSQLStore {self._where()}>"

    def _where(self) -> str:
        """The URI without its password, for messages."""
        try:
            from psycopg.conninfo import conninfo_to_dict
            info = conninfo_to_dict(self._uri)
        except Exception:
            return "postgresql"
        return (f"postgresql://{info.get('user', '')}@{info.get('host', '')}:"
                f"{info.get('port', 5432)}/{info.get('dbname', '')}")

    # Opening and closing

    def open(self):
        """Connect, create or upgrade the schema, then start the threads."""
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return fail(StoreError("cannot open store postgresql: psycopg is not "
                                   "installed (pip install 'logsvc[postgresql]')"))
        try:
            self._write = self._connectWriter()
            head, first, self._indexed = self._write.execute(
                "SELECT head, first, indexed FROM logsvc_counter, logsvc_indexed").fetchone()
            self._served = (head, self._digestAt(self._write, head))
            self._loadWindow(head)
            self._write.rollback()
        except StoreError as e:
            self._closeWriter()
            return fail(StoreError(f"cannot open store {self._where()}: {e}"))
        self._ackedHead = self._announcedHead = self._headSeen = head
        self._announcedFirst = first
        self._accepting = True
        self._pool.start()
        threading.Thread(target=self._writeLoop, name="logsvc-pg-writer",
                         daemon=True).start()
        threading.Thread(target=self._listenLoop, args=(head,), name="logsvc-pg-listener",
                         daemon=True).start()
        return succeed(None)

    def _loadWindow(self, head: int) -> None:
        """The newest identified writes, newest chunk first, until there are enough,
        read through a server-side cursor (the journal may hold millions)."""
        found: list = []
        with self._writer().cursor("logsvc_recent", binary=True) as cursor:
            cursor.execute(RECENT)
            for row in cursor:
                found += sorted(identifiedWrites([row]).items(), key=lambda w: -w[1])
                if len(found) >= RECENT_WRITES:
                    break
        self._window.add(1, head, dict(found[:RECENT_WRITES]))

    def _connectWriter(self):
        """A connection with the schema in place, and the journal id checked."""
        import psycopg
        connection = connect(self._uri)
        try:
            self._createOrUpgrade(connection)
        except psycopg.Error as e:
            connection.close()
            raise StoreError(oneLine(e)) from None
        except StoreError:
            connection.close()
            raise
        return connection

    def _createOrUpgrade(self, connection) -> None:
        """The schema in place, and the journal id the one this store first saw."""
        version, journalId = createOrUpgrade(connection)
        if version < SCHEMA_VERSION:
            self.log.info("{store}: schema upgraded from version {old} to {new}",
                          store=self, old=version, new=SCHEMA_VERSION)
        if self.journalId is None:
            self.journalId = journalId
        elif journalId != self.journalId:
            raise self._rewind(f"the journal id changed from {self.journalId} to "
                               f"{journalId} (the database was replaced)")

    def close(self):
        """Commit everything queued, then stop every thread and connection."""
        if not self._accepting and not self._closing:
            return succeed(None)
        closed = Deferred()
        with self._wakeup:
            self._closed.append(closed)
            self._accepting = False
            self._closing = True
            self._wakeup.notify()
        return closed

    def _finishClosing(self, waited: float = 0.0) -> None:
        """On the reactor, once the writer is done and followers have what it acked."""
        if self._announcedHead < self._ackedHead and waited < CLOSE_WAIT:
            self._reactor.callLater(0.01, self._finishClosing, waited + 0.01)
            return
        self._listening.set()
        self._pool.stop()
        for connection in self._readConnections:
            connection.close()
        self._readConnections = []
        closed, self._closed = self._closed, []
        self._closing = False
        for waiter in closed:
            waiter.callback(None)

    def _closeWriter(self) -> None:
        if self._write is not None:
            try:
                self._write.close()
            except Exception:
                pass
            self._write = None

    def _refusal(self) -> StoreError | None:
        if not self._accepting:
            return StoreError(f"store {self._where()} is closed")
        return self._rewound

    # Writing

    def append(self, entries: list, writeIds: list | None = None):
        appended: Deferred = Deferred()
        digests = entryHashes(entries)
        with self._wakeup:
            refusal = self._refusal()
            if refusal is not None:
                return fail(refusal)
            self._queue.append((entries, digests, writeIds, appended))
            if len(self._queue) == 1:
                self._wakeup.notify()
        return appended

    def check(self):
        """Fires once the writer's connection answers as a primary (writable) server."""
        checked = Deferred()
        with self._wakeup:
            refusal = self._refusal()
            if refusal is not None:
                return fail(refusal)
            self._probes.append(checked)
            self._wakeup.notify()
        return checked

    def _writeLoop(self) -> None:
        """
        Commit whatever is queued; while a trim is pending, a step of it after each
        commit, so neither waits long for the other; deduplicate once no commit came
        for L{INDEX_WHEN_IDLE}, and take turns with commits while more than
        L{INDEX_MAX_LAG} behind.
        """
        indexTurn = trimTurn = False
        while True:
            trim = False
            with self._wakeup:
                while not (self._queue or self._probes or self._closing or self._trims):
                    lag = self._lag()
                    if lag > INDEX_MAX_LAG or (
                            lag and not self._wakeup.wait(INDEX_WHEN_IDLE)
                            and not (self._queue or self._probes or self._closing
                                     or self._trims)):
                        break
                    if not lag:
                        self._wakeup.wait()
                closing = self._closing
                if closing or ((self._queue or self._probes)
                               and not (self._trims and trimTurn)
                               and not (indexTurn and self._lag() > INDEX_MAX_LAG)):
                    batch, self._queue = self._queue, []
                    probes, self._probes = self._probes, []
                else:
                    batch = probes = []     # the queue waits for one step
                    trim = bool(self._trims)
            if batch or probes:
                self._commit(batch, probes)
                indexTurn = trimTurn = True
            elif closing:
                break
            elif trim:
                self._trimStep()
                trimTurn = False
            else:
                self._indexStep()
                indexTurn = False
        for _, _, done in self._trims:
            self._reactor.callFromThread(done.callback, (self._announcedFirst,
                                                         self._announcedFirst))
        self._trims = []
        self._closeWriter()
        self._reactor.callFromThread(self._finishClosing)

    def _writer(self) -> "psycopg.Connection":
        """The writer thread's connection, once L{_ensureWriter} has made it."""
        assert self._write is not None
        return self._write

    def _ensureWriter(self) -> None:
        """Reconnect after a failure, no sooner than the backoff allows."""
        if self._write is not None:
            return
        if time.monotonic() < self._writeBackoff.until:
            assert self._writeError is not None  # set by every failed attempt
            raise self._writeError
        try:
            self._write = self._connectWriter()
        except StoreError as e:
            self._writeError = StoreError(f"cannot write to store {self._where()}: {e}")
            self._writeBackoff.failed()
            raise self._writeError from None
        self._writeBackoff.succeeded()
        self.log.info("{store}: connected again", store=self)

    def _commit(self, batch: list, probes: list) -> None:
        import psycopg
        started = time.perf_counter()
        indices, first, accepted = [], 0, []
        try:
            if self._rewound is not None:
                raise self._rewound
            self._ensureWriter()
            if batch:
                indices, first, accepted = self._store(batch)
            else:
                (primary,), = self._writer().execute("SELECT NOT pg_is_in_recovery()")
                self._writer().rollback()
                if not primary:
                    raise StoreError(f"store {self._where()} is read-only (a standby)")
        except (psycopg.Error, StoreError) as e:
            if isinstance(e, psycopg.Error):
                e = StoreError(f"cannot write to store {self._where()}: {oneLine(e)}")
                self._writeError = e
                if self._write is not None and self._write.broken:
                    self._closeWriter()
                    self._writeBackoff.failed()
                else:
                    self._rollback()
            self._reactor.callFromThread(self._failed, batch, probes, e)
            return
        seconds = time.perf_counter() - started
        self._indexing = True
        self._reactor.callFromThread(self._committed, batch, indices, first, accepted,
                                     probes, seconds)

    def _rollback(self) -> None:
        try:
            self._writer().rollback()
        except Exception:
            self._closeWriter()

    def _store(self, batch: list) -> tuple:
        """
        One transaction: assign indices after the head the retry window covers and
        store the writes that are not retries, in one round trip with COMMIT, if no
        other node committed since.  Otherwise (or while other nodes commit too) lock
        the counter first and learn what they committed.  Returns the indices per
        write, the new entries' first index and the new entries.
        """
        if self._alone:
            try:
                return self._storeAfter(batch, self._window.covered)
            except _HeadMoved:
                pass
        return self._storeAfter(batch, None)

    def _storeAfter(self, batch: list, head: int | None) -> tuple:
        """
        Store C{batch} after index C{head} (L{_HeadMoved} if the head is no longer
        there), or when C{None}, after the head found once the counter is locked.
        """
        write = self._writer()
        window = self._window
        locked = head is None
        with write.pipeline():
            if locked:
                # BEGIN, LOCK and UNSEEN in one round trip, STORE and COMMIT in another.
                covered = window.covered
                lock = write.execute(LOCK)
                unseen = write.execute(UNSEEN, {"covered": covered}, binary=True)
                (head,), = lock.fetchall()
                served = self._served[0]
                if head < served:
                    raise self._rewind(f"the head is {head}, below index {served} "
                                       "already served")
                window.add(covered + 1, head, identifiedWrites(unseen.fetchall()))
                self._alone = head == covered
            assert head is not None
            with window.lock:
                indices, accepted, digests, identified, pending = assignIndices(
                    batch, head, window.recent)
            if not accepted:
                write.commit()
                return indices, head + 1, accepted
            last = head + len(accepted)
            now = time.time()
            timed = now - self._lastTime >= TIME_STEP
            stored = write.execute(STORE, {
                **chunkRows(head + 1, accepted, digests, identified),
                "expected": head, "head": last, "time": now if timed else None,
                "payload": f"{head + 1} {last} {self._token}"})
            with self._ownLock:
                self._ownPending.append(head + 1)
            try:
                write.commit()
                moved = not stored.fetchall()
            except BaseException:
                self._forgetOwn(head + 1, inDoubt=True)
                raise
        if moved:
            self._forgetOwn(head + 1)
            self._alone = False
            if locked:
                raise StoreError("the journal's head moved while this node held its lock")
            raise _HeadMoved()
        if timed:
            self._lastTime = now
        window.add(head + 1, last, pending)
        self._headSeen = max(self._headSeen, last)
        return indices, head + 1, accepted

    def _forgetOwn(self, first: int, inDoubt: bool = False) -> None:
        """
        The writer will not hand over the commit from index C{first}: it did not
        happen, or C{inDoubt}, it reported an error but may have been committed, and
        then the listening thread, which skipped it as this node's, reads it.
        """
        with self._ownLock:
            self._ownPending.remove(first)
            if inDoubt:
                self._inDoubt = min(first, self._inDoubt or first)

    def _committed(self, batch, indices, first, accepted, probes, seconds) -> None:
        """
        On the reactor: acks first, then followers, at once when they have every
        earlier entry, else once the listening thread has handed over those (another
        node's commits came in between).  The listening thread does not read this
        node's commits back, so a follower has a write within one thread hop of its
        commit.
        """
        if accepted:
            self._ackedHead = max(self._ackedHead, first + len(accepted) - 1)
        for (*_, appended), given in zip(batch, indices):
            appended.callback(list(given))
        if accepted:
            with self._ownLock:
                self._ownPending.remove(first)
            self._offer(first, accepted)
        for checked in probes:
            checked.callback(None)
        if batch:
            for observer in self._commitObservers:
                observer(seconds, len(accepted))

    def _failed(self, batch: list, probes: list, error: StoreError) -> None:
        self.log.error("{error}", error=error)
        for *_, appended in batch:
            appended.errback(error)
        for checked in probes:
            checked.errback(error)

    # Following every node's commits

    def _listenLoop(self, delivered: int) -> None:
        """
        Hear every commit; hand the entries after C{delivered} to the reactor in
        order, read from the database.  Polls when
        nothing comes, so a lost notification (or a rewind) is noticed too.
        """
        import psycopg
        backoff = _Backoff()
        while not self._listening.is_set():
            try:
                connection = connect(self._uri, autocommit=True)
            except StoreError as e:
                backoff.failed()
                self.log.warn("{store}: cannot listen for commits: {error}",
                              store=self, error=e)
                self._listening.wait(backoff.wait)
                continue
            backoff.succeeded()
            try:
                connection.execute(f"LISTEN {CHANNEL}")
                delivered = self._catchUp(connection, delivered)
                while not self._listening.is_set():
                    # The generator holds the connection: finish it before querying.
                    heard = list(connection.notifies(timeout=POLL, stop_after=1))
                    for notification in heard:      # those queued while reading, too
                        delivered = self._notified(connection, notification.payload,
                                                   delivered)
                    with self._ownLock:
                        inDoubt, self._inDoubt = self._inDoubt, None
                    if inDoubt is not None:
                        delivered = min(delivered, inDoubt - 1)
                    if not heard or inDoubt is not None:
                        delivered = self._catchUp(connection, delivered)
            except (psycopg.Error, StoreError) as e:
                if not self._listening.is_set():
                    self.log.warn("{store}: listening interrupted: {error}", store=self,
                                  error=oneLine(e))
                    self._listening.wait(BACKOFF[0])
            finally:
                connection.close()

    def _notified(self, connection, payload: str, delivered: int) -> int:
        """
        This node's own commits reach followers from the writer: what they already
        have is skipped, and so is an own commit that follows them; anything else is
        read.
        """
        first, last, token = payload.split(" ")
        delivered = max(delivered, self._announcedHead)
        if int(last) <= delivered:
            return delivered
        if token == self._token and int(first) == delivered + 1:
            return int(last)
        return self._catchUp(connection, delivered)

    def _catchUp(self, connection, delivered: int) -> int:
        """
        Read and deliver every committed entry after C{delivered}.  Entries another
        node's retention deleted before they were delivered are skipped here: a
        reader that needs them is told by its own read.
        """
        while True:
            served = self._served   # before the snapshot, so it must include it
            rows = connection.execute(FOLLOW, {"start": delivered, "last": delivered + PAGE,
                                               "served": served[0]}, binary=True).fetchall()
            first, head, journalId, digest = rows[0][0], rows[0][1], rows[0][7], rows[0][8]
            self._checkRewind(served, first, head, journalId, digest)
            for row in rows:
                if row[2] is not None:
                    self._window.add(row[2], row[2] + row[3] - 1, identifiedWrites(
                        [(row[2], row[4], row[6])] if row[6] is not None else []))
            if first > self._announcedFirst:
                self._reactor.callFromThread(self._trimmed, first)
            delivered = max(delivered, first - 1)
            if head > self._headSeen:
                with self._wakeup:
                    self._headSeen = max(self._headSeen, head)
                    self._wakeup.notify()
            try:
                entries = self._rows(connection, rows, delivered + 1,
                                     min(head, delivered + PAGE))
            except Trimmed:
                continue    # read again, from the new first
            if not entries:
                return delivered
            self._reactor.callFromThread(self._offer, delivered + 1,
                                         [data for _, data in entries])
            delivered = entries[-1][0]

    def _checkRewind(self, served: tuple, first: int, head: int, journalId: str,
                     stored: bytes | None) -> None:
        """C{stored}: the digest now at the index of C{served}, the entry served last."""
        index, digest = served
        if head < index:
            self._rewind(f"the head is {head}, below index {index} already served")
        elif index >= first and stored is not None and bytes(stored) != digest:
            self._rewind(f"the entry at index {index} differs from the one served")
        if journalId != self.journalId:
            self._rewind(f"the journal id changed from {self.journalId} to {journalId}"
                         " (the database was replaced)")
        if self._rewound is not None:
            raise self._rewound

    @staticmethod
    def _digestAt(connection, index: int) -> bytes | None:
        """The digest of the entry at C{index}; None when it is not stored (any more)."""
        row = connection.execute(DIGEST_AT, {"index": index}).fetchone()
        return bytes(row[0]) if row else None

    def _rewind(self, reason: str) -> StoreError:
        if self._rewound is None:
            self._rewound = StoreError(f"store {self._where()} went backwards: {reason};"
                                       " refusing to serve it (restart once resolved)")
            self.log.error("{error}", error=self._rewound)
        return self._rewound

    def _offer(self, first: int, entries: list) -> None:
        """
        On the reactor: entries the listening thread read or this node committed,
        handed to followers in index order.  Those after a gap wait for the entries
        missing, and those from one of this node's own commits whose acks are still
        on their way wait for them, so that a connection gets its write's ack before
        the entry.
        """
        with self._ownLock:
            waiting = min(self._ownPending, default=None)
        held, self._heldBack = sorted(self._heldBack + [(first, entries)],
                                      key=lambda pair: pair[0]), []
        for heldFirst, heldEntries in held:
            end = heldFirst + len(heldEntries)
            if heldFirst <= self._announcedHead + 1:
                ready = end if waiting is None else min(end, waiting)
                if ready > heldFirst:
                    self._deliver(heldFirst, heldEntries[:ready - heldFirst])
            if end > self._announcedHead + 1:
                self._heldBack.append((heldFirst, heldEntries))

    def _deliver(self, first: int, entries: list) -> None:
        """On the reactor: entries after what followers have, once each, in order."""
        skip = self._announcedHead + 1 - first
        if skip >= len(entries):
            return
        if skip > 0:
            first, entries = first + skip, entries[skip:]
        self._announcedHead = first + len(entries) - 1
        self._noteServed(self._announcedHead, entryHash(entries[-1]))
        self._followers.deliver(first, entries)

    def _noteServed(self, index: int, digest: bytes) -> None:
        with self._servedLock:
            if index > self._served[0]:
                self._served = (index, digest)

    # Reading

    def head(self):
        """
        The highest index this node acked or handed to followers: every entry up to
        it is committed, so L{read} returns them; later ones come through L{follow}.
        """
        return succeed(max(self._ackedHead, self._announcedHead))

    def first(self):
        return succeed(self._announcedFirst)

    def read(self, start: int, limit: int):
        refusal = self._refusal()
        if refusal is not None:
            return fail(refusal)
        start = max(start, 1)
        head = max(self._ackedHead, self._announcedHead)
        if start < self._announcedFirst:
            return fail(Trimmed(self._announcedFirst, head))
        last = min(head, start + limit - 1)
        if start > last:
            return succeed([])
        return deferToThreadPool(self._reactor, self._pool, self._readRange, start, last)

    def _readConnection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            connection = connect(self._uri, autocommit=True)
            self._local.connection = connection
            self._readConnections.append(connection)
        return connection

    def _readRange(self, start: int, last: int) -> list:
        import psycopg
        try:
            connection = self._readConnection()
            rows = connection.execute(READ, {"start": start, "last": last}, binary=True).fetchall()
            first, head = rows[0][0], rows[0][1]
            if head < last:
                raise self._rewind(f"the head is {head}, below index {last} already committed")
            if start < first:
                raise Trimmed(first, head)
            result = self._rows(connection, rows, start, last)
        except psycopg.Error as e:
            connection = getattr(self._local, "connection", None)
            if connection is not None and connection.broken:
                connection.close()
            raise StoreError(f"cannot read store {self._where()}: {oneLine(e)}") from None
        except StoreError as e:
            if e is self._rewound:
                raise
            raise StoreError(f"cannot read store {self._where()}: {e}") from None
        if result and result[-1][1].__class__ is bytes:
            self._noteServed(result[-1][0], entryHash(result[-1][1]))
        return result

    def _rows(self, connection, rows: list, start: int, last: int) -> list:
        """
        Entries C{start}..C{last}, each checked against its digest; references
        resolved with a second statement.  Content missing there went with its last
        copy: if retention deleted the entry meanwhile, L{Trimmed}.
        """
        found, references = [], []
        for row in rows:
            first, count, digests, data = row[2:6]
            if first is None:
                continue
            low, high = max(first, start), min(first + count - 1, last)
            records = bytes(data).split(b"\n")
            digests = bytes(digests)
            if len(records) != count or len(digests) != count * DIGEST:
                found += [(index, EntryError("entry corrupt: its chunk is damaged"))
                          for index in range(low, high + 1)]
                continue
            for index in range(low, high + 1):
                record = records[index - first]
                at = (index - first) * DIGEST
                digest = digests[at:at + DIGEST]
                if record == REFERENCE:
                    references.append((len(found), index, digest))
                    record = None
                found.append((index, record if record is None
                              or entryHash(record) == digest else CORRUPT))
        if references:
            self._resolve(connection, found, references)
        if last >= start and len(found) != last - start + 1:
            have = dict(found)
            found = [(i, have.get(i) or EntryError("entry missing"))
                     for i in range(start, last + 1)]
        return found

    def _resolve(self, connection, found: list, references: list) -> None:
        shared = dict(connection.execute(
            "SELECT digest, data FROM logsvc_hashes WHERE digest = ANY(%b)"
            " AND data IS NOT NULL", ([digest for *_, digest in references],),
            binary=True))
        for at, index, digest in references:
            data = shared.get(digest)
            if data is None:
                (first, head), = connection.execute("SELECT first, head FROM logsvc_counter")
                if index < first:
                    raise Trimmed(first, head)
                found[at] = (index, EntryError("entry missing"))
                continue
            data = bytes(data)
            found[at] = (index, data if entryHash(data) == digest else CORRUPT)

    # Retention

    def trim(self, retention, now: float):
        done: Deferred = Deferred()
        with self._wakeup:
            refusal = self._refusal()
            if refusal is not None:
                return fail(refusal)
            self._trims.append((retention, now, done))
            self._wakeup.notify()
        return done

    def _trimStep(self) -> None:
        """
        Delete up to L{TRIM_STEP} entries of the oldest pending trim, whole chunks, in
        one transaction that holds the counter (so commits on any node take turns).
        """
        import psycopg
        retention, now, done = self._trims[0]
        try:
            self._ensureWriter()
            write = self._writer()
            first, end, target = trimStep(write, retention, now)
            if not hasattr(done, "before"):
                done.before = first
            write.commit()
        except (psycopg.Error, StoreError) as e:
            if isinstance(e, psycopg.Error):
                self._rollback()
            self._trims.pop(0)
            error = StoreError(f"cannot apply retention to store {self._where()}: "
                               f"{oneLine(e)}")
            self._reactor.callFromThread(done.errback, error)
            return
        self._indexed = max(self._indexed, end - 1)
        self._reactor.callFromThread(self._trimmed, end)
        if end >= target:
            self._trims.pop(0)
            self._reactor.callFromThread(done.callback, (done.before, end))

    def _trimmed(self, first: int) -> None:
        self._announcedFirst = max(self._announcedFirst, first)

    # Deduplicating

    def deduplicationLag(self):
        """
        Entries committed (by any node) but not yet deduplicated, as the writer thread
        knows them: it learns how far another node's indexer came while it waits.
        """
        return succeed(max(0, self._headSeen - self._indexed))

    def _lag(self) -> int:
        """Entries this node knows are not yet deduplicated (none while paused)."""
        return self._headSeen - self._indexed if self._indexing else 0

    def _indexStep(self) -> None:
        """
        Deduplicate the next L{INDEX_STEP} entries or so, in the writer thread, under
        the indexer's row lock: one node at a time, and a node that finds it taken
        only learns how far the other has come.
        """
        import psycopg
        write = self._write
        try:
            self._ensureWriter()
            write = self._writer()
            row = write.execute("SELECT indexed FROM logsvc_indexed"
                                " FOR UPDATE SKIP LOCKED").fetchone()
            if row is None:
                (self._indexed,), = write.execute("SELECT indexed FROM logsvc_indexed")
            else:
                self._indexed = deduplicate(write, row[0])
            write.commit()
        except (psycopg.Error, StoreError) as e:
            if write is not None and isinstance(e, psycopg.Error):
                self._rollback()
            self._indexing = False
            self.log.warn("{store}: deduplication paused until the next commit: {error}",
                          store=self, error=oneLine(e))

    # The rest of the interface

    def follow(self, callback):
        return self._followers.add(callback)

    def addCommitObserver(self, observer) -> None:
        self._commitObservers.append(observer)
