"""
Disk faults while the SQLite store runs: the failing batch is refused, nothing is
acknowledged that was not committed, and writing resumes once the fault clears.
"""

import sqlite3

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial import unittest

from logsvc.errors import StoreError
from logsvc.sqlite import SQLiteStore

from tests.stores import FaultyConnection, appendOne, entry, temporaryPath


class StoreFaultTests(unittest.TestCase):
    @inlineCallbacks
    def setUp(self):
        self.store = SQLiteStore(reactor, temporaryPath(self))
        yield self.store.open()
        self.addCleanup(self.store.close)
        self.faulty = self.store._writer.connection = FaultyConnection(
            self.store._writer.connection)
        self.followed: list = []
        self.store.follow(self.followed.extend)

    @inlineCallbacks
    def test_diskFull(self):
        """A real SQLITE_FULL from a page limit: the batch fails, later ones succeed."""
        self.assertEqual((yield appendOne(self.store, entry(0))), 1)
        pages = self.faulty.execute("PRAGMA page_count").fetchone()[0]
        self.faulty.execute(f"PRAGMA max_page_count={pages}")
        failed = [appendOne(self.store, entry(n, size=20_000)) for n in range(1, 4)]
        for attempt in failed:
            error = yield self.assertFailure(attempt, StoreError)
            self.assertIn("database or disk is full", str(error))
        self.assertEqual((yield self.store.head()), 1)
        self.faulty.execute("PRAGMA max_page_count=1073741823")
        self.assertEqual((yield appendOne(self.store, entry(4, size=20_000))), 2)
        self.assertIsNone((yield self.store.check()))
        self.assertEqual((yield self.store.read(1, 5)), [(1, entry(0)), (2, entry(4, 20_000))])
        self.assertEqual(self.followed, [(1, entry(0)), (2, entry(4, 20_000))])
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_ioErrorThenRecovery(self):
        self.faulty.error = sqlite3.OperationalError("disk I/O error")
        failed = [appendOne(self.store, entry(n), f"w{n}") for n in range(5)]
        for attempt in failed:
            error = yield self.assertFailure(attempt, StoreError)
            self.assertIn("disk I/O error", str(error))
        yield self.assertFailure(self.store.check(), StoreError)
        self.assertEqual((yield self.store.head()), 0)
        self.assertEqual(self.followed, [])

        self.faulty.error = None
        # Still failing: the last writes failed and none has succeeded since.
        yield self.assertFailure(self.store.check(), StoreError)
        retried = yield gatherResults([appendOne(self.store, entry(n), f"w{n}") for n in range(5)])
        self.assertEqual(retried, [1, 2, 3, 4, 5])
        yield self.store.check()
        self.assertEqual([index for index, _ in (yield self.store.read(1, 10))],
                         [1, 2, 3, 4, 5])
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_failedCommitThatLanded(self):
        """A commit that reported an error but reached the disk is not reused: later
        writes continue after it, followers get it, and its retry finds it."""
        self.faulty.error = sqlite3.OperationalError("disk I/O error")
        self.faulty.landed = True
        yield self.assertFailure(appendOne(self.store, entry(1), "w1"), StoreError)
        self.faulty.error = None
        self.assertEqual((yield appendOne(self.store, entry(2), "w2")), 2)
        self.assertEqual((yield appendOne(self.store, entry(1), "w1")), 1)
        self.assertEqual(self.followed, [(1, entry(1)), (2, entry(2))])
        self.assertEqual((yield self.store.head()), 2)
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_writerSurvivesUnexpectedErrors(self):
        self.faulty.error = MemoryError()
        yield self.assertFailure(appendOne(self.store, entry(1)), StoreError)
        self.faulty.error = None
        self.assertEqual((yield appendOne(self.store, entry(1))), 1)
        self.flushLoggedErrors()
