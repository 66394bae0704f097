"""
One behaviour suite for every journal store, run against the real reactor (the SQLite
store really commits from its writer thread), plus what only a file can show: reopening,
open errors, disk faults and corrupt rows.
"""

import errno
import os
import sqlite3
import threading

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from logsvc.errors import EntryError, StoreError
from logsvc.interfaces import IJournalStore
from logsvc.memorystore import MemoryStore
from logsvc.postgresql import PostgreSQLStore
from logsvc.postgresql import indexer as pgIndexer
from logsvc.postgresql import schema as pgSchema
from logsvc.postgresql import store as pgStore
from logsvc.sqlite import SQLiteStore, indexer, writer
from logsvc import store as storeModule
from logsvc.store import RecentWrites, canonical
from logsvc.stores import storeFromString
from tests.stores import appendOne, entry, temporaryPath


class StoreBehaviour:
    """Mixed into a TestCase whose C{makeStore()} returns an unopened store."""

    @inlineCallbacks
    def setUp(self):
        self.store = self.makeStore()
        yield self.store.open()
        self.addCleanup(self.store.close)

    def test_interface(self):
        self.assertTrue(verifyObject(IJournalStore, self.store))

    @inlineCallbacks
    def test_emptyHeadIsZero(self):
        self.assertEqual((yield self.store.head()), 0)
        self.assertEqual((yield self.store.read(1, 10)), [])

    @inlineCallbacks
    def test_denseIndicesFromOne(self):
        indices = []
        for n in range(3):
            indices.append((yield appendOne(self.store, entry(n))))
        self.assertEqual(indices, [1, 2, 3])
        self.assertEqual((yield self.store.head()), 3)

    @inlineCallbacks
    def test_identicalEntriesGetDistinctIndices(self):
        first = yield appendOne(self.store, entry(1))
        second = yield appendOne(self.store, entry(1))
        self.assertEqual((first, second), (1, 2))
        self.assertEqual((yield self.store.read(1, 10)), [(1, entry(1)), (2, entry(1))])

    @inlineCallbacks
    def test_readPages(self):
        yield gatherResults([appendOne(self.store, entry(n)) for n in range(10)])
        pages = yield gatherResults([self.store.read(start, 4) for start in (1, 5, 9, 11)])
        self.assertEqual(pages, [[(i, entry(i - 1)) for i in range(1, 5)],
                                 [(i, entry(i - 1)) for i in range(5, 9)],
                                 [(9, entry(8)), (10, entry(9))],
                                 []])
        self.assertEqual((yield self.store.read(0, 1)), [(1, entry(0))])

    @inlineCallbacks
    def test_noDeduplicationLagOnceIdle(self):
        yield gatherResults([appendOne(self.store, entry(n % 2)) for n in range(4)])
        for _ in range(500):
            if (yield self.store.deduplicationLag()) == 0:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((yield self.store.deduplicationLag()), 0)

    @inlineCallbacks
    def test_followDeliversInOrder(self):
        batches: list = []
        self.store.follow(batches.append)
        yield gatherResults([appendOne(self.store, entry(n)) for n in range(50)])
        yield self.store.close()
        self.assertEqual([pair for batch in batches for pair in batch],
                         [(i + 1, entry(i)) for i in range(50)])

    @inlineCallbacks
    def test_cancelledFollowerGetsNothing(self):
        batches: list = []
        self.store.follow(batches.append).cancel()
        yield appendOne(self.store, entry(1))
        yield self.store.close()
        self.assertEqual(batches, [])

    @inlineCallbacks
    def test_ackedEntryIsReadableAtOnceAndAckedBeforeFollowed(self):
        events: list = []
        self.store.follow(lambda batch: events.append(("followed", batch[-1][0])))

        def acked(index):
            events.append(("acked", index))
            return gatherResults([self.store.head(), self.store.read(index, 1)])
        seen = yield appendOne(self.store, entry(1)).addCallback(acked)
        yield self.store.close()
        self.assertEqual(seen, [1, [(1, entry(1))]])
        self.assertEqual(events, [("acked", 1), ("followed", 1)])

    @inlineCallbacks
    def test_failingFollowerDoesNotStopOthers(self):
        def broken(batch):
            raise RuntimeError("follower bug")
        seen: list = []
        self.store.follow(broken)
        self.store.follow(seen.extend)
        self.assertEqual((yield appendOne(self.store, entry(1))), 1)
        yield self.store.close()
        self.assertEqual(seen, [(1, entry(1))])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @inlineCallbacks
    def test_retryWithSameIdAndContentGetsOriginalIndex(self):
        first = yield appendOne(self.store, entry(1), "a")
        yield appendOne(self.store, entry(2), "b")
        retried = yield appendOne(self.store, entry(1), "a")
        otherContent = yield appendOne(self.store, entry(3), "a")
        otherId = yield appendOne(self.store, entry(1), "c")
        anonymous = yield appendOne(self.store, entry(1))
        self.assertEqual((first, retried, otherContent, otherId, anonymous), (1, 1, 3, 4, 5))

    @inlineCallbacks
    def test_retriesInOneBatchShareAnIndex(self):
        indices = yield gatherResults([appendOne(self.store, entry(1), "same") for _ in range(5)]
                                      + [appendOne(self.store, entry(2), "other")])
        self.assertEqual(indices, [1, 1, 1, 1, 1, 2])
        self.assertEqual((yield self.store.head()), 2)

    @inlineCallbacks
    def test_batchMixingRetriesWithNewAndAnonymousWrites(self):
        yield self.store.append([entry(1), entry(2)], ["a", "b"])
        indices = yield self.store.append([entry(3), entry(2), entry(2), entry(4), entry(3)],
                                          ["c", "b", None, "d", "c"])
        self.assertEqual(indices, [3, 2, 4, 5, 3])
        self.assertEqual((yield self.store.head()), 5)
        self.assertEqual((yield appendOne(self.store, entry(4), "d")), 5)

    @inlineCallbacks
    def test_concurrentAppendsLandDensely(self):
        count = 3000
        indices = yield gatherResults([appendOne(self.store, entry(n), f"w{n}")
                                       for n in range(count)])
        self.assertEqual(sorted(indices), list(range(1, count + 1)))
        stored = yield self.store.read(1, count + 10)
        self.assertEqual(stored, [(i, entry(n)) for n, i in enumerate(indices)])

    @inlineCallbacks
    def test_commitObserversCountEntries(self):
        counted: list = []
        self.store.addCommitObserver(lambda seconds, count: counted.append((seconds, count)))
        yield gatherResults([appendOne(self.store, entry(n)) for n in range(20)])
        yield self.store.close()
        self.assertEqual(sum(count for _, count in counted), 20)
        self.assertTrue(all(seconds >= 0 for seconds, _ in counted))

    @inlineCallbacks
    def test_checkWhenWritable(self):
        self.assertIsNone((yield self.store.check()))

    @inlineCallbacks
    def test_closeCommitsEverythingQueued(self):
        appended = [appendOne(self.store, entry(n)) for n in range(500)]
        yield self.store.close()
        self.assertEqual((yield gatherResults(appended)), list(range(1, 501)))


class PersistentStoreBehaviour(StoreBehaviour):
    """What every store that outlives its process shows; C{reopen()} closes and opens."""

    @inlineCallbacks
    def reopen(self):
        yield self.store.close()
        self.store = self.makeStore()
        yield self.store.open()
        self.addCleanup(self.store.close)

    @inlineCallbacks
    def test_reopenKeepsEntriesAndRetryWindow(self):
        yield gatherResults([appendOne(self.store, entry(n), f"w{n}") for n in range(10)])
        yield self.reopen()
        self.assertEqual((yield self.store.head()), 10)
        self.assertEqual((yield appendOne(self.store, entry(3), "w3")), 4)
        self.assertEqual((yield appendOne(self.store, entry(3), "new")), 11)
        self.assertEqual((yield self.store.read(10, 5)), [(10, entry(9)), (11, entry(3))])

    @inlineCallbacks
    def test_anyWriteIdIsKeptAcrossRestarts(self):
        """A write id that UTF-8 cannot encode (a lone surrogate, which JSON allows)
        fails nothing: not its own write, nor the others committed with it."""
        ids = ["\ud800", "caf\u00e9 \U0001f600", '"quoted"\n']
        self.assertEqual((yield self.store.append([entry(n) for n in range(3)], ids)),
                         [1, 2, 3])
        yield self.reopen()
        self.assertEqual((yield self.store.append([entry(n) for n in range(3)], ids)),
                         [1, 2, 3])

    @inlineCallbacks
    def test_closedStoreRefusesWork(self):
        yield self.store.close()
        for attempt in (appendOne(self.store, entry(1)), self.store.read(1, 1),
                        self.store.check()):
            yield self.assertFailure(attempt, StoreError)


class DeduplicationBehaviour:
    """
    Content addressing, as every deduplicating store shows it: identical content is
    stored once, however and whenever its copies were written, and reads as before.
    Mixed in with C{idleModule} and C{stepModule} (where the store keeps
    C{INDEX_WHEN_IDLE} and C{INDEX_STEP}), C{writer()} (what holds C{_wakeup}),
    C{deduplicated()} (wait until the
    indexer has caught up) and C{stored()} (every content the store holds, once per
    copy of it on disk).
    """

    @inlineCallbacks
    def test_identicalContentStoredOnce(self):
        yield gatherResults([appendOne(self.store, entry(1)) for _ in range(3)])
        yield self.store.append([entry(2), entry(1)])
        yield self.deduplicated()
        self.assertEqual(sorted(self.stored()), [entry(1), entry(2)])
        self.assertEqual((yield self.store.read(1, 10)),
                         [(1, entry(1)), (2, entry(1)), (3, entry(1)), (4, entry(2)),
                          (5, entry(1))])

    @inlineCallbacks
    def test_lagUntilIndexed(self):
        """Entries count as lagging from their commit until the indexer has run, which
        waits for writes to pause."""
        self.patch(self.idleModule, "INDEX_WHEN_IDLE", 60.0)
        yield self.store.append([entry(1), entry(1), entry(2)])
        self.assertEqual((yield self.store.deduplicationLag()), 3)
        self.assertEqual(sorted(self.stored()), [entry(1), entry(1), entry(2)])
        with self.writer()._wakeup:
            self.patch(self.idleModule, "INDEX_WHEN_IDLE", 0.0)
            self.writer()._wakeup.notify()
        yield self.deduplicated()
        self.assertEqual((yield self.store.deduplicationLag()), 0)
        self.assertEqual(sorted(self.stored()), [entry(1), entry(2)])

    @inlineCallbacks
    def test_copiesFoundAcrossStepsAndRestarts(self):
        self.patch(self.stepModule, "INDEX_STEP", 3)
        for n in [0, 1, 2, 1, 3, 4, 3]:
            yield appendOne(self.store, entry(n))
        yield self.deduplicated()
        yield self.reopen()
        for n in [4, 0, 3, 5]:
            yield appendOne(self.store, entry(n))
        yield self.deduplicated()
        self.assertEqual(sorted(self.stored()), [entry(n) for n in range(6)])
        self.assertEqual([data for _, data in (yield self.store.read(1, 20))],
                         [entry(n) for n in [0, 1, 2, 1, 3, 4, 3, 4, 0, 3, 5]])


class RecentWritesTests(unittest.TestCase):

    def test_remembersAtLeastTheLastSize(self):
        recent = RecentWrites(size=4)
        for n in range(20):
            recent.add(f"w{n}", b"d", n)
            remembered = [m for m in range(n + 1) if recent.get(f"w{m}", b"d") == m]
            self.assertEqual(remembered[-4:], list(range(max(0, n - 3), n + 1)))
            self.assertLessEqual(len(remembered), 6)
        self.assertIsNone(recent.get("w0", b"d"))

    def test_commitsAtOnce(self):
        recent = RecentWrites(size=4)
        recent.update({("a", b"1"): 1, ("b", b"2"): 2})
        self.assertEqual((recent.get("a", b"1"), recent.get("a", b"2")), (1, None))
        self.assertTrue(recent.allNew([("a", b"2"), ("c", b"1")], {}))
        self.assertFalse(recent.allNew([("c", b"1"), ("b", b"2")], {}))
        self.assertFalse(recent.allNew([("c", b"1"), ("c", b"1")], {}))
        self.assertFalse(recent.allNew([("c", b"1")], {("c", b"1"): 3}))
        recent.update({(f"x{n}", b"3"): n for n in range(10)})
        self.assertEqual((recent.get("x9", b"3"), recent.get("a", b"1")), (9, 1))


class MemoryStoreTests(StoreBehaviour, unittest.TestCase):
    def makeStore(self):
        return MemoryStore(reactor)


class SQLiteStoreTests(PersistentStoreBehaviour, DeduplicationBehaviour, unittest.TestCase):
    idleModule = writer
    stepModule = indexer

    def writer(self):
        return self.store._writer

    def makeStore(self, sync: str = "always"):
        if not hasattr(self, "path"):
            self.path = temporaryPath(self)
        return SQLiteStore(reactor, self.path, sync=sync)

    def rows(self, query: str) -> list:
        with sqlite3.connect(self.path) as connection:
            return connection.execute(query).fetchall()

    @inlineCallbacks
    def deduplicated(self):
        """Wait until the indexer has caught up with the head."""
        while (yield self.store.deduplicationLag()):
            yield deferLater(reactor, 0.01, lambda: None)

    def records(self) -> list:
        """Every stored record, in index order: entries, or C{=INDEX} references."""
        return [record for (data,) in self.rows("SELECT data FROM chunks ORDER BY first")
                for record in data.split(b"\n")]

    def stored(self) -> list:
        return ([record for record in self.records() if record[:1] != b"="]
                + [data for (data,) in self.rows("SELECT data FROM blobs")])

    @inlineCallbacks
    def test_identicalEntriesStoredOnce(self):
        yield gatherResults([appendOne(self.store, entry(1)) for _ in range(3)])
        yield appendOne(self.store, entry(1))
        yield self.deduplicated()
        self.assertEqual(self.records(), [entry(1), b"=1", b"=1", b"=1"])
        self.assertEqual((yield self.store.read(1, 10)), [(i, entry(1)) for i in range(1, 5)])

    @inlineCallbacks
    def test_deduplicationLag(self):
        """Entries count as lagging from their commit until the indexer has run."""
        self.patch(writer, "INDEX_WHEN_IDLE", 60.0)
        yield self.store.append([entry(1), entry(1), entry(2)])
        self.assertEqual((yield self.store.deduplicationLag()), 3)
        self.store._writer._wakeup.acquire()
        self.patch(writer, "INDEX_WHEN_IDLE", 0.0)
        self.store._writer._wakeup.notify()
        self.store._writer._wakeup.release()
        yield self.deduplicated()
        self.assertEqual((yield self.store.deduplicationLag()), 0)
        self.assertEqual(self.records(), [entry(1), b"=1", entry(2)])

    @inlineCallbacks
    def test_identicalEntriesStoredOnceAcrossStepsAndRestarts(self):
        """Hashes are found whether indexed in this step, an earlier one, or before a
        restart; entries not yet indexed at a restart are indexed after it."""
        self.patch(indexer, "INDEX_STEP", 3)
        for n in [0, 1, 2, 1, 3, 4, 3]:
            yield appendOne(self.store, entry(n))
        yield self.deduplicated()
        yield self.reopen()
        yield self.store.close()
        with sqlite3.connect(self.path) as connection:
            connection.execute("UPDATE meta SET value = 5 WHERE key = 'indexed'")
            connection.execute("DELETE FROM hashes WHERE idx > 5")
        self.store = self.makeStore()
        yield self.store.open()
        for n in [4, 0, 3, 5]:
            yield appendOne(self.store, entry(n))
        yield self.deduplicated()
        self.assertEqual(self.records(), [entry(0), entry(1), entry(2), b"=2", entry(3),
                                          entry(4), b"=5", b"=6", b"=1", b"=5", entry(5)])
        self.assertEqual(self.rows("SELECT count(*) FROM hashes"), [(6,)])
        self.assertEqual([data for _, data in (yield self.store.read(1, 20))],
                         [entry(n) for n in [0, 1, 2, 1, 3, 4, 3, 4, 0, 3, 5]])

    @inlineCallbacks
    def test_indexerTakesTurnsWhenTooFarBehind(self):
        """Past INDEX_MAX_LAG, an indexing step runs between two commits even when
        writes are already waiting (they never leave the writer idle)."""
        self.patch(writer, "INDEX_MAX_LAG", 2)
        self.patch(writer, "INDEX_WHEN_IDLE", 60.0)
        steps, release = [], threading.Event()
        commit, index = self.store._writer._commit, self.store._writer._index

        def blockedCommit(batch, probes):
            steps.append("commit")
            if len(steps) == 1:
                release.wait(10)
            commit(batch, probes)

        def recordedIndex():
            steps.append("index")
            index()

        self.store._writer._commit, self.store._writer._index = blockedCommit, recordedIndex
        first = self.store.append([entry(n) for n in range(5)])
        while not steps:
            yield deferLater(reactor, 0.001, lambda: None)
        second = self.store.append([entry(n) for n in range(5, 10)])
        release.set()
        self.assertEqual((yield gatherResults([first, second])),
                         [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
        self.assertEqual(steps[:3], ["commit", "index", "commit"])

    @inlineCallbacks
    def test_batchesAreSplitIntoChunks(self):
        """A batch becomes rows of at most CHUNK_ENTRIES entries or about CHUNK_BYTES;
        reads across row boundaries, and ids, come back right."""
        self.patch(storeModule, "CHUNK_ENTRIES", 4)
        self.patch(storeModule, "CHUNK_BYTES", 200)
        big = canonical({"big": "x" * 300})
        entries = [entry(n) for n in range(10)] + [big, entry(10)]
        ids = [f"w{n}" if n % 3 == 0 else None for n in range(12)]
        self.assertEqual((yield self.store.append(entries, ids)), list(range(1, 13)))
        self.assertEqual(self.rows("SELECT first, count FROM chunks ORDER BY first"),
                         [(1, 4), (5, 4), (9, 2), (11, 1), (12, 1)])
        for start in range(1, 13):
            self.assertEqual((yield self.store.read(start, 5)),
                             list(zip(range(start, 13), entries[start - 1:start + 4])))
        yield self.reopen()
        retried = yield self.store.append([entries[n] for n in (0, 3, 9)], ["w0", "w3", "w9"])
        self.assertEqual(retried, [1, 4, 10])


    @inlineCallbacks
    def test_preallocatedWALRecoversAfterACrash(self):
        """The WAL starts at the size it reaches between checkpoints, and its zeroed
        tail does not confuse recovery: a copy of the files taken while the store is
        open (what a crash leaves) opens with every committed entry."""
        wal = self.path + "-wal"
        pageSize = self.rows("PRAGMA page_size")[0][0]
        frames = (os.path.getsize(wal) - writer.WAL_HEADER) // (
            writer.WAL_FRAME_HEADER + pageSize)
        self.assertGreaterEqual(frames, writer.CHECKPOINT_PAGES)
        for n in range(20):
            yield appendOne(self.store, entry(n), f"w{n}")
        crashed = temporaryPath(self)
        for suffix in ("", "-wal"):
            with open(self.path + suffix, "rb") as source, open(crashed + suffix, "wb") as copy:
                copy.write(source.read())
        recovered = SQLiteStore(reactor, crashed)
        yield recovered.open()
        self.addCleanup(recovered.close)
        self.assertEqual((yield recovered.head()), 20)
        self.assertEqual((yield recovered.read(1, 30)),
                         [(n + 1, entry(n)) for n in range(20)])
        self.assertEqual((yield appendOne(recovered, entry(5), "w5")), 6)


    @inlineCallbacks
    def test_syncOs(self):
        yield self.store.close()
        self.store = self.makeStore(sync="os")
        yield self.store.open()
        self.addCleanup(self.store.close)
        self.assertEqual((yield appendOne(self.store, entry(1))), 1)
        self.assertEqual(self.rows("PRAGMA journal_mode"), [("wal",)])

    def test_unknownSyncMode(self):
        error = self.assertRaises(StoreError, SQLiteStore, reactor, "x.db", sync="sometimes")
        self.assertIn("unknown sync mode", str(error))

    def test_fromString(self):
        store = storeFromString(reactor, "sqlite:" + temporaryPath(self), sync="os")
        self.assertIsInstance(store, SQLiteStore)

    @inlineCallbacks
    def test_damagedRowsReadAsEntryErrors(self):
        """Changed content, a lost row, a row whose records do not match its count, and
        a reference whose original was lost: each entry it touches reads as an error,
        and the entries around it are unaffected."""
        for n in [0, 1, 2, 3, 0, 4]:
            yield appendOne(self.store, entry(n))
        yield self.deduplicated()
        with sqlite3.connect(self.path) as connection:
            connection.execute("UPDATE chunks SET data = ? WHERE first = 2", (b'{"n":666}',))
            connection.execute("DELETE FROM chunks WHERE first = 3")
            connection.execute("UPDATE chunks SET data = ? WHERE first = 4",
                               (entry(3) + b"\n" + entry(3),))
            connection.execute("DELETE FROM chunks WHERE first = 1")
        self.assertEqual((yield self.store.read(1, 6)), [
            (1, EntryError("entry missing")),
            (2, EntryError("entry corrupt: content does not match its hash")),
            (3, EntryError("entry missing")),
            (4, EntryError("entry corrupt: its chunk is damaged")),
            (5, EntryError("entry corrupt: content does not match its hash")),
            (6, entry(4))])


class SQLiteOpenTests(unittest.TestCase):
    """A store that cannot be opened says why in one line."""

    def failure(self, path: str) -> str:
        store = SQLiteStore(reactor, path)
        return str(self.failureResultOf(store.open(), StoreError).value)

    def test_missingDirectory(self):
        self.assertEqual(self.failure("/nonexistent/x.db"),
                         "cannot open store sqlite:/nonexistent/x.db: "
                         "unable to open database file")

    def test_notADatabase(self):
        path = temporaryPath(self)
        with open(path, "wb") as f:
            f.write(b"this is not sqlite" * 100)
        self.assertEqual(self.failure(path),
                         f"cannot open store sqlite:{path}: file is not a database")

    def test_readOnlyFile(self):
        if os.geteuid() == 0:
            raise unittest.SkipTest("root can write read-only files")
        path = temporaryPath(self)
        sqlite3.connect(path).close()
        os.chmod(path, 0o444)
        self.assertIn("readonly", self.failure(path))

    @inlineCallbacks
    def test_inUseByAnotherStore(self):
        path = temporaryPath(self)
        first = SQLiteStore(reactor, path)
        yield first.open()
        self.addCleanup(first.close)
        self.assertEqual(self.failure(path),
                         f"cannot open store sqlite:{path}: in use by another process")

    @inlineCallbacks
    def test_opensWithoutRoomToPreallocateTheWAL(self):
        """Preallocating the WAL is only a speed-up: a disk too full for it (here the
        first write of zeros fails) leaves the WAL as it was and the store works."""
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def noSpace(fd, data, offset):
            raise full

        self.patch(writer.os, "pwrite", noSpace)
        path = temporaryPath(self)
        store = SQLiteStore(reactor, path)
        yield store.open()
        self.addCleanup(store.close)
        self.assertLess(os.path.getsize(path + "-wal"), 1 << 20)
        self.assertEqual((yield appendOne(store, entry(1))), 1)
        self.assertEqual((yield store.read(1, 5)), [(1, entry(1))])


class PostgreSQLStoreTests(PersistentStoreBehaviour, DeduplicationBehaviour,
                           unittest.TestCase):
    """The same behaviour on PostgreSQL, a fresh database per test."""

    idleModule = pgStore
    stepModule = pgIndexer

    def writer(self):
        return self.store

    def makeStore(self):
        from tests.postgres import sharedCluster, skipUnlessAvailable
        skipUnlessAvailable(self)
        if not hasattr(self, "uri"):
            self.uri = sharedCluster().database()
        return PostgreSQLStore(reactor, self.uri)

    def rows(self, query: str, *args) -> list:
        """Run one statement in a transaction of its own; its rows, if any."""
        import psycopg
        with psycopg.connect(self.uri) as connection:
            cursor = connection.execute(query, args or None)
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in cursor] if cursor.description else []

    @inlineCallbacks
    def deduplicated(self, store=None):
        """Wait until every node's entries are deduplicated."""
        while (yield (store or self.store).deduplicationLag()) > 0:
            yield deferLater(reactor, 0.01, lambda: None)

    def stored(self) -> list:
        return ([record for (data,) in self.rows("SELECT data FROM logsvc_chunks")
                 for record in data.split(b"\n") if record != pgIndexer.REFERENCE]
                + [data for (data,) in self.rows(
                    "SELECT data FROM logsvc_hashes WHERE data IS NOT NULL")])

    @inlineCallbacks
    def test_nodesShareOneIndex(self):
        """Two stores on one database (two nodes) writing the same entries: each
        content stored once, whichever node indexed it."""
        other = PostgreSQLStore(reactor, self.uri)
        yield other.open()
        self.addCleanup(other.close)
        for n in range(6):
            yield gatherResults([appendOne(store, entry(n % 3))
                                 for store in (self.store, other)])
        yield self.deduplicated()
        yield self.deduplicated(other)
        self.assertEqual(sorted(self.stored()), [entry(n) for n in range(3)])
        self.assertEqual([data for _, data in (yield other.read(1, 20))],
                         [entry(n % 3) for n in range(6) for _ in range(2)])

    @inlineCallbacks
    def test_followersOnEveryNodeGetEveryCommitOnceInOrder(self):
        """Two stores on one database writing at once: each one's followers get its
        own commits and the other's, each entry once, in index order."""
        other = PostgreSQLStore(reactor, self.uri)
        yield other.open()
        self.addCleanup(other.close)
        seen: dict = {self.store: [], other: []}
        for store, batches in seen.items():
            store.follow(batches.extend)
        yield gatherResults([appendOne(store, entry(n), f"{name}{n}")
                             for n in range(300) for name, store in zip("ab", seen)])
        for _ in range(500):
            if all(len(batches) >= 600 for batches in seen.values()):
                break
            yield deferLater(reactor, 0.01, lambda: None)
        stored = yield self.store.read(1, 700)
        self.assertEqual(len(stored), 600)
        for batches in seen.values():
            self.assertEqual(batches, stored)

    @inlineCallbacks
    def test_damagedCopiesReadAsEntryErrors(self):
        """Content shared by copies that no longer matches its digest, or lost: every
        copy reads as an error; a damaged copy is never taken as the content."""
        yield self.store.append([entry(n) for n in [0, 1, 0, 1, 2]])
        yield self.deduplicated()
        self.rows("UPDATE logsvc_hashes SET data = %s WHERE data = %s", entry(9), entry(0))
        self.rows("DELETE FROM logsvc_hashes WHERE data = %s", entry(1))
        self.assertEqual((yield self.store.read(1, 5)), [
            (1, EntryError("entry corrupt: content does not match its hash")),
            (2, EntryError("entry missing")),
            (3, EntryError("entry corrupt: content does not match its hash")),
            (4, EntryError("entry missing")),
            (5, entry(2))])

    @inlineCallbacks
    def test_commitThatReportedAnErrorStillReachesFollowers(self):
        """A commit that reached the database although the writer got an error (the
        answer to COMMIT lost): its write is refused, yet followers get its entry
        once, read back, and the retry gets its index."""
        import psycopg
        self.patch(pgStore, "POLL", 60.0)   # no poll reads what a notification skipped
        yield deferLater(reactor, 1.2, lambda: None)    # listening, on the new POLL
        seen: list = []
        self.store.follow(seen.extend)
        yield appendOne(self.store, entry(0), "w0")
        connection = self.store._write
        commit = connection.commit

        def lostAnswer():
            commit()
            connection.commit = commit
            raise psycopg.OperationalError("the answer to COMMIT was lost")

        connection.commit = lostAnswer
        yield self.assertFailure(appendOne(self.store, entry(1), "w1"), StoreError)
        self.assertEqual((yield appendOne(self.store, entry(1), "w1")), 2)
        self.assertEqual((yield appendOne(self.store, entry(2), "w2")), 3)
        for _ in range(300):
            if len(seen) >= 3:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(seen, [(1, entry(0)), (2, entry(1)), (3, entry(2))])

    @inlineCallbacks
    def test_retryOnAnotherNodeGetsOriginalIndex(self):
        """A retry reaching another node at once, before that node has heard of the
        write, gets the original index; so do retries among new writes there."""
        other = PostgreSQLStore(reactor, self.uri)
        yield other.open()
        self.addCleanup(other.close)
        for n in range(20):
            index = yield appendOne(self.store, entry(n), f"a{n}")
            self.assertEqual((yield appendOne(other, entry(n), f"a{n}")), index)
        given = yield other.append([entry(100), entry(3), entry(101)], ["b0", "a3", "b1"])
        self.assertEqual(given, [21, 4, 22])
        self.assertEqual((yield self.store.append([entry(101), entry(100)], ["b1", "b0"])),
                         [22, 21])
        self.assertEqual(self.rows("SELECT max(first + count - 1) FROM logsvc_chunks"),
                         [(22,)])

    def downgrade(self, version: int) -> None:
        """Make the closed journal look as schema C{version} left it: a row per
        identified write in logsvc_writes, no ids in chunks; before 2, no hashes."""
        self.rows("CREATE TABLE logsvc_writes (key bigint NOT NULL, id bytea NOT NULL,"
                  " digest bytea NOT NULL, idx bigint NOT NULL)")
        self.rows("INSERT INTO logsvc_writes SELECT 0, convert_to(w->>1, 'UTF8'),"
                  " substring(c.digests FROM ((w->>0)::int - c.first::int) * 32 + 1 FOR 32),"
                  " (w->>0)::bigint FROM logsvc_chunks c, json_array_elements(c.ids::json) w")
        self.rows("ALTER TABLE logsvc_chunks DROP COLUMN ids")
        self.rows("DROP TABLE logsvc_retries")
        if version == 1:
            self.rows("DROP TABLE logsvc_hashes, logsvc_indexed")
            self.rows("ALTER TABLE logsvc_writes DROP COLUMN key, ADD PRIMARY KEY (id, digest)")
        self.rows("UPDATE logsvc_meta SET value = %s WHERE key = 'schema'", str(version))

    @inlineCallbacks
    def upgraded(self, version: int):
        """A journal of schema C{version} opens upgraded: its entries read as before,
        it is deduplicated, and a retry of a write from before gets its index."""
        yield self.store.append([entry(n) for n in [1, 2, 1]], ["a", "b", "c"])
        yield self.store.close()
        self.downgrade(version)
        self.store = self.makeStore()
        yield self.store.open()
        self.addCleanup(self.store.close)
        self.assertEqual(self.rows("SELECT value FROM logsvc_meta WHERE key = 'schema'"),
                         [(str(pgSchema.SCHEMA_VERSION),)])
        self.assertEqual(self.rows("SELECT to_regclass('logsvc_writes')"), [(None,)])
        yield self.deduplicated()
        self.assertEqual(sorted(self.stored()), [entry(1), entry(2)])
        self.assertEqual([data for _, data in (yield self.store.read(1, 5))],
                         [entry(1), entry(2), entry(1)])
        self.assertEqual((yield self.store.append([entry(2), entry(1)], ["b", "a"])), [2, 1])
        self.assertEqual((yield self.store.append([entry(1)], ["c"])), [3])
        yield self.reopen()
        self.assertEqual((yield self.store.append([entry(2), entry(1)], ["b", "c"])), [2, 3])

    def test_versionOneJournalIsUpgraded(self):
        return self.upgraded(1)

    def test_versionTwoJournalIsUpgraded(self):
        return self.upgraded(2)

