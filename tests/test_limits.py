"""
Connection limits and slow-peer deadlines, in memory (StringTransport and task.Clock).
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from twisted.web.resource import Resource
from zope.interface.verify import verifyObject

from logsvc.auth import makePortal
from logsvc.errors import NoSuchClient
from logsvc.journal import MESSAGE_TIMEOUT, JournalFactory
from logsvc.httptimeouts import HEAD_TIMEOUT, httpSite
from logsvc.limits import DEFAULT_MAX_CONNECTIONS, ConnectionLimit
from logsvc.lineservice import IDENTIFY_TIMEOUT, LineFactory
from logsvc.pb import serverFactory as pbServerFactory
from logsvc.registry import ClientRegistry
from logsvc.service import LogService
from logsvc.store import MemoryStore
from tests.services import buildService, serviceMetrics

PEER = IPv4Address("TCP", "10.0.0.1", 40000)

REFUSALS = {
    "port": b"ERR too many connections\n",
    "journal": b'{"error":"too many connections"}\n',
    "http": (b"HTTP/1.1 503 Service Unavailable\r\n"
             b"Content-Type: text/plain; charset=utf-8\r\n"
             b"Content-Length: 21\r\n"
             b"Connection: close\r\n\r\n"
             b"too many connections\n"),
    "pb": b"",
}
"""What a connection over the limit receives, by listener: each factory's refusal."""


class Ok(Resource):
    isLeaf = True

    def render_GET(self, request) -> bytes:
        return b"ok"


def okSite(clock) -> Site:
    return httpSite(Ok(), clock)


def connect(factory, transport=None):
    """Build and connect one protocol; returns it and its transport."""
    transport = transport or StringTransport(peerAddress=PEER)
    protocol = factory.buildProtocol(PEER)
    protocol.makeConnection(transport)
    return protocol, transport


def close(protocol) -> None:
    protocol.connectionLost(None)


class ConnectionLimitTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = ClientRegistry(self.clock)

    def limit(self, name, factory, maxConnections=2) -> ConnectionLimit:
        return ConnectionLimit(factory, name, maxConnections)

    def test_interfaces(self):
        limit = self.limit("port", LineFactory(self.registry, self.clock))
        self.assertTrue(verifyObject(IProtocolFactory, limit))
        protocol, _ = connect(limit)
        self.assertTrue(verifyObject(IProtocol, protocol))

    def test_defaultIsTenThousand(self):
        limit = ConnectionLimit(Factory.forProtocol(Protocol), "port")
        self.assertEqual((limit.maxConnections, DEFAULT_MAX_CONNECTIONS), (10000, 10000))

    def refusal(self, name, factory) -> StringTransport:
        """Fill a limit of two, then connect once more; returns the third transport."""
        limit = self.limit(name, factory)
        connect(limit)
        connect(limit)
        _, transport = connect(limit)
        self.assertEqual(limit.connections, 2)
        self.assertTrue(transport.disconnecting)
        return transport

    def test_lineRefusal(self):
        transport = self.refusal("port", LineFactory(self.registry, self.clock))
        self.assertEqual(transport.value(), b"ERR too many connections\n")

    def test_journalRefusal(self):
        transport = self.refusal("journal", JournalFactory(MemoryStore(self.clock)))
        self.assertEqual(transport.value(), b'{"error":"too many connections"}\n')

    def test_httpRefusal(self):
        transport = self.refusal("http", okSite(self.clock))
        head, body = transport.value().split(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 503 Service Unavailable")
        self.assertIn(b"Connection: close", lines)
        self.assertIn(b"Content-Length: %d" % len(body), lines)
        self.assertEqual(body, b"too many connections\n")

    def test_pbRefusalIsSilent(self):
        service = LogService(self.registry, MemoryStore(self.clock), self.clock)
        transport = self.refusal("pb", pbServerFactory(makePortal(service, [])))
        self.assertEqual(transport.value(), b"")

    def test_closingMakesRoom(self):
        limit = self.limit("port", LineFactory(self.registry, self.clock))
        first, _ = connect(limit)
        connect(limit)
        close(first)
        self.assertEqual(limit.connections, 1)
        protocol, transport = connect(limit)
        protocol.dataReceived(b"IAM a\n")
        self.assertEqual((transport.value(), transport.disconnecting), (b"", False))
        self.assertEqual(self.registry.lookup("a").online, True)
        self.assertEqual(limit.connections, 2)

    def test_refusedConnectionsAreNotCounted(self):
        limit = self.limit("port", LineFactory(self.registry, self.clock), maxConnections=1)
        connect(limit)
        refused, _ = connect(limit)
        refused.dataReceived(b"IAM late\n")
        close(refused)
        self.assertEqual((limit.connections, limit.refused), (1, 1))
        self.assertRaises(NoSuchClient, self.registry.lookup, "late")

    def test_oneLogLinePerBurst(self):
        limit = self.limit("port", LineFactory(self.registry, self.clock), maxConnections=1)
        first, _ = connect(limit)
        with capturedLogs() as events:
            for _ in range(50):
                close(connect(limit)[0])
            close(first)
            connect(limit)
            close(connect(limit)[0])
        texts = [e["log_format"].format(**e) for e in events
                 if e.get("log_namespace", "").startswith("logsvc.limits")]
        self.assertEqual(texts, [
            "--port: 1 connections open (--max-connections); refusing new connections",
            "--port: accepting connections again after refusing 50",
            "--port: 1 connections open (--max-connections); refusing new connections",
        ])
        self.assertEqual(limit.refused, 51)

    def test_writesReachTheRealTransport(self):
        """The wrapper is the protocol's transport: replies still reach the socket."""
        limit = self.limit("journal", JournalFactory(MemoryStore(self.clock)))
        protocol, transport = connect(limit)
        protocol.dataReceived(b'{"bogus": 1}\n')
        self.assertEqual(transport.value(), b'{"error":"invalid message"}\n')


class ServiceWiringTests(TestCase):
    """LogService.addListener caps every listener, and /metrics counts them all."""

    def setUp(self):
        self.clock = Clock()
        registry = ClientRegistry(self.clock)
        self.service = LogService(registry, MemoryStore(self.clock), self.clock,
                                  maxConnections=1)
        reactor = MemoryReactor()
        factories = {
            "port": LineFactory(registry, self.clock),
            "journal": JournalFactory(self.service.store),
            "pb": Factory.forProtocol(Protocol),
            "http": okSite(self.clock),
        }
        for number, (name, factory) in enumerate(factories.items()):
            self.service.addListener(name, f"tcp:{number}",
                                     TCP4ServerEndpoint(reactor, 9000 + number), factory)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def test_everyListenerIsCapped(self):
        for listener in self.service.listeners():
            self.assertIsInstance(listener.factory, ConnectionLimit)
            self.assertEqual(listener.factory.maxConnections, 1)
            self.assertEqual(listener.factory.name, listener.name)
            self.assertEqual(listener.factory.refusal, REFUSALS[listener.name])

    def test_tapWiresLimitAndJournalClock(self):
        service = buildService(self, "--store", "memory:", "--pb", "none", "--http", "none",
                               "--max-connections", "5", reactor=self.clock)
        journal = service.getServiceNamed("journal").factory
        self.assertEqual((journal.maxConnections, journal.wrappedFactory.clock), (5, self.clock))
        self.assertEqual(service.getServiceNamed("port").factory.maxConnections, 5)

    def test_metricsCountEveryListener(self):
        for listener in self.service.listeners():
            protocol, _ = connect(listener.factory)
            self.addCleanup(close, protocol)
            connect(listener.factory)
        metrics = serviceMetrics(self.service)
        body, _ = self.successResultOf(Deferred.fromCoroutine(metrics.render(None)))
        samples = {(s.name, s.labels.get("listener")): s.value
                   for family in text_string_to_metric_families(body.decode())
                   for s in family.samples}
        for name in ("port", "journal", "pb", "http"):
            self.assertEqual(samples[("logsvc_connections", name)], 1, name)
            self.assertEqual(samples[("logsvc_refused_connections_total", name)], 1, name)


class SlowPeerTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = ClientRegistry(self.clock)

    def test_lineSlowlorisClosedAt30Seconds(self):
        """An IAM line trickled a byte a second, never ended: closed 30 s after connect."""
        self.assertEqual(IDENTIFY_TIMEOUT, 30.0)
        limit = ConnectionLimit(LineFactory(self.registry, self.clock), "port")
        protocol, transport = connect(limit)
        for byte in (b"IAM " + b"x" * 100)[:29]:
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"ERR identify within 30 seconds\n")
        self.assertEqual(self.registry.counts()["online"], 0)


class JournalMessageTimeoutTests(TestCase):
    """A journal message incomplete 30 s after its first byte closes the connection."""

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.protocol, self.transport = connect(
            ConnectionLimit(JournalFactory(self.store, clock=self.clock), "journal"))

    def test_trickledMessageClosedAt30Seconds(self):
        self.assertEqual(MESSAGE_TIMEOUT, 30.0)
        for byte in b'{"id":"slow","entry":{"text":"' + b"x" * 100:
            self.protocol.dataReceived(bytes([byte]))
            self.clock.advance(1)
            if self.transport.disconnecting:
                break
        self.assertEqual(self.clock.seconds(), 30)
        self.assertEqual(self.transport.value(), b'{"error":"message timeout"}\n')

    def test_deadlineRestartsWithEachMessage(self):
        """Messages that each complete in time never time out, however long it goes on."""
        for n in range(10):
            self.protocol.dataReceived(b'{"id":"%d","entry":{}}\n{"id":"n%d",' % (n, n))
            self.clock.advance(20)
            self.protocol.dataReceived(b'"entry":{}}\n')
            self.clock.advance(20)
        self.assertFalse(self.transport.disconnecting)
        self.assertNotIn(b"timeout", self.transport.value())

    def test_partialMessageStartedLaterInAChunk(self):
        self.protocol.dataReceived(b'{"id":"a",')
        self.clock.advance(25)
        self.protocol.dataReceived(b'"entry":{}}\n{"id":"b",')
        self.clock.advance(25)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(5)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.transport.value().endswith(b'{"error":"message timeout"}\n'))

    def test_idleBetweenMessagesIsFine(self):
        self.protocol.dataReceived(b'{"id":"a","entry":{}}\n')
        self.clock.advance(MESSAGE_TIMEOUT * 10)
        self.assertFalse(self.transport.disconnecting)

    def test_pausedTimeIsNotCounted(self):
        """While a full send buffer stops our reading, the sender cannot be late."""
        self.protocol.dataReceived(b'{"id":"a",')
        self.clock.advance(10)
        self.protocol.wrappedProtocol.pauseProducing()
        self.clock.advance(MESSAGE_TIMEOUT * 3)
        self.assertFalse(self.transport.disconnecting)
        self.protocol.wrappedProtocol.resumeProducing()
        self.clock.advance(MESSAGE_TIMEOUT - 1)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)

    def test_closedConnectionCancelsDeadline(self):
        self.protocol.dataReceived(b'{"id":"a",')
        close(self.protocol)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HTTPHeadTimeoutTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.site = okSite(self.clock)

    def connect(self):
        return connect(ConnectionLimit(self.site, "http"))

    def trickle(self, protocol, data: bytes, seconds: float) -> None:
        for byte in data:
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(seconds)

    def test_trickledHeadersClosedAtDeadline(self):
        """One byte every 5 s keeps twisted.web's idle timer alive; the head deadline does not."""
        protocol, transport = self.connect()
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(HEAD_TIMEOUT / 6)
            if transport.disconnecting:
                break
        self.assertEqual(self.clock.seconds(), HEAD_TIMEOUT)
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), response)

    def test_deadlineFromFirstByteOfEachRequest(self):
        protocol, transport = self.connect()
        self.clock.advance(HEAD_TIMEOUT * 1.5)  # idle before the request: not counted
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", transport.value())
        self.clock.advance(HEAD_TIMEOUT * 1.5)  # idle between requests: not counted
        self.assertFalse(transport.disconnecting)
        transport.clear()
        self.trickle(protocol, b"GET / HTTP/1.1\r\n", HEAD_TIMEOUT / 20)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(HEAD_TIMEOUT)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(transport.disconnecting)

    def test_idleTimeoutStillApplies(self):
        protocol, transport = self.connect()
        self.clock.advance(self.site.timeOut)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_completeHeadsNeverTimeOut(self):
        protocol, transport = self.connect()
        for _ in range(5):
            self.trickle(protocol, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.5)
        self.clock.advance(HEAD_TIMEOUT)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 5)
