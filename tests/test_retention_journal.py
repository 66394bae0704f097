"""
Journal readers and retention: a read below C{first}, in both dialects, is told
C{{"trimmed": {"first": F, "head": H}}} before any later entry and goes on from
C{first}; so is a reader that retention overtakes while it pages, or while it is
stalled on a full socket; on the memory store and on SQLite.
"""

import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from logsvc.journal.protocol import JournalFactory
from logsvc.memorystore import MemoryStore
from logsvc.retention import Retention
from logsvc.sqlite import SQLiteStore
from logsvc.store import canonical
from tests.journalclients import Connection, FillingTransport, entries
from tests.stores import appendOne, temporaryPath


def notice(first: int, head: int) -> dict:
    return {"trimmed": {"first": first, "head": head}}


def assertToldOfTheGap(case, messages: list, first: int, head: int) -> None:
    """Entries are consecutive from 1 except across one notice, just before C{first}."""
    at = messages.index(notice(first, head))
    before = entries(messages[:at])
    after = entries(messages[at:])
    case.assertEqual(before, list(range(1, len(before) + 1)))
    case.assertEqual(after, list(range(first, first + len(after))))


class TrimmedReadTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.factory = JournalFactory(self.store, 1000, Clock())

    def fill(self, count: int, start: int = 1) -> None:
        for n in range(start, start + count):
            appendOne(self.store, canonical({"n": n}))
        self.clock.advance(0)

    def trim(self, keep: int) -> None:
        self.store.trim(Retention(entries=keep), time.time())

    def connect(self, transport=None) -> Connection:
        return Connection(self.factory, transport)

    def test_pushReadFromOne(self):
        self.fill(10)
        self.trim(4)
        connection = self.connect()
        connection.send({"from": 1})
        self.assertEqual(connection.received(),
                         [notice(7, 10)] + [{"index": n, "entry": {"n": n}}
                                            for n in range(7, 11)] + [{"current": True}])
        self.fill(1, start=11)
        self.assertEqual(entries(connection.received()), [11])

    def test_pullReadFromOne(self):
        """The notice is not one of the K entries, and carries no top-level head."""
        self.fill(10)
        self.trim(4)
        connection = self.connect()
        connection.send({"from": 1, "read": 3})
        self.assertEqual(connection.received(),
                         [notice(7, 10)] + [{"index": n, "entry": {"n": n}}
                                            for n in range(7, 10)] + [{"head": 10}])
        connection.send({"from": 10, "read": 3})
        self.assertEqual(connection.received(),
                         [{"index": 10, "entry": {"n": 10}}, {"current": True}])

    def test_readAtFirstHasNoNotice(self):
        self.fill(10)
        self.trim(4)
        connection = self.connect()
        connection.send({"from": 7, "read": 1})
        self.assertEqual(connection.received(), [{"index": 7, "entry": {"n": 7}},
                                                 {"head": 10}])

    def test_readerOvertakenWhilePaging(self):
        self.fill(3000)
        transport = FillingTransport(limit=1000)
        connection = self.connect(transport)
        connection.send({"from": 1})
        messages = connection.received()
        self.assertEqual(entries(messages), list(range(1, 101)))
        self.trim(1000)
        while transport.producerState == "paused":
            transport.drain()
            messages += connection.received()
        assertToldOfTheGap(self, messages, 2001, 3000)
        self.assertEqual(entries(messages)[-1], 3000)
        self.assertEqual(messages[-1], {"current": True})

    def test_stalledLiveReaderWhosePositionWasTrimmed(self):
        """A live reader whose socket stays full while writes go on and retention
        passes it: on resuming it hears of the gap, then gets the rest."""
        self.fill(5)
        connection = self.connect()
        connection.send({"from": 1})
        self.assertEqual(entries(connection.received()), [1, 2, 3, 4, 5])
        connection.protocol.pauseProducing()
        self.fill(20, start=6)
        self.trim(5)
        self.assertEqual(connection.received(), [])
        connection.protocol.resumeProducing()
        self.assertEqual(connection.received(),
                         [notice(21, 25)] + [{"index": n, "entry": {"n": n}}
                                             for n in range(21, 26)])
        self.fill(1, start=26)
        self.assertEqual(entries(connection.received()), [26])

    def test_pullReaderKeepsWhatItReadAhead(self):
        """Entries a pull read fetched beyond K before the trim are still sent: the
        reader misses nothing, so it needs no notice."""
        self.fill(10)
        connection = self.connect()
        connection.send({"from": 1, "read": 2})
        self.assertEqual(entries(connection.received()), [1, 2])
        self.trim(3)
        connection.send({"from": 3, "read": 2})
        self.assertEqual(connection.received(),
                         [{"index": 3, "entry": {"n": 3}}, {"index": 4, "entry": {"n": 4}},
                          {"head": 10}])

    def test_pullReaderWhosePositionWasTrimmed(self):
        self.fill(10)
        connection = self.connect()
        connection.send({"from": 1, "read": 2})
        self.assertEqual(entries(connection.received()), [1, 2])
        self.trim(3)
        connection.send({"from": 1, "read": 2})
        self.assertEqual(connection.received(),
                         [notice(8, 10), {"index": 8, "entry": {"n": 8}},
                          {"index": 9, "entry": {"n": 9}}, {"head": 10}])


class SQLiteTrimmedReadTests(TestCase):
    """The same against the SQLite store, whose reads run in its reader thread."""

    @inlineCallbacks
    def setUp(self):
        self.store = SQLiteStore(reactor, temporaryPath(self))
        yield self.store.open()
        self.addCleanup(self.store.close)
        self.factory = JournalFactory(self.store, 1000, Clock())

    @inlineCallbacks
    def until(self, connection, check) -> list:
        messages = []
        while not check(messages):
            yield deferLater(reactor, 0.01, lambda: None)
            messages += connection.received()
        return messages

    @inlineCallbacks
    def test_readFromOneInBothDialects(self):
        yield self.store.append([canonical({"n": n}) for n in range(1, 601)])
        yield self.store.trim(Retention(entries=100), time.time())
        first = yield self.store.first()
        push = Connection(self.factory)
        push.send({"from": 1})
        messages = yield self.until(push, lambda m: {"current": True} in m)
        self.assertEqual(messages[0], notice(first, 600))
        self.assertEqual(entries(messages), list(range(first, 601)))
        pull = Connection(self.factory)
        pull.send({"from": 1, "read": 2})
        messages = yield self.until(pull, lambda m: any("head" in x for x in m))
        self.assertEqual(messages, [notice(first, 600), {"index": first, "entry": {"n": first}},
                                    {"index": first + 1, "entry": {"n": first + 1}},
                                    {"head": 600}])

    @inlineCallbacks
    def test_readerOvertakenWhilePaging(self):
        yield self.store.append([canonical({"n": n}) for n in range(1, 3001)])
        transport = FillingTransport(limit=1000)
        connection = Connection(self.factory, transport)
        connection.send({"from": 1})
        messages = yield self.until(connection, lambda m: transport.producerState == "paused")
        yield self.store.trim(Retention(entries=1000), time.time())
        first = yield self.store.first()
        while {"current": True} not in messages:
            if transport.producerState == "paused":
                transport.drain()
            yield deferLater(reactor, 0.01, lambda: None)
            messages += connection.received()
        assertToldOfTheGap(self, messages, first, 3000)
        self.assertEqual(entries(messages)[-1], 3000)
