"""
Test helpers for journal stores: an entry, appending, a file to put one in, and stores
held back or made to fail.
"""

import sqlite3
import tempfile

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial import unittest

from logsvc.errors import EntryError
from logsvc.memorystore import MemoryStore
from logsvc.store import canonical


def entry(n: int, size: int = 20) -> bytes:
    """An entry padded with C{size} bytes: entries of one size for n in 0..9."""
    return canonical({"n": n, "pad": "x" * size})


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


class ControlledStore(MemoryStore):
    """A memory store whose reads can be held back, fail, or report unreadable entries."""

    def __init__(self, reactor):
        super().__init__(reactor)
        self.holdReads = False
        self.held: list = []
        self.reads: list = []
        self.unreadable: set = set()
        self.appendError: Exception | None = None
        self.readError: Exception | None = None

    def append(self, entries, writeIds=None):
        if self.appendError is not None:
            return fail(self.appendError)
        return super().append(entries, writeIds)

    def read(self, start, limit):
        self.reads.append((start, limit))
        if self.readError is not None:
            return fail(self.readError)
        if not self.holdReads:
            return succeed(self._rows(start, limit))
        d = Deferred()
        self.held.append((d, start, limit, self._rows(start, limit)))
        return d

    def _rows(self, start, limit) -> list:
        return [(i, EntryError("disk says no") if i in self.unreadable else data)
                for i, data in super().read(start, limit).result]

    def release(self, snapshot: bool = False) -> None:
        """Answer held reads with what is committed now, or as it was when asked."""
        held, self.held = self.held, []
        for d, start, limit, rows in held:
            d.callback(rows if snapshot else self._rows(start, limit))


class FaultyConnection:
    """Wraps the writer's connection; writes (INSERTs: the store commits a batch as one
    statement) raise C{error} while it is set, after really running when C{landed} is
    true (an fsync error after the write)."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection
        self.error: Exception | None = None
        self.landed = False

    def execute(self, sql: str, *args):
        if sql.lstrip().startswith("INSERT") and self.error is not None:
            if self.landed:
                self.connection.execute(sql, *args)
            raise self.error
        return self.connection.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.connection, name)
