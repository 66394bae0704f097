"""
Retention on every store: each limit alone and together, C{first} and C{head} after
trims (and, for SQLite and PostgreSQL, across restarts), reads below C{first},
deduplicated entries after their first copy is gone, retries of deleted writes, and what
only a file can show: space reused, the schema upgrade, commits taking turns with a trim.
"""

import sqlite3
import time

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from logsvc import memorystore
from logsvc import store as storeModule
from logsvc.errors import Trimmed
from logsvc.memorystore import MemoryStore
from logsvc.postgresql import store as pgStore
from logsvc.postgresql import trimmer as pgTrimmer
from logsvc.retention import Retention
from logsvc.sqlite import SQLiteStore, schema, trimmer, writer
from logsvc.store import canonical
from tests.stores import appendOne, entry, temporaryPath


SIZE = len(entry(0))


class RetentionBehaviour:
    """Mixed into a TestCase whose C{makeStore()} returns an unopened store."""

    @inlineCallbacks
    def setUp(self):
        self.patch(memorystore, "TIME_STEP", 0.0)
        self.patch(writer, "TIME_STEP", 0.0)
        self.patch(pgStore, "TIME_STEP", 0.0)
        self.store = self.makeStore()
        yield self.store.open()
        self.addCleanup(lambda: self.store.close())

    @inlineCallbacks
    def fill(self, numbers, writeId=None):
        """One commit per entry, so that SQLite's batches are single entries."""
        indices = []
        for n in numbers:
            indices.append((yield appendOne(self.store, entry(n % 10),
                                            writeId and f"{writeId}{n}")))
        return indices

    @inlineCallbacks
    def bounds(self):
        return ((yield self.store.first()), (yield self.store.head()))

    @inlineCallbacks
    def test_newJournal(self):
        self.assertEqual((yield self.bounds()), (1, 0))
        self.assertEqual((yield self.store.trim(Retention(entries=1), time.time())), (1, 1))

    @inlineCallbacks
    def test_entriesAlone(self):
        yield self.fill(range(10))
        self.assertEqual((yield self.store.trim(Retention(entries=4), time.time())), (1, 7))
        self.assertEqual((yield self.bounds()), (7, 10))
        self.assertEqual((yield self.store.read(7, 10)), [(i, entry(i - 1)) for i in range(7, 11)])
        trimmed = yield self.assertFailure(self.store.read(1, 10), Trimmed)
        self.assertEqual((trimmed.first, trimmed.head), (7, 10))
        yield self.assertFailure(self.store.read(6, 10), Trimmed)
        # A limit already met deletes nothing more.
        self.assertEqual((yield self.store.trim(Retention(entries=4), time.time())), (7, 7))
        self.assertEqual((yield self.fill([10])), [11])

    @inlineCallbacks
    def test_ageAlone(self):
        """Entries committed before now - D go, but the last commit at or before that
        moment stays: only the next commit's time proves it is older."""
        yield self.fill(range(3))
        yield deferLater(reactor, 0.05, lambda: None)
        mark = time.time()
        yield deferLater(reactor, 0.05, lambda: None)
        yield self.fill(range(3, 6))
        self.assertEqual((yield self.store.trim(Retention(seconds=60), mark + 30)), (1, 1))
        self.assertEqual((yield self.store.trim(Retention(seconds=60), mark + 60)), (1, 3))
        self.assertEqual((yield self.bounds()), (3, 6))
        self.assertEqual((yield self.store.trim(Retention(seconds=60), time.time() + 61)),
                         (3, 6))

    @inlineCallbacks
    def test_bytesAlone(self):
        yield self.fill(range(10))
        self.assertEqual((yield self.store.trim(Retention(bytes=3 * SIZE + 1), time.time())),
                         (1, 7))
        self.assertEqual((yield self.store.trim(Retention(bytes=3 * SIZE), time.time())),
                         (7, 8))
        self.assertEqual((yield self.bounds()), (8, 10))

    @inlineCallbacks
    def test_limitsTogetherKeepWhatAnyNeeds(self):
        yield self.fill(range(10))
        later = time.time() + 3600
        both = Retention(entries=5, seconds=60, bytes=2 * SIZE)
        self.assertEqual((yield self.store.trim(both, later)), (1, 6))
        both = Retention(entries=2, seconds=60, bytes=4 * SIZE)
        self.assertEqual((yield self.store.trim(both, later)), (6, 7))
        self.assertEqual((yield self.store.trim(Retention(entries=1), later)), (7, 10))
        nothing = Retention(entries=1, seconds=3600)
        self.assertEqual((yield self.store.trim(nothing, time.time())), (10, 10))

    @inlineCallbacks
    def test_ageKeepsTheLastCommit(self):
        """However old, the last commit stays: only a later commit's time proves the
        age of its entries."""
        yield self.fill(range(4))
        self.assertEqual((yield self.store.trim(Retention(seconds=1), time.time() + 60)),
                         (1, 4))
        self.assertEqual((yield self.bounds()), (4, 4))
        yield self.fill([4])
        self.assertEqual((yield self.store.trim(Retention(seconds=1), time.time() + 60)),
                         (4, 5))
        self.assertEqual((yield self.store.read(5, 10)), [(5, entry(4))])

    @inlineCallbacks
    def test_identicalEntriesReadableAfterTheirFirstCopyIsGone(self):
        for n in [1, 2, 1, 3, 1, 4]:
            yield appendOne(self.store, entry(n))
        yield self.deduplicated()
        for first, expected in [(2, [2, 1, 3, 1, 4]), (4, [3, 1, 4]), (5, [1, 4]),
                                (6, [4])]:
            yield self.store.trim(Retention(entries=7 - first), time.time())
            self.assertEqual((yield self.store.first()), first)
            self.assertEqual([data for _, data in (yield self.store.read(first, 10))],
                             [entry(n) for n in expected])
        # Stored anew once no copy is left, and identical entries share it again.
        yield self.fill([1, 1])
        yield self.deduplicated()
        self.assertEqual((yield self.store.read(6, 10)),
                         [(6, entry(4)), (7, entry(1)), (8, entry(1))])

    @inlineCallbacks
    def test_retryOfADeletedWriteGetsItsOriginalIndex(self):
        yield self.fill(range(5), writeId="w")
        yield self.store.trim(Retention(entries=1), time.time())
        self.assertEqual((yield self.bounds()), (5, 5))
        self.assertEqual((yield appendOne(self.store, entry(0), "w0")), 1)
        self.assertEqual((yield appendOne(self.store, entry(0), "other")), 6)

    def deduplicated(self):
        return None


class MemoryRetentionTests(RetentionBehaviour, unittest.TestCase):
    def makeStore(self):
        return MemoryStore(reactor)

    @inlineCallbacks
    def test_blobsAreFreed(self):
        yield self.fill([1, 1, 2])
        yield self.store.trim(Retention(entries=1), time.time())
        self.assertEqual(list(self.store._blobs.values()), [entry(2)])
        self.assertEqual(self.store._bytes, SIZE)


class PersistentRetentionBehaviour(RetentionBehaviour):
    """Retention on a store that outlives its process: what a trim leaves (bounds, the
    retry window) must be what a restart finds, on every such store alike."""

    @inlineCallbacks
    def reopen(self):
        yield self.store.close()
        self.store = self.makeStore()
        yield self.store.open()

    @inlineCallbacks
    def test_firstAndHeadAcrossRestarts(self):
        yield self.fill(range(6), writeId="w")
        yield self.store.trim(Retention(entries=2), time.time())
        yield self.reopen()
        self.assertEqual((yield self.bounds()), (5, 6))
        yield self.assertFailure(self.store.read(4, 1), Trimmed)
        self.assertEqual((yield appendOne(self.store, entry(1), "w1")), 2)
        yield self.store.trim(Retention(seconds=1), time.time() + 60)
        yield self.reopen()
        self.assertEqual((yield self.bounds()), (6, 6))
        self.assertEqual((yield self.fill([7])), [7])
        self.assertEqual((yield appendOne(self.store, entry(0), "w0")), 1)


class SQLiteRetentionTests(PersistentRetentionBehaviour, unittest.TestCase):
    def makeStore(self):
        if not hasattr(self, "path"):
            self.path = temporaryPath(self)
        return SQLiteStore(reactor, self.path)

    def rows(self, query: str, *args) -> list:
        with sqlite3.connect(self.path) as connection:
            return connection.execute(query, args).fetchall()

    @inlineCallbacks
    def deduplicated(self):
        while (yield self.store.deduplicationLag()):
            yield deferLater(reactor, 0.01, lambda: None)

    @inlineCallbacks
    def swept(self):
        """Wait until the indexer and the sweeper have nothing left to do."""
        yield self.deduplicated()
        while self.store._writer.indexer.unswept:
            yield deferLater(reactor, 0.01, lambda: None)

    @inlineCallbacks
    def test_wholeBatchesOnly(self):
        """A commit's chunk goes whole: at least N are kept, maybe more."""
        self.patch(storeModule, "CHUNK_ENTRIES", 4)
        yield self.store.append([entry(n) for n in range(10)])     # chunks 1, 5, 9
        self.assertEqual((yield self.store.trim(Retention(entries=5), time.time())),
                         (1, 5))
        self.assertEqual((yield self.store.trim(Retention(entries=2), time.time())),
                         (5, 9))

    @inlineCallbacks
    def test_blobsAreDroppedWithTheirLastCopy(self):
        yield self.fill([1, 1, 2, 1])
        yield self.deduplicated()
        yield self.store.trim(Retention(entries=3), time.time())
        self.assertEqual(self.rows("SELECT data FROM blobs"), [(entry(1),)])
        yield self.store.trim(Retention(entries=1), time.time())
        self.assertEqual((yield self.store.read(4, 1)), [(4, entry(1))])
        yield self.fill([5])
        yield self.deduplicated()
        yield self.store.trim(Retention(entries=1), time.time())
        yield self.swept()
        self.assertEqual(self.rows("SELECT count(*) FROM blobs"), [(0,)])
        self.assertEqual(self.rows("SELECT idx FROM hashes"), [(5,)])

    @inlineCallbacks
    def test_hashesOfDeletedEntriesAreSwept(self):
        """In idle time; an entry indexed before that is stored anew, never as a
        reference to a deleted one."""
        yield self.fill([1, 2, 3])
        yield self.deduplicated()
        yield self.store.trim(Retention(entries=2), time.time())
        yield self.fill([1])
        yield self.swept()
        self.assertEqual(sorted(self.rows("SELECT idx FROM hashes")), [(2,), (3,), (4,)])
        self.assertEqual(self.rows("SELECT count(*) FROM sweep"), [(0,)])
        self.assertEqual((yield self.store.read(2, 5)),
                         [(2, entry(2)), (3, entry(3)), (4, entry(1))])

    @inlineCallbacks
    def test_commitsTakeTurnsWithATrim(self):
        """A trim runs a step at a time: a write queued with it lands first."""
        self.patch(trimmer, "TRIM_STEP", 1)
        yield self.fill(range(20))
        order = []
        trimmed = self.store.trim(Retention(entries=1), time.time())
        trimmed.addCallback(lambda _: order.append("trim"))
        appended = appendOne(self.store, entry(0)).addCallback(order.append)
        yield trimmed
        yield appended
        self.assertEqual(order, [21, "trim"])
        first, head = yield self.bounds()
        self.assertEqual((first in (20, 21), head), (True, 21))

    @inlineCallbacks
    def test_freedSpaceIsReused(self):
        """Pages freed by a trim take the next writes, so the file does not grow."""
        big = [canonical({"n": n, "pad": "y" * 2000}) for n in range(200)]
        for start in range(0, 200, 20):
            yield self.store.append(big[start:start + 20])
        yield self.store.trim(Retention(entries=20), time.time())
        pages = self.rows("PRAGMA page_count")[0][0]
        for _ in range(3):
            for start in range(0, 180, 20):
                yield self.store.append([canonical({"again": d.decode()})
                                         for d in big[start:start + 20]])
            yield self.store.trim(Retention(entries=20), time.time())
            self.assertLessEqual(self.rows("PRAGMA page_count")[0][0], pages * 1.1)

    @inlineCallbacks
    def test_versionOneFileIsUpgraded(self):
        """A file from before retention (no hashes.last, no blobs) opens upgraded, and
        its copies stay readable once their first copy is deleted."""
        yield self.fill([1, 2, 1])
        yield self.deduplicated()
        yield self.store.close()
        with sqlite3.connect(self.path) as connection:
            for table in ("blobs", "times", "retries", "referenced", "sweep"):
                connection.execute(f"DROP TABLE {table}")
            connection.execute("DELETE FROM meta WHERE key = 'schema'")
            connection.execute("ALTER TABLE hashes RENAME TO old")
            connection.execute("CREATE TABLE hashes (hash BLOB PRIMARY KEY,"
                               " idx INTEGER NOT NULL) WITHOUT ROWID")
            connection.execute("INSERT INTO hashes SELECT hash, idx FROM old")
            connection.execute("DROP TABLE old")
        self.store = self.makeStore()
        yield self.store.open()
        self.assertEqual(self.rows("SELECT value FROM meta WHERE key = 'schema'"),
                         [(schema.SCHEMA_VERSION,)])
        yield self.store.trim(Retention(entries=2), time.time())
        self.assertEqual((yield self.store.read(2, 5)), [(2, entry(2)), (3, entry(1))])
        self.assertEqual(self.rows("SELECT data FROM blobs"), [(entry(1),)])


class PostgreSQLRetentionTests(PersistentRetentionBehaviour, unittest.TestCase):
    """The same retention on PostgreSQL, a fresh database per test."""

    def makeStore(self):
        from tests.postgres import sharedCluster, skipUnlessAvailable
        skipUnlessAvailable(self)
        if not hasattr(self, "uri"):
            self.uri = sharedCluster().database()
        return pgStore.PostgreSQLStore(reactor, self.uri)

    def rows(self, query: str) -> list:
        import psycopg
        with psycopg.connect(self.uri) as connection:
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in connection.execute(query)]

    @inlineCallbacks
    def deduplicated(self):
        while (yield self.store.deduplicationLag()) > 0:
            yield deferLater(reactor, 0.01, lambda: None)

    @inlineCallbacks
    def test_contentIsDroppedWithItsLastCopy(self):
        yield self.fill([1, 1, 2, 1])
        yield self.deduplicated()
        yield self.store.trim(Retention(entries=3), time.time())
        self.assertEqual(self.rows("SELECT data FROM logsvc_hashes WHERE data IS NOT NULL"),
                         [(entry(1),)])
        yield self.store.trim(Retention(entries=1), time.time())
        self.assertEqual((yield self.store.read(4, 1)), [(4, entry(1))])
        yield self.fill([5])
        yield self.deduplicated()
        yield self.store.trim(Retention(entries=1), time.time())
        self.assertEqual(self.rows("SELECT idx, last, data FROM logsvc_hashes"),
                         [(5, 5, None)])

    @inlineCallbacks
    def test_entriesTrimmedBeforeIndexingAreNeverIndexed(self):
        """Their later copies are stored anew, never as references to them."""
        self.patch(pgStore, "INDEX_WHEN_IDLE", 60.0)
        yield self.fill([1, 2, 3])
        yield self.store.trim(Retention(entries=1), time.time())
        yield self.fill([1])
        with self.store._wakeup:
            self.patch(pgStore, "INDEX_WHEN_IDLE", 0.0)
            self.store._wakeup.notify()
        yield self.deduplicated()
        self.assertEqual(self.rows("SELECT idx, last FROM logsvc_hashes ORDER BY idx"),
                         [(3, 3), (4, 4)])
        self.assertEqual((yield self.store.read(3, 5)), [(3, entry(3)), (4, entry(1))])

    @inlineCallbacks
    def test_commitsTakeTurnsWithATrim(self):
        """Appends made while a trim of many steps runs are committed between its
        steps, and the trim ends where its limit says."""
        self.patch(pgTrimmer, "TRIM_STEP", 2)
        yield self.fill(range(20))
        trimmed = self.store.trim(Retention(entries=2), time.time())
        appended = [appendOne(self.store, entry(n)) for n in range(5)]
        indices = yield gatherResults(appended)
        self.assertEqual(sorted(indices), list(range(21, 26)))
        self.assertEqual((yield trimmed)[0], 1)
        self.assertGreaterEqual((yield self.store.first()), 19)
