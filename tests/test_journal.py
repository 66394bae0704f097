"""The journal listener, both dialects, and journal lines, driven in memory."""

import json

from hypothesis import given, settings, strategies as st
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from logsvc.errors import StoreError
from logsvc.interfaces import IEventObserver
from logsvc.journal.lines import JournalLines, eventEntry, logEntries
from logsvc.journal.protocol import HeldAcks, JournalFactory, ReadReplies
from logsvc.reader import PAGE_ENTRIES, JournalReader
from logsvc.registry import ClientRegistry
from logsvc.store import canonical
from tests.journalclients import FillingTransport, JournalTestCase, entries
from tests.stores import ControlledStore, appendOne


class TCPTransport(StringTransport):
    """A StringTransport that records the TCP socket options it is given."""

    def __init__(self):
        super().__init__()
        self.options: dict = {}

    def setTcpNoDelay(self, enabled):
        self.options["nodelay"] = enabled

    def setTcpKeepAlive(self, enabled):
        self.options["keepalive"] = enabled


class InterfaceTests(JournalTestCase):
    def test_producers(self):
        connection = self.connect()
        self.assertTrue(verifyObject(IPushProducer, connection.protocol))
        replies = ReadReplies(connection.transport, HeldAcks(connection.transport),
                              lambda reader, ahead: None)
        read = JournalReader(self.store, replies, 1)
        self.assertTrue(verifyObject(IPushProducer, read))

    def test_journalLinesObserver(self):
        self.assertTrue(verifyObject(IEventObserver, JournalLines(self.store)))


class ConnectionTests(JournalTestCase):
    def test_socketOptions(self):
        transport = TCPTransport()
        self.connect(transport)
        self.assertEqual(transport.options, {"nodelay": True, "keepalive": True})

    def test_readsInProgressAreKnownUntilTheConnectionGoes(self):
        first, second = self.connect(), self.connect()
        first.protocol.dataReceived(b'{"from":1}\n')
        second.protocol.dataReceived(b'{"from":1,"read":5}\n')
        self.assertEqual(self.factory.readers,
                         {first.protocol.reader, second.protocol.reader})
        first.protocol.connectionLost(None)
        self.assertEqual(self.factory.readers, {second.protocol.reader})
        second.protocol.connectionLost(None)
        self.assertEqual(self.factory.readers, set())

    def test_connectionIsItsTransportsStreamingProducer(self):
        connection = self.connect()
        self.assertIs(connection.transport.producer, connection.protocol)
        self.assertTrue(connection.transport.streaming)


class WriteTests(JournalTestCase):
    def test_firstWriteGetsIndexOne(self):
        connection = self.connect()
        connection.send({"id": "a", "entry": {"x": 1}})
        self.assertEqual(connection.received(), [{"id": "a", "index": 1}])

    def test_indicesAreDense(self):
        connection = self.connect()
        connection.send(*[{"id": str(n), "entry": {"n": n}} for n in range(5)])
        self.assertEqual(connection.received(),
                         [{"id": str(n), "index": n + 1} for n in range(5)])

    def test_storedCanonically(self):
        connection = self.connect()
        connection.send(b'{"entry": {"b": [1, 2.5, "\xc3\xa9"], "a": {"z": null, "y": true}},'
                        b' "id": "i"}')
        self.assertEqual(self.store.read(1, 1).result,
                         [(1, '{"a":{"y":true,"z":null},"b":[1,2.5,"é"]}'.encode())])

    def test_retryWithSameIdAndContentGetsSameIndex(self):
        connection = self.connect()
        connection.send({"id": "a", "entry": {"x": 1}}, {"id": "b", "entry": {"x": 2}},
                        {"id": "a", "entry": {"x": 1}})
        self.assertEqual(connection.received(), [{"id": "a", "index": 1},
                                                 {"id": "b", "index": 2},
                                                 {"id": "a", "index": 1}])

    def test_sameContentOtherIdIsANewEntry(self):
        connection = self.connect()
        connection.send({"id": "a", "entry": {"x": 1}}, {"id": "b", "entry": {"x": 1}},
                        {"id": "a", "entry": {"x": 2}})
        self.assertEqual([m["index"] for m in connection.received()], [1, 2, 3])

    def test_invalidWritesAreInvalidMessages(self):
        connection = self.connect()
        for message in ({"id": "", "entry": {}}, {"id": 5, "entry": {}},
                        {"id": "a", "entry": [1]}, {"id": "a", "entry": "text"},
                        {"id": "a"}, {"entry": {}}, {}, [1, 2], "write", 42, None):
            connection.send(message)
            self.assertEqual(connection.received(), [{"error": "invalid message"}], message)
        self.assertFalse(connection.closed)
        connection.send({"id": "a", "entry": {}})
        self.assertEqual(connection.received(), [{"id": "a", "index": 1}])

    def test_storeFailureIsReportedAndServiceStaysUp(self):
        connection = self.connect()
        self.store.appendError = StoreError("disk full")
        connection.send({"id": "a", "entry": {"x": 1}})
        self.assertEqual(connection.received(), [{"id": "a", "error": "disk full"}])
        self.assertFalse(connection.closed)
        self.store.appendError = None
        connection.send({"id": "a", "entry": {"x": 1}})
        self.assertEqual(connection.received(), [{"id": "a", "index": 1}])

    def test_unexpectedStoreFailureIsLoggedAndReported(self):
        connection = self.connect()
        self.store.appendError = ZeroDivisionError()
        connection.send({"id": "a", "entry": {}})
        self.assertEqual(connection.received(), [{"id": "a", "error": "internal error"}])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_entryThatIsNotUnicode(self):
        connection = self.connect()
        connection.send(b'{"id": "a", "entry": {"x": "\\ud800"}}')
        self.assertEqual(connection.received(),
                         [{"id": "a", "error": "entry cannot be stored as UTF-8 JSON"}])
        self.assertFalse(connection.closed)

    def test_idIsEchoedExactly(self):
        connection = self.connect()
        writeId = 'quote " backslash \\ é \u2028 \U0001f600'
        connection.send({"id": writeId, "entry": {}})
        self.assertEqual(connection.received(), [{"id": writeId, "index": 1}])


class FramingTests(JournalTestCase):
    def test_messagesSplitAcrossChunks(self):
        connection = self.connect()
        data = b'{"id":"a","entry":{"x":1}}\n{"id":"b","entry":{"x":2}}\n'
        for byte in range(len(data)):
            connection.protocol.dataReceived(data[byte:byte + 1])
        self.assertEqual(connection.received(), [{"id": "a", "index": 1},
                                                 {"id": "b", "index": 2}])

    def test_blankLinesAndCarriageReturnsAreIgnored(self):
        connection = self.connect()
        connection.protocol.dataReceived(b'\n  \r\n{"id":"a","entry":{}}\r\n\n')
        self.assertEqual(connection.received(), [{"id": "a", "index": 1}])
        self.assertFalse(connection.closed)

    def test_invalidJSONClosesAfterEarlierReplies(self):
        connection = self.connect()
        connection.protocol.dataReceived(b'{"id":"a","entry":{}}\n{nope\n{"id":"b","entry":{}}\n')
        self.assertEqual(connection.received(), [{"id": "a", "index": 1},
                                                 {"error": "invalid JSON"}])
        self.assertTrue(connection.closed)
        connection.send({"id": "c", "entry": {}})
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.store.head().result, 1)

    def test_notJSON(self):
        self.factory = JournalFactory(self.store, 1_000_000, Clock())
        for data in (b"NaN", b'{"id":"a","entry":{"x":Infinity}}', b"\xff\xfe",
                     b"[" * 100_000, b'{"a":1} {"b":2}', b"'single'"):
            connection = self.connect()
            connection.protocol.dataReceived(data + b"\n")
            self.assertEqual(connection.received(), [{"error": "invalid JSON"}], data[:20])
            self.assertTrue(connection.closed)

    def test_messageTooLong(self):
        def write(size):
            head, tail = b'{"id":"a","entry":{"x":"', b'"}}'
            return head + b"y" * (size - len(head) - len(tail)) + tail

        connection = self.connect()
        connection.protocol.dataReceived(write(self.maxEntry) + b"\n")
        self.assertEqual(connection.received(), [{"id": "a", "index": 1}])
        connection.protocol.dataReceived(write(self.maxEntry + 1) + b"\n")
        self.assertEqual(connection.received(), [{"error": "message too long"}])
        self.assertTrue(connection.closed)

    def test_partialMessageTooLong(self):
        connection = self.connect()
        connection.protocol.dataReceived(b'{"id":"a","entry":{"x":"' + b"y" * 500)
        self.assertFalse(connection.closed)
        connection.protocol.dataReceived(b"y" * 500)
        self.assertEqual(connection.received(), [{"error": "message too long"}])
        self.assertTrue(connection.closed)
        connection.protocol.dataReceived(b"y" * 10_000 + b"\n")
        self.assertEqual(connection.received(), [])


class PushReadTests(JournalTestCase):
    def test_replayThenCurrentThenLive(self):
        self.fill(3)
        connection = self.connect()
        connection.send({"from": 1})
        self.assertEqual(connection.received(), [
            {"index": 1, "entry": {"n": 1}}, {"index": 2, "entry": {"n": 2}},
            {"index": 3, "entry": {"n": 3}}, {"current": True}])
        self.fill(2, start=4)
        self.assertEqual(connection.received(), [{"index": 4, "entry": {"n": 4}},
                                                 {"index": 5, "entry": {"n": 5}}])

    def test_readFromTheMiddle(self):
        self.fill(5)
        connection = self.connect()
        connection.send({"from": 4})
        self.assertEqual(connection.received(), [{"index": 4, "entry": {"n": 4}},
                                                 {"index": 5, "entry": {"n": 5}},
                                                 {"current": True}])

    def test_readOwnWrites(self):
        connection = self.connect()
        connection.send({"from": 1})
        self.assertEqual(connection.received(), [{"current": True}])
        connection.send({"id": "a", "entry": {"mine": True}})
        self.clock.advance(0)
        self.assertEqual(connection.received(), [{"id": "a", "index": 1},
                                                 {"index": 1, "entry": {"mine": True}}])

    def test_twoClientsSeeEachOther(self):
        first, second = self.connect(), self.connect()
        first.send({"from": 1})
        second.send({"from": 1})
        first.send({"id": "a", "entry": {"by": "first"}})
        second.send({"id": "b", "entry": {"by": "second"}})
        self.clock.advance(0)
        for connection in (first, second):
            messages = connection.received()
            self.assertEqual([m for m in messages if "entry" in m],
                             [{"index": 1, "entry": {"by": "first"}},
                              {"index": 2, "entry": {"by": "second"}}])

    def test_readBeyondHeadGetsOnlyFromThereOn(self):
        connection = self.connect()
        connection.send({"from": 2})
        self.assertEqual(connection.received(), [{"current": True}])
        self.fill(1)
        self.assertEqual(connection.received(), [])
        self.fill(2, start=2)
        self.assertEqual(connection.received(), [{"index": 2, "entry": {"n": 2}},
                                                 {"index": 3, "entry": {"n": 3}}])

    def test_currentBeforeEntriesCommittedDuringReplay(self):
        """Entries committed while a page is read come after current, in that page."""
        self.fill(3)
        self.store.holdReads = True
        connection = self.connect()
        connection.send({"from": 1})
        self.fill(2, start=4)
        self.assertEqual(connection.received(), [])
        self.store.release()
        self.assertEqual(connection.received(), [
            {"index": 1, "entry": {"n": 1}}, {"index": 2, "entry": {"n": 2}},
            {"index": 3, "entry": {"n": 3}}, {"current": True},
            {"index": 4, "entry": {"n": 4}}, {"index": 5, "entry": {"n": 5}}])

    def test_liveEntriesMissedWhilePagingAreReadNext(self):
        """A page that predates a commit is followed by a page with the new entries."""
        self.fill(3)
        self.store.holdReads = True
        connection = self.connect()
        connection.send({"from": 1})
        self.fill(2, start=4)
        self.store.release(snapshot=True)
        self.store.release()
        self.assertEqual(connection.received(), [
            {"index": 1, "entry": {"n": 1}}, {"index": 2, "entry": {"n": 2}},
            {"index": 3, "entry": {"n": 3}}, {"current": True},
            {"index": 4, "entry": {"n": 4}}, {"index": 5, "entry": {"n": 5}}])
        self.assertEqual(self.store.reads, [(1, 100), (4, 1000)])
        self.fill(1, start=6)
        self.assertEqual(entries(connection.received()), [6])

    def test_secondReadIsRefusedAndConnectionStays(self):
        connection = self.connect()
        connection.send({"from": 1}, {"from": 1}, {"from": 1, "read": 3})
        self.assertEqual(connection.received(), [{"current": True},
                                                 {"error": "already reading"},
                                                 {"error": "already reading"}])
        connection.send({"id": "a", "entry": {}})
        self.clock.advance(0)
        self.assertEqual(connection.received(), [{"id": "a", "index": 1},
                                                 {"index": 1, "entry": {}}])

    def test_invalidReads(self):
        connection = self.connect()
        for message in ({"from": 0}, {"from": -1}, {"from": "1"}, {"from": 1.0},
                        {"from": True}, {"from": None}, {"from": 1, "read": 0},
                        {"from": 1, "read": "5"}, {"from": 1, "read": True},
                        {"from": 1, "read": None}, {"from": 1, "read": 2.5}):
            connection.send(message)
            self.assertEqual(connection.received(), [{"error": "invalid message"}], message)
        self.assertFalse(connection.closed)
        self.assertIsNone(connection.protocol.reader)

    def test_invalidMessageDuringReadKeepsReading(self):
        connection = self.connect()
        connection.send({"from": 1}, {"hello": "world"})
        self.assertEqual(connection.received(), [{"current": True},
                                                 {"error": "invalid message"}])
        self.fill(1)
        self.assertEqual(entries(connection.received()), [1])

    def test_invalidJSONDuringReadCloses(self):
        self.fill(2)
        connection = self.connect()
        connection.send({"from": 1}, b"{oops")
        self.assertEqual(connection.received()[-1], {"error": "invalid JSON"})
        self.assertTrue(connection.closed)
        self.assertIsNone(connection.transport.producer)
        self.fill(1, start=3)
        self.assertEqual(connection.received(), [])

    def test_unreadableEntry(self):
        self.fill(3)
        self.store.unreadable.add(2)
        connection = self.connect()
        connection.send({"from": 1})
        self.assertEqual(connection.received(), [
            {"index": 1, "entry": {"n": 1}}, {"index": 2, "error": "disk says no"},
            {"index": 3, "entry": {"n": 3}}, {"current": True}])

    def test_readFailureEndsTheRead(self):
        self.fill(3)
        self.store.readError = StoreError("database is locked")
        connection = self.connect()
        connection.send({"from": 1})
        self.assertEqual(connection.received(), [{"error": "database is locked"}])
        self.assertFalse(connection.closed)
        self.store.readError = None
        connection.send({"from": 3})
        self.assertEqual(connection.received(), [{"index": 3, "entry": {"n": 3}},
                                                 {"current": True}])

    def test_catchUpInPages(self):
        self.fill(2500)
        connection = self.connect()
        connection.send({"from": 1})
        messages = connection.received()
        self.assertEqual(entries(messages), list(range(1, 2501)))
        self.assertEqual(messages[-1], {"current": True})
        self.assertGreater(len(self.store.reads), 2)
        self.assertTrue(all(limit <= PAGE_ENTRIES for _, limit in self.store.reads))

    def test_pagesShrinkForLargeEntries(self):
        big = "x" * 50_000
        for n in range(150):
            appendOne(self.store, canonical({"n": n, "big": big}))
        self.clock.advance(0)
        connection = self.connect()
        connection.send({"from": 1})
        self.assertEqual(len(entries(connection.received())), 150)
        self.assertEqual(self.store.reads[0], (1, 100))
        self.assertLessEqual(self.store.reads[1][1], 21)

    def test_connectionLostStopsFollowing(self):
        connection = self.connect()
        connection.send({"from": 1})
        connection.protocol.connectionLost(None)
        connection.transport.clear()
        self.fill(2)
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.store._followers._callbacks, ())


class PullReadTests(JournalTestCase):
    def test_pagesThroughWithHead(self):
        self.fill(10)
        connection = self.connect()
        connection.send({"from": 1, "read": 4})
        self.assertEqual(connection.received(),
                         [{"index": n, "entry": {"n": n}} for n in (1, 2, 3, 4)]
                         + [{"head": 10}])
        connection.send({"from": 5, "read": 4})
        self.assertEqual(entries(connection.received()), [5, 6, 7, 8])
        connection.send({"from": 9, "read": 4})
        self.assertEqual(connection.received(), [{"index": 9, "entry": {"n": 9}},
                                                 {"index": 10, "entry": {"n": 10}},
                                                 {"current": True}])
        self.fill(3, start=11)
        self.assertEqual(connection.received(), [{"index": 11, "entry": {"n": 11}},
                                                 {"index": 12, "entry": {"n": 12}},
                                                 {"head": 13}])
        connection.send({"from": 13, "read": 1})
        self.assertEqual(connection.received(), [{"index": 13, "entry": {"n": 13}},
                                                 {"head": 13}])

    def test_readEndingAtHeadSaysHeadOnly(self):
        """The K-th entry is the head: the head was not reached first (tcp-log-server)."""
        self.fill(5)
        connection = self.connect()
        connection.send({"from": 1, "read": 5})
        self.assertEqual(connection.received()[-2:], [{"index": 5, "entry": {"n": 5}},
                                                      {"head": 5}])

    def test_nextReadAfterCaughtUp(self):
        self.fill(2)
        connection = self.connect()
        connection.send({"from": 3, "read": 2})
        self.assertEqual(connection.received(), [{"current": True}])
        connection.send({"from": 3, "read": 2})
        self.assertEqual(connection.received(), [{"error": "already reading"}])
        connection.send({"id": "a", "entry": {"k": 1}}, {"id": "b", "entry": {"k": 2}})
        self.clock.advance(0)
        self.assertEqual(connection.received(), [
            {"id": "a", "index": 3}, {"index": 3, "entry": {"k": 1}},
            {"id": "b", "index": 4}, {"index": 4, "entry": {"k": 2}}, {"head": 4}])
        self.assertIsNone(connection.protocol.reader)
        self.assertEqual(self.store._followers._callbacks, ())

    def test_readLargerThanPage(self):
        self.fill(1500)
        connection = self.connect()
        connection.send({"from": 1, "read": 1200})
        messages = connection.received()
        self.assertEqual(entries(messages), list(range(1, 1201)))
        self.assertEqual(messages[-1], {"head": 1500})
        self.assertEqual(sum(limit for _, limit in self.store.reads), 1200)

    def test_smallPullReadsShareStoreReads(self):
        self.fill(300)
        connection = self.connect()
        received = []
        while len(received) < 300:
            connection.send({"from": len(received) + 1, "read": 5})
            messages = connection.received()
            self.assertEqual(messages[-1]["head"], 300)
            received += entries(messages)
        self.assertEqual(received, list(range(1, 301)))
        self.assertEqual(len(self.store.reads), 3)

    def test_readAheadIsDroppedForAnotherStart(self):
        self.fill(20)
        connection = self.connect()
        connection.send({"from": 1, "read": 2})
        self.assertEqual(entries(connection.received()), [1, 2])
        connection.send({"from": 10, "read": 2})
        self.assertEqual(entries(connection.received()), [10, 11])
        self.assertEqual(self.store.reads, [(1, 100), (10, 100)])
        connection.send({"from": 12, "read": 20})
        self.assertEqual(entries(connection.received()), list(range(12, 21)))

    def test_pullReadErrorsCountAsEntries(self):
        self.fill(3)
        self.store.unreadable.add(1)
        connection = self.connect()
        connection.send({"from": 1, "read": 2})
        self.assertEqual(connection.received(), [{"index": 1, "error": "disk says no"},
                                                 {"index": 2, "entry": {"n": 2}},
                                                 {"head": 3}])


class BackpressureTests(JournalTestCase):
    def test_pausedConnectionStopsReadingRequests(self):
        connection = self.connect()
        connection.protocol.pauseProducing()
        self.assertEqual(connection.transport.producerState, "paused")
        connection.protocol.resumeProducing()
        self.assertEqual(connection.transport.producerState, "producing")

    def test_pausedReadStopsPagingAndLiveEntries(self):
        self.fill(2500)
        self.store.holdReads = True
        connection = self.connect()
        connection.send({"from": 1})
        connection.protocol.pauseProducing()
        self.store.release()
        self.assertEqual(len(entries(connection.received())), 100)
        self.assertEqual(len(self.store.reads), 1)
        self.fill(1000, start=2501)
        self.assertEqual(connection.received(), [])
        self.assertEqual(len(self.store.reads), 1)
        self.store.holdReads = False
        connection.protocol.resumeProducing()
        messages = connection.received()
        self.assertEqual(entries(messages), list(range(101, 3501)))
        self.assertEqual(messages.index({"current": True}), 2400)

    def test_liveEntriesDroppedWhilePausedAreReadAgain(self):
        self.fill(2)
        connection = self.connect()
        connection.send({"from": 1})
        self.assertEqual(entries(connection.received()), [1, 2])
        connection.protocol.pauseProducing()
        self.fill(3, start=3)
        self.assertEqual(connection.received(), [])
        connection.protocol.resumeProducing()
        self.fill(1, start=6)
        self.assertEqual(connection.received(), [{"index": n, "entry": {"n": n}}
                                                 for n in range(3, 7)])

    def test_gapInLiveBatchesIsFilledFromStore(self):
        """A store that delivers a later batch first (another process) loses nothing."""
        connection = self.connect()
        connection.send({"from": 1})
        connection.received()
        for n in (1, 2, 3):
            appendOne(self.store, canonical({"n": n}))
        connection.protocol.reader._committed([(3, canonical({"n": 3}))])
        self.assertEqual(entries(connection.received()), [1, 2, 3])
        self.clock.advance(0)
        self.assertEqual(connection.received(), [])

    def test_largeLiveBatchIsSentAPageAtATime(self):
        """A group commit of 3,000 entries is not turned into one 3,000-line write."""
        transport = FillingTransport(limit=1000)
        connection = self.connect(transport)
        connection.send({"from": 1})
        self.assertEqual(connection.received(), [{"current": True}])
        self.fill(3000)
        received = entries(connection.received())
        self.assertEqual(received, list(range(1, 101)))
        self.assertEqual(self.store.reads, [])
        for _ in range(10):
            transport.drain()
            received += entries(connection.received())
        self.assertEqual(received, list(range(1, 3001)))
        self.assertTrue(all(start > 100 for start, _ in self.store.reads))

    def test_readStartedWhilePausedWaits(self):
        self.fill(3)
        connection = self.connect()
        connection.protocol.pauseProducing()
        connection.send({"from": 1})
        self.assertEqual(connection.received(), [])
        connection.protocol.resumeProducing()
        self.assertEqual(entries(connection.received()), [1, 2, 3])


class JournalLinesTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = ControlledStore(self.clock)
        self.lines = JournalLines(self.store)

    def stored(self) -> list:
        return [json.loads(data) for _, data in self.store.read(1, 100).result]

    def test_everyEventKind(self):
        registry = ClientRegistry(self.clock)
        registry.addObserver(self.lines)
        self.clock.advance(1.5)
        record = registry.connect("web-1")
        registry.log(record, 2.25, ["hello", "wörld"])
        registry.log(record, 3.0, ["cut"], truncated=True)
        registry.set(record, 4.0, "mode", "on")
        self.clock.advance(1)
        registry.disconnect(record)
        self.assertEqual(self.stored(), [
            {"client": "web-1", "event": "ready", "time": 1.5},
            {"client": "web-1", "event": "log", "time": 2.25, "message": "hello"},
            {"client": "web-1", "event": "log", "time": 2.25, "message": "wörld"},
            {"client": "web-1", "event": "log", "time": 3.0, "message": "cut",
             "truncated": True},
            {"client": "web-1", "event": "set", "time": 4.0, "key": "mode", "value": "on"},
            {"client": "web-1", "event": "close", "time": 2.5},
        ])

    @settings(max_examples=300, deadline=None)
    @given(kind=st.sampled_from(["ready", "close", "log", "set"]),
           name=st.text(min_size=1), time=st.floats(allow_nan=False, allow_infinity=False)
           | st.integers(0, 2**40), text=st.text(), other=st.text())
    def test_entriesAreCanonical(self, kind, name, time, text, other):
        if kind == "log":
            for truncated in (False, True):
                extra = {"truncated": True} if truncated else {}
                self.assertEqual(logEntries(name, time, [text, other], truncated), [
                    canonical({"client": name, "event": "log", "time": time,
                               "message": message, **extra}) for message in (text, other)])
            return
        fields = {"set": {"key": text, "value": other}}.get(kind, {})
        expected = canonical({"client": name, "event": kind, "time": time, **fields})
        self.assertEqual(eventEntry(kind, name, time, fields), expected)

    def test_unusualFieldsAreStillCanonical(self):
        fields = {"message": "x", "truncated": True}
        self.assertEqual(eventEntry("log", "a", 1.0, fields),
                         canonical({"client": "a", "event": "log", "time": 1.0, **fields}))

    def test_storeFailuresAreLoggedNotRaised(self):
        self.store.appendError = StoreError("disk full")
        for n in range(3):
            self.lines.event("log", "web-1", 1.0, {"message": str(n)})
        self.assertEqual(self.lines.failures, 3)

    def test_unencodableEventIsLoggedNotRaised(self):
        self.lines.logged("web-1", 1.0, ["\ud800"], False)
        self.lines.event("set", "web-1", 1.0, {"key": "k", "value": "\ud800"})
        self.assertEqual(len(self.flushLoggedErrors(UnicodeEncodeError)), 2)
        self.assertEqual(self.store.head().result, 0)
