"""Test helpers for journal stores: appending, a file to put one in, and stores held back."""

import tempfile

from twisted.internet.defer import Deferred
from twisted.trial import unittest


def appendOne(store, data: bytes, writeId: str | None = None):
    """Append one entry; the Deferred fires with its index."""
    appended = store.append([data], None if writeId is None else [writeId])
    return appended.addCallback(lambda indices: indices[0])


def temporaryPath(case: unittest.TestCase) -> str:
    """A database path in a directory removed after the test (outside the work tree)."""
    directory = tempfile.TemporaryDirectory()
    case.addCleanup(directory.cleanup)
    return directory.name + "/journal.db"


class HeldStore:
    """A store whose appended batches land only when the test says so."""

    def __init__(self):
        self.held: list = []
        self.landed = 0

    def append(self, entries, writeIds=None):
        landed = Deferred()
        self.held.append((landed, len(entries)))
        return landed

    def land(self, batches: int) -> None:
        for landed, count in self.held[:batches]:
            landed.callback(list(range(self.landed + 1, self.landed + count + 1)))
            self.landed += count
        del self.held[:batches]


class HeldReads:
    """Wraps a store so each read waits until the test fires it."""

    def __init__(self, store):
        self._store = store
        self.pending: list = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def read(self, start, limit):
        d = Deferred()
        self.pending.append((self._store.read(start, limit), d))
        return d

    def release(self):
        while self.pending:
            result, d = self.pending.pop(0)
            result.chainDeferred(d)
