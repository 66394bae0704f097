"""
The SQLite store's C{check()}, which /health reports: it fails while real writes fail,
even though its own probe commits (a probe needs no new page, so it succeeds on a full
disk), and passes again once a write has succeeded.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from logsvc.errors import StoreError
from logsvc.sqlite import SQLiteStore
from tests.stores import FaultyConnection, appendOne, entry, temporaryPath


class CheckWhileWritesFailTests(unittest.TestCase):
    @inlineCallbacks
    def setUp(self):
        self.store = SQLiteStore(reactor, temporaryPath(self))
        yield self.store.open()
        self.addCleanup(self.store.close)
        self.faulty = self.store._writer.connection = FaultyConnection(
            self.store._writer.connection)

    @inlineCallbacks
    def fillUp(self):
        """A real SQLITE_FULL: no new page may be added to the file."""
        pages = self.faulty.execute("PRAGMA page_count").fetchone()[0]
        self.faulty.execute(f"PRAGMA max_page_count={pages}")
        yield self.assertFailure(appendOne(self.store, entry(1, size=20_000), "big"),
                                 StoreError)

    @inlineCallbacks
    def test_probeThatCommitsStillFails(self):
        self.assertEqual((yield appendOne(self.store, entry(0), "small")), 1)
        yield self.fillUp()
        for _ in range(5):
            error = yield self.assertFailure(self.store.check(), StoreError)
            self.assertIn("database or disk is full", str(error))
        # The probe itself did commit: the file takes it.
        self.assertTrue(self.faulty.execute(
            "SELECT value FROM meta WHERE key = 'checked'").fetchone())
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_retryOfAnOldWriteProvesNothing(self):
        self.assertEqual((yield appendOne(self.store, entry(0), "small")), 1)
        yield self.fillUp()
        self.assertEqual((yield appendOne(self.store, entry(0), "small")), 1)
        yield self.assertFailure(self.store.check(), StoreError)
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_passesOnceAWriteSucceeds(self):
        yield self.fillUp()
        yield self.assertFailure(self.store.check(), StoreError)
        self.faulty.execute("PRAGMA max_page_count=1073741823")
        yield self.assertFailure(self.store.check(), StoreError)
        self.assertEqual((yield appendOne(self.store, entry(2), "after")), 1)
        self.assertIsNone((yield self.store.check()))
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_failedProbeAloneIsNotAFailedWrite(self):
        self.faulty.error = StoreError("probe only")
        yield self.assertFailure(self.store.check(), StoreError)
        self.faulty.error = None
        self.assertIsNone((yield self.store.check()))
        self.flushLoggedErrors()
