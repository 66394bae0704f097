"""Retention options and the service that has the store apply them, on a fake clock."""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python import usage
from twisted.trial.unittest import TestCase

from logsvc.errors import StoreError
from logsvc.retention import (
    CHECK_INTERVAL, Retention, RetentionService, parseDuration, parseSize,
)


class ParseTests(TestCase):
    def test_durations(self):
        self.assertEqual([parseDuration(v) for v in ("90s", "30m", "12h", "7d", "1D")],
                         [90, 1800, 43200, 604800, 86400])

    def test_badDurations(self):
        for value in ("", "7", "0s", "-1m", "1.5h", "7w", "d"):
            self.assertRaises(usage.UsageError, parseDuration, value)

    def test_sizes(self):
        self.assertEqual([parseSize(v) for v in ("500M", "20G", "1k", "4096", "2MiB", "1T")],
                         [500 << 20, 20 << 30, 1024, 4096, 2 << 20, 1 << 40])

    def test_badSizes(self):
        for value in ("", "0", "0M", "-5M", "1.5G", "20Q", "M"):
            self.assertRaises(usage.UsageError, parseSize, value)

    def test_retentionIsOnWithAnyLimit(self):
        self.assertFalse(Retention())
        self.assertTrue(Retention(bytes=1))


class FakeStore:
    def __init__(self):
        self.calls: list = []
        self.answers: list = []

    def trim(self, retention, now):
        self.calls.append((retention, now))
        return self.answers.pop(0) if self.answers else succeed((1, 1))


class RetentionServiceTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = FakeStore()
        self.retention = Retention(entries=5)
        self.service = RetentionService(self.store, self.retention, self.clock)

    def test_checksAtStartAndEveryInterval(self):
        self.service.startService()
        self.clock.advance(CHECK_INTERVAL)
        self.clock.advance(CHECK_INTERVAL)
        self.assertEqual(self.store.calls, [(self.retention, 1000 + n * CHECK_INTERVAL)
                                            for n in range(3)])
        self.assertLessEqual(CHECK_INTERVAL, 60)
        self.service.stopService()
        self.clock.advance(CHECK_INTERVAL)
        self.assertEqual(len(self.store.calls), 3)

    def test_aSlowTrimIsNotDoubled(self):
        slow = Deferred()
        self.store.answers = [slow]
        self.service.startService()
        self.clock.advance(CHECK_INTERVAL * 3)
        self.assertEqual(len(self.store.calls), 1)
        slow.callback((1, 7))
        self.clock.advance(CHECK_INTERVAL)
        self.assertEqual((len(self.store.calls), self.service.checks), (2, 2))
        self.service.stopService()

    def test_failureIsLoggedAndChecksGoOn(self):
        self.store.answers = [fail(StoreError("disk says no"))]
        events = []
        self.patch(RetentionService, "log", Logger(observer=events.append))
        self.service.startService()
        self.clock.advance(CHECK_INTERVAL)
        self.assertEqual(([e["error"] for e in events], len(self.store.calls)),
                         (["disk says no"], 2))
        self.service.stopService()
