"""
Flow control between the parts: the journal slows line clients down instead of
buffering their lines, a journal writer cannot queue without bound, and shutdown closes
every connection before the store.
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from logsvc.journal import lines as journalLines
from logsvc.journal import protocol as journalProtocol
from logsvc.journal.lines import JournalLines
from logsvc.journal.protocol import JournalFactory
from logsvc.limits import ConnectionLimit
from logsvc.lineservice import LineFactory
from logsvc.registry import ClientRegistry
from tests.stores import HeldStore


class Producer:
    def __init__(self):
        self.calls: list = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")


class LineFactoryProducerTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.factory = LineFactory(ClientRegistry(self.clock), self.clock)

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_pausesAndResumesEveryConnection(self):
        (first, firstTransport), (_, secondTransport) = self.connect(), self.connect()
        self.factory.pauseProducing()
        self.assertEqual([firstTransport.producerState, secondTransport.producerState],
                         ["paused", "paused"])
        _, lateTransport = self.connect()
        self.assertEqual(lateTransport.producerState, "paused")
        first.connectionLost(None)
        self.factory.resumeProducing()
        self.assertEqual([secondTransport.producerState, lateTransport.producerState],
                         ["producing", "producing"])
        self.assertEqual(firstTransport.producerState, "paused")


class JournalLinesBacklogTests(TestCase):
    def test_pausesLineTrafficAtHighWaterResumesAtLow(self):
        self.patch(journalLines, "BACKLOG_HIGH", 10)
        self.patch(journalLines, "BACKLOG_LOW", 4)
        store, producer = HeldStore(), Producer()
        lines = JournalLines(store, producer=producer)
        for n in range(12):
            lines.event("log", "a", 1.0, {"message": str(n)})
        self.assertEqual((producer.calls, lines.backlog), (["pause"], 12))
        store.land(7)
        self.assertEqual(producer.calls, ["pause"])
        store.land(1)
        self.assertEqual((producer.calls, lines.backlog), (["pause", "resume"], 4))
        store.land(4)
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_linesReceivedTogetherAreOneBatch(self):
        self.patch(journalLines, "BACKLOG_HIGH", 10)
        self.patch(journalLines, "BACKLOG_LOW", 4)
        store, producer = HeldStore(), Producer()
        lines = JournalLines(store, producer=producer)
        lines.logged("a", 1.0, [str(n) for n in range(12)], False)
        self.assertEqual((len(store.held), store.held[0][1]), (1, 12))
        self.assertEqual((producer.calls, lines.backlog), (["pause"], 12))
        store.land(1)
        self.assertEqual((producer.calls, lines.backlog), (["pause", "resume"], 0))

    def test_failedAppendsLeaveTheBacklogToo(self):
        self.patch(journalLines, "BACKLOG_HIGH", 2)
        self.patch(journalLines, "BACKLOG_LOW", 0)
        store, producer = HeldStore(), Producer()
        lines = JournalLines(store, producer=producer)
        lines.event("ready", "a", 1.0, {})
        lines.event("close", "a", 2.0, {})
        for landed, _ in store.held:
            landed.errback(RuntimeError("disk full"))
        self.assertEqual((producer.calls, lines.backlog, lines.failures),
                         (["pause", "resume"], 0, 2))


class JournalInFlightTests(TestCase):
    def test_tooManyWritesInFlightStopReading(self):
        self.patch(journalProtocol, "MAX_IN_FLIGHT", 4)
        store = HeldStore()
        protocol = JournalFactory(store, 1048576, Clock()).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        for n in range(5):
            protocol.dataReceived(b'{"id":"w%d","entry":{}}\n' % n)
        self.assertEqual(len(store.held), 5)
        self.assertEqual(transport.producerState, "paused")
        store.land(2)
        self.assertEqual(transport.producerState, "paused")
        store.land(1)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value().count(b'"index"'), 3)

    def test_fullSendBufferAndThrottleTogether(self):
        """Resuming the consumer does not resume reading while writes still pile up."""
        self.patch(journalProtocol, "MAX_IN_FLIGHT", 2)
        store = HeldStore()
        protocol = JournalFactory(store, 1048576, Clock()).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b'{"id":"a","entry":{}}\n{"id":"b","entry":{}}\n')
        protocol.pauseProducing()
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "paused")
        store.land(1)
        self.assertEqual(transport.producerState, "producing")


class CloseAllTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.limit = ConnectionLimit(LineFactory(ClientRegistry(self.clock), self.clock),
                                     "port")

    def connect(self):
        protocol = self.limit.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_noConnections(self):
        self.assertIsNone(self.successResultOf(self.limit.closeAll(self.clock)))

    def test_firesWhenTheLastConnectionIsGone(self):
        (first, firstTransport), (second, secondTransport) = self.connect(), self.connect()
        closed = self.limit.closeAll(self.clock)
        self.assertTrue(firstTransport.disconnecting and secondTransport.disconnecting)
        first.connectionLost(None)
        self.assertNoResult(closed)
        second.connectionLost(None)
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abortsPeersThatDoNotLeave(self):
        protocol, transport = self.connect()
        aborted = []
        transport.abortConnection = lambda: aborted.append(True)
        closed = self.limit.closeAll(self.clock, grace=2.0)
        self.clock.advance(2.0)
        self.assertEqual(aborted, [True])
        protocol.connectionLost(None)
        self.successResultOf(closed)

    def test_protocolHandlesItsLossBeforeTheConnectionIsCounted(self):
        protocol, _ = self.connect()
        protocol.dataReceived(b"IAM leaving\n")
        registry = self.limit.wrappedFactory.registry
        seen = []
        self.limit.closeAll(self.clock).addCallback(
            lambda _: seen.append(registry.lookup("leaving").online))
        protocol.connectionLost(None)
        self.assertEqual(seen, [False])
