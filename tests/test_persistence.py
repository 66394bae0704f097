"""Client records saved in batches to a real SQLite file, and restored from it."""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from logsvc.persistence import RegistryPersistence, SQLiteClients
from logsvc.registry import ClientRegistry

from tests.stores import temporaryPath


class FailingOnce(SQLiteClients):
    def __init__(self, path: str):
        super().__init__(path)
        self.failures = 1

    def save(self, rows: list, gone: list) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("disk on fire")
        super().save(rows, gone)


class RegistryPersistenceTests(unittest.TestCase):
    def setUp(self):
        self.path = temporaryPath(self)

    def open(self, backend=None, maxOffline: int = 10):
        registry = ClientRegistry(reactor, bufferSize=3, maxOffline=maxOffline)
        persistence = RegistryPersistence(registry, backend or SQLiteClients(self.path),
                                          reactor)
        persistence.open()
        self.addCleanup(persistence.close)
        return registry, persistence

    @inlineCallbacks
    def test_restoredAsSaved(self):
        registry, persistence = self.open()
        record = registry.connect("web-1")
        registry.log(record, 1.0, ["a", "b", "c", "d"])
        registry.set(record, 2.0, "status", "ready")
        record.bytes, record.ignored = 99, 4
        registry.disconnect(record)
        online = registry.connect("web-2")
        registry.log(online, 3.0, ["here"])
        yield persistence.flush()
        before = {r.name: r.summary() for r in registry.records()}
        yield persistence.close()
        restored, _ = self.open()
        after = {r.name: r.summary() for r in restored.records()}
        self.assertEqual(after, {"web-1": before["web-1"],
                                 "web-2": {**before["web-2"], "online": False}})
        self.assertEqual(after["web-1"]["log"], [[1.0, "b"], [1.0, "c"], [1.0, "d"]])
        self.assertEqual(restored.lookup("web-1").bytes, 99)

    @inlineCallbacks
    def test_onlyChangedRecordsAreWritten(self):
        registry, persistence = self.open()
        record = registry.connect("web-1")
        yield persistence.flush()
        self.assertEqual(registry.takeChanges(), ([], []))
        record.bytes += 10      # counted by the line service without a registry call
        changed, _ = registry.takeChanges()
        self.assertEqual([name for name, _ in changed], ["web-1"])

    @inlineCallbacks
    def test_failedSaveIsRetriedAtTheNextTick(self):
        backend = FailingOnce(self.path)
        registry, persistence = self.open(backend)
        registry.connect("web-1")
        yield persistence.flush()
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        yield persistence.flush()
        yield persistence.close()
        restored, _ = self.open()
        self.assertEqual([r.name for r in restored.records()], ["web-1"])

    @inlineCallbacks
    def test_evictedRecordsAreForgotten(self):
        registry, persistence = self.open(maxOffline=1)
        for name in ("old", "new"):
            registry.disconnect(registry.connect(name))
        yield persistence.flush()
        yield persistence.close()
        restored, _ = self.open()
        self.assertEqual([r.name for r in restored.records()], ["new"])
