"""The HTTP resources, metrics, stream protocol and auth, in memory (no sockets)."""

import json
import re
import socket

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import IResource
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from logsvc import __version__
from logsvc.auth import makePortal
from logsvc.errors import EntryError, StoreError
from logsvc.journal.protocol import JournalFactory
from logsvc.lineservice import LineFactory
from logsvc.registry import ClientRegistry
from logsvc.service import LogService
from logsvc.memorystore import MemoryStore
from logsvc.store import canonical
from logsvc.stream import CLOSE_TIMEOUT, CLOSE_TOO_SLOW, StreamOptions, StreamProtocol
from logsvc.resources import JOURNAL_PAGE_MAX
from logsvc.web import httpResource
from tests.services import serviceMetrics, webRoot

BASE = "http://logsvc.test"


class ListenEndpoint:
    """An endpoint whose listen() never completes: a port that is not bound yet."""

    def listen(self, factory):
        return Deferred()


def makeService(store=None, listen=True):
    clock = Clock()
    clock.advance(1000)
    registry = ClientRegistry(clock, bufferSize=4, maxOffline=1)
    service = LogService(registry, store or MemoryStore(clock), clock)
    reactor = MemoryReactor()
    service.addListener("port", "tcp:2212", TCP4ServerEndpoint(reactor, 2212),
                        LineFactory(registry, clock))
    service.addListener("http", "tcp:8080",
                        TCP4ServerEndpoint(reactor, 8080) if listen else ListenEndpoint(),
                        LineFactory(registry, clock))
    service.privilegedStartService()
    service.startService()
    return service


class WebTestCase(TestCase):
    def setUp(self):
        self.service = makeService()
        self.clock = self.service.clock
        self.client = StubTreq(webRoot(self.service))

    def get(self, path, client=None, **kwargs):
        client = client or self.client
        response = self.successResultOf(client.get(BASE + path, **kwargs))
        body = self.successResultOf(response.content())
        return response, body

    def getJSON(self, path, code=200):
        response, body = self.get(path)
        self.assertEqual(response.code, code, body)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/json; charset=utf-8"])
        return json.loads(body)

    def append(self, *entries):
        for entry in entries:
            self.successResultOf(self.service.store.append([canonical(entry)]))
        self.clock.advance(0)


def externalURLs(page: str) -> list:
    """
    Every URL in C{page} that leaves the server: with a scheme and host, or
    protocol-relative, in an attribute, a CSS C{url()} or C{@import}, or a script's string.
    """
    found = re.findall(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>)]+""", page)
    found += re.findall(r"""(?:src|href|action|srcset|poster|data)\s*=\s*["']?\s*(//[^\s"'>]+)""",
                        page, re.IGNORECASE)
    found += re.findall(r"""(?:url\(|@import)\s*["']?\s*(//[^\s"')]+)""", page, re.IGNORECASE)
    return found


class ExternalURLsTests(TestCase):
    def test_findsEveryKind(self):
        page = ('<script src="https://cdn.example/x.js"></script><link href=//cdn.example/s>'
                '<style>@import "//fonts.example/f"; b{background:url(//img.example/i)}</style>'
                '<script>fetch("http://api.example/"); new WebSocket("wss://ws.example")</script>'
                '<a href="/clients">ok</a><img src="static/logo.png">'
                '<script>const s = "ws:" + "//" + location.host;</script>')
        self.assertEqual(sorted(externalURLs(page)), [
            "//cdn.example/s", "//fonts.example/f", "//img.example/i",
            "http://api.example/", "https://cdn.example/x.js", "wss://ws.example"])


class RootTests(WebTestCase):
    def test_oneTreePerService(self):
        """The realm asks for the tree on every request: it hands out the one it was given."""
        root = webRoot(self.service)
        verifyObject(IResource, root)
        realm = makePortal(self.service, [], root).realm
        self.assertIs(realm.requestAvatar(None, None, IResource)[1], root)
        self.assertIs(realm.requestAvatar(None, None, IResource)[1], root)
        self.assertIsNot(webRoot(makeService()), root)

    def test_page(self):
        response, body = self.get("/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["text/html; charset=utf-8"])
        self.assertIn(b"<title>logsvc</title>", body)
        self.assertEqual(externalURLs(body.decode("utf-8")), [])

    def test_unknownPath(self):
        self.assertEqual(self.getJSON("/nothing", 404), {"error": "not found"})


class StatusTests(WebTestCase):
    def test_status(self):
        registry = self.service.registry
        record = registry.connect("alpha")
        registry.log(record, 1.0, ["one", "two"])
        registry.disconnect(registry.connect("beta"))
        self.append({"n": 1}, {"n": 2})
        self.clock.advance(7.5)
        self.assertEqual(self.getJSON("/status"), {
            "version": __version__, "uptime": 7.5, "clients": {"online": 1, "offline": 1},
            "lines": 2, "first": 1, "head": 2, "journal_id": self.service.store.journalId,
            "node": f"{socket.gethostname()}:2212"})

    def test_nodeNamed(self):
        self.service.nodeName = "eu-west-2"
        self.assertEqual(self.getJSON("/status")["node"], "eu-west-2")
        self.assertEqual(self.getJSON("/health")["node"], "eu-west-2")


class ClientsTests(WebTestCase):
    def setUp(self):
        super().setUp()
        registry = self.service.registry
        self.record = registry.connect("web-1")
        registry.log(self.record, 5.0, ["a", "b"])
        registry.set(self.record, 6.0, "mood", "calm")

    def test_clients(self):
        self.assertEqual(self.getJSON("/clients"), {"web-1": {
            "connectedAt": 1000.0, "online": True, "log": [[5.0, "a"], [5.0, "b"]],
            "state": {"mood": "calm"},
            "counters": {"lines": 2, "bytes": 0, "ignored": 0, "truncated": 0}}})
        self.assertEqual(self.getJSON("/clients/"), self.getJSON("/clients"))

    def test_clientsInPages(self):
        for name in ("api-1", "db-1"):
            self.service.registry.connect(name)
        self.assertEqual(list(self.getJSON("/clients?limit=2")), ["api-1", "db-1"])
        self.assertEqual(list(self.getJSON("/clients?after=db-1&limit=2")), ["web-1"])
        self.assertEqual(list(self.getJSON("/clients?after=api-1")), ["db-1", "web-1"])
        self.assertEqual(self.getJSON("/clients?after=web-1&limit=2"), {})
        self.assertEqual(self.getJSON("/clients?limit=0", 400),
                         {"error": "limit must be a positive integer"})

    def test_client(self):
        body = self.getJSON("/clients/web-1")
        self.assertEqual(body["name"], "web-1")
        self.assertEqual(body["log"], [[5.0, "a"], [5.0, "b"]])

    def test_offlineClient(self):
        self.service.registry.disconnect(self.record)
        self.assertIs(self.getJSON("/clients/web-1")["online"], False)

    def test_unknownClient(self):
        self.assertEqual(self.getJSON("/clients/nobody", 404),
                         {"error": "no such client: nobody"})


class JournalTests(WebTestCase):
    def test_page(self):
        self.append(*({"n": n, "text": "é"} for n in range(1, 6)))
        self.assertEqual(self.getJSON("/journal?from=2&limit=2"), {
            "head": 5, "next": 4,
            "entries": [{"index": 2, "entry": {"n": 2, "text": "é"}},
                        {"index": 3, "entry": {"n": 3, "text": "é"}}]})

    def test_defaultsAndEnd(self):
        self.append({"n": 1})
        self.assertEqual(self.getJSON("/journal"),
                         {"head": 1, "next": 2, "entries": [{"index": 1, "entry": {"n": 1}}]})
        self.assertEqual(self.getJSON("/journal?from=9"), {"head": 1, "next": 9, "entries": []})

    def test_limitCapped(self):
        self.append(*({"n": n} for n in range(JOURNAL_PAGE_MAX + 5)))
        body = self.getJSON(f"/journal?limit={JOURNAL_PAGE_MAX * 10}")
        self.assertEqual(len(body["entries"]), JOURNAL_PAGE_MAX)
        self.assertEqual(body["next"], JOURNAL_PAGE_MAX + 1)

    def test_unreadableEntry(self):
        store = self.service.store
        store.read = lambda start, limit: succeed([(1, EntryError("checksum mismatch"))])
        self.assertEqual(self.getJSON("/journal")["entries"],
                         [{"index": 1, "error": "checksum mismatch"}])

    def test_badParameters(self):
        for query, name in [("from=0", "from"), ("from=x", "from"), ("from=-3", "from"),
                            ("limit=0", "limit"), ("limit=1.5", "limit")]:
            self.assertEqual(self.getJSON(f"/journal?{query}", 400),
                             {"error": f"{name} must be a positive integer"})


class BrokenStore(MemoryStore):
    def check(self):
        return fail(StoreError("disk full: /var/lib/logsvc"))


class HealthTests(WebTestCase):
    def test_healthy(self):
        self.assertEqual(self.getJSON("/health"), {
            "status": "ok", "listeners": {"port": "up", "http": "up"}, "store": "ok",
            "first": 1, "head": 0, "node": f"{socket.gethostname()}:2212"})

    def test_listenerDown(self):
        self.client = StubTreq(webRoot(makeService(listen=False)))
        body = self.getJSON("/health", 503)
        self.assertEqual(body["error"], "listener http is not listening")
        self.assertEqual(body["listeners"], {"port": "up", "http": "down"})

    def test_storeDown(self):
        self.client = StubTreq(webRoot(makeService(BrokenStore(Clock()))))
        body = self.getJSON("/health", 503)
        self.assertEqual(body["error"], "store: disk full: /var/lib/logsvc")

    def test_stopped(self):
        self.service.stopService()
        self.assertEqual(self.getJSON("/health", 503)["listeners"],
                         {"port": "down", "http": "down"})


class PendingStore(MemoryStore):
    """head() waits until the test fires it, and records cancellation."""

    def __init__(self, clock):
        super().__init__(clock)
        self.pending: list[Deferred] = []

    def head(self):
        d = Deferred()
        self.pending.append(d)
        return d


class AsyncRenderTests(TestCase):
    def test_clientGoesAway(self):
        """A client that disconnects cancels the work; nothing is written afterwards."""
        store = PendingStore(Clock())
        resource = webRoot(makeService(store)).children[b"status"]
        request = DummyRequest([b""])
        resource.render(request)
        self.assertEqual(request.written, [])
        request.processingFailed(Failure(ConnectionError("gone")))
        self.assertTrue(store.pending[0].called, "the store read was not cancelled")
        self.assertEqual((request.written, request.finished), ([], 0))

    def test_lateResult(self):
        store = PendingStore(Clock())
        resource = webRoot(makeService(store)).children[b"status"]
        request = DummyRequest([b""])
        resource.render(request)
        store.pending[0].callback(41)
        self.assertEqual(json.loads(b"".join(request.written))["head"], 41)
        self.assertEqual(request.finished, 1)

    def test_internalError(self):
        store = PendingStore(Clock())
        resource = webRoot(makeService(store)).children[b"status"]
        request = DummyRequest([b""])
        resource.render(request)
        store.pending[0].errback(ZeroDivisionError())
        self.assertEqual(request.responseCode, 500)
        self.assertEqual(json.loads(b"".join(request.written)), {"error": "internal error"})
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class MetricsTests(WebTestCase):
    def scrape(self, **headers) -> dict:
        response, body = self.get("/metrics", headers=headers)
        self.assertEqual(response.code, 200)
        self.contentType = response.headers.getRawHeaders("content-type")[0]
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def test_counters(self):
        registry = self.service.registry
        first = registry.connect("a")
        first.bytes, first.ignored = 100, 2
        registry.log(first, 1.0, ["x", "y"], truncated=True)
        registry.set(first, 1.0, "k", "v")
        registry.disconnect(first)
        second = registry.connect("b")
        second.bytes = 50
        registry.disconnect(second)   # evicts "a" (maxOffline=1): its counters stay counted
        registry.connect("c")
        self.service.getServiceNamed("port").factory.connections = 3
        self.append({"n": 1}, {"n": 2}, {"n": 3})
        samples = self.scrape()
        self.assertTrue(self.contentType.startswith("text/plain; version="), self.contentType)
        expected = {
            "logsvc_lines_total": 2, "logsvc_sets_total": 1,
            "logsvc_received_bytes_total": 150, "logsvc_truncated_lines_total": 1,
            "logsvc_ignored_lines_total": 2, "logsvc_journal_appends_total": 3,
            "logsvc_journal_head": 3, "logsvc_store_commit_seconds_count": 1,
            "logsvc_stream_subscribers": 0, "logsvc_journal_reader_lag": 0,
            "logsvc_store_deduplication_lag": 0,
            "logsvc_stream_dropped_messages_total": 0, "logsvc_start_time_seconds": 1000,
        }
        self.assertEqual({name: samples[(name, ())] for name in expected}, expected)
        self.assertEqual(samples[("logsvc_connections", (("listener", "port"),))], 3)
        self.assertEqual(samples[("logsvc_listener_up", (("listener", "http"),))], 1)
        self.assertEqual(samples[("logsvc_clients", (("state", "online"),))], 1)
        self.assertEqual(samples[("logsvc_clients", (("state", "offline"),))], 1)
        self.assertEqual(samples[("logsvc_build_info", (("version", __version__),))], 1)

    def test_journalPortReadersLag(self):
        journal = JournalFactory(self.service.store, 1048576, Clock())
        self.service.addListener("journal", "tcp:8089",
                                 TCP4ServerEndpoint(MemoryReactor(), 8089), journal)
        self.service.getServiceNamed("journal").privilegedStartService()
        self.client = StubTreq(webRoot(self.service, journal))
        self.append(*({"n": n} for n in range(5)))
        reader = journal.buildProtocol(None)
        transport = StringTransport()
        reader.makeConnection(transport)
        reader.pauseProducing()
        reader.dataReceived(b'{"from":2}\n')
        self.assertEqual(self.scrape()[("logsvc_journal_reader_lag", ())], 4)
        reader.connectionLost(None)
        self.assertEqual(self.scrape()[("logsvc_journal_reader_lag", ())], 0)

    def test_commitLatency(self):
        observe = self.service.store._commitObservers[0]
        observe(0.003, 10)
        observe(0.2, 1)
        samples = self.scrape()
        bucket = "logsvc_store_commit_seconds_bucket"
        self.assertEqual(samples[(bucket, (("le", "0.005"),))], 1)
        self.assertEqual(samples[(bucket, (("le", "+Inf"),))], 2)
        self.assertEqual(samples[("logsvc_journal_appends_total", ())], 11)

    def test_deduplicationLag(self):
        """Read from the store at each scrape."""
        self.patch(self.service.store, "deduplicationLag", lambda: succeed(7))
        self.assertEqual(self.scrape()[("logsvc_store_deduplication_lag", ())], 7)

    def test_openMetrics(self):
        self.scrape(accept=["application/openmetrics-text; version=1.0.0"])
        self.assertTrue(self.contentType.startswith("application/openmetrics-text"))

    def test_ownRegistry(self):
        """Two services in one process keep apart metrics."""
        self.append({"n": 1})
        other = StubTreq(webRoot(makeService()))
        response = self.successResultOf(other.get(BASE + "/metrics"))
        body = self.successResultOf(response.content()).decode()
        self.assertIn("logsvc_journal_head 0.0", body)


class FakeWebSocket:
    """The WebSocketTransport a StreamProtocol writes to."""

    def __init__(self):
        self.transport = StringTransport()
        self.transport.registerProducer(object(), True)   # the HTTP channel's
        self.messages: list = []
        self.producer = None
        self.closed = None

    def sendTextMessage(self, text: str) -> None:
        self.messages.append(json.loads(text))

    def attachProducer(self, producer) -> None:
        verifyObject(IPushProducer, producer)
        self.producer = producer

    def detachProducer(self) -> None:
        self.producer = None

    def loseConnection(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


class StreamProtocolTests(TestCase):
    def setUp(self):
        self.service = makeService()
        self.metrics = serviceMetrics(self.service)
        self.registry = self.service.registry

    def connect(self, query: dict | None = None) -> tuple:
        args = {k.encode(): [v.encode()] for k, v in (query or {}).items()}
        protocol = StreamProtocol(self.service, self.metrics, StreamOptions(args))
        socket = FakeWebSocket()
        protocol.negotiationStarted(socket)
        protocol.negotiationFinished()
        return protocol, socket

    def test_options(self):
        options = StreamOptions({b"client": [b"web-*"], b"events": [b"log, entry"],
                                 b"from": [b"3"]})
        self.assertEqual((options.clients, options.events, options.fromIndex),
                         ("web-*", ["log", "entry"], 3))
        for bad in ({b"events": [b"log,nope"]}, {b"from": [b"0"]}, {b"from": [b"x"]}):
            self.assertRaises(ValueError, StreamOptions, bad)

    def test_liveEvents(self):
        protocol, socket = self.connect({"client": "web-*", "events": "ready,log"})
        self.assertIs(socket.producer, protocol.subscription)
        self.assertIsNone(socket.transport.producer, "the HTTP channel still produces")
        self.registry.connect("db-1")
        record = self.registry.connect("web-1")
        self.registry.log(record, 2.0, ["hi"])
        self.registry.set(record, 2.0, "k", "v")
        self.assertEqual(socket.messages, [
            {"type": "event", "event": "ready", "client": "web-1", "time": 1000.0},
            {"type": "event", "event": "log", "client": "web-1", "time": 2.0, "message": "hi"}])
        self.assertEqual(self.metrics.streams, {protocol})

    def test_replayAndLag(self):
        for n in (1, 2, 3):
            self.service.store.append([canonical({"n": n})])
        self.service.clock.advance(0)
        protocol, socket = self.connect({"events": "entry", "from": "2"})
        self.service.clock.advance(0)
        self.assertEqual(socket.messages, [{"type": "entry", "index": 2, "entry": {"n": 2}},
                                           {"type": "entry", "index": 3, "entry": {"n": 3}}])
        self.assertEqual(protocol.position, 3)
        protocol.position = 1
        self.metrics.head = 3
        samples = {s.name: s.value for f in self.metrics.registry.collect() for s in f.samples}
        self.assertEqual(samples["logsvc_journal_reader_lag"], 2)

    def test_slowSubscriber(self):
        """A paused subscriber is told what it missed, then closed once too far behind."""
        protocol, socket = self.connect({"events": "log"})
        record = self.registry.connect("chatty")
        socket.producer.pauseProducing()
        self.registry.log(record, 1.0, [str(n) for n in range(1005)])
        socket.producer.resumeProducing()
        self.assertEqual(len(socket.messages), 1001)
        self.assertEqual(socket.messages[-1], {"type": "dropped", "dropped": 5})
        self.assertEqual(self.metrics.dropped._value.get(), 5)

        socket.producer.pauseProducing()
        self.registry.log(record, 1.0, ["x"] * 12000)
        self.assertEqual(socket.closed[0], CLOSE_TOO_SLOW)
        self.assertIsNone(socket.producer)
        self.assertFalse(socket.transport.disconnecting)
        self.service.clock.advance(CLOSE_TIMEOUT)
        self.assertTrue(socket.transport.disconnecting)

    def test_connectionLost(self):
        protocol, socket = self.connect()
        protocol.connectionLost(Failure(ConnectionError()))
        self.assertTrue(protocol.subscription.ended)
        self.assertEqual(self.metrics.streams, set())
        self.registry.connect("late")
        self.assertEqual(socket.messages, [])


class StreamResourceTests(WebTestCase):
    def test_badFilters(self):
        self.assertEqual(self.getJSON("/stream?events=log,bogus", 400), {
            "error": "unknown event kind 'bogus': use ready, log, set, close, entry"})
        self.assertEqual(self.getJSON("/stream?from=0", 400),
                         {"error": "from must be a positive integer"})

    def test_notAnUpgrade(self):
        response, _ = self.get("/stream")
        self.assertEqual(response.code, 400)


class AuthTests(WebTestCase):
    def setUp(self):
        super().setUp()
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        root = webRoot(self.service)
        self.guarded = StubTreq(httpResource(root, makePortal(self.service, [checker], root)))

    def test_noCredentials(self):
        for path in ("/", "/status", "/metrics", "/stream", "/clients/x"):
            response, _ = self.get(path, client=self.guarded)
            self.assertEqual(response.code, 401, path)
            self.assertEqual(response.headers.getRawHeaders("www-authenticate"),
                             ['basic realm="logsvc"'])

    def test_wrongPassword(self):
        response, _ = self.get("/status", client=self.guarded, auth=("alice", "guess"))
        self.assertEqual(response.code, 401)

    def test_credentials(self):
        response, body = self.get("/status", client=self.guarded, auth=("alice", "secret"))
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["version"], __version__)
        response, body = self.get("/clients/x", client=self.guarded, auth=("alice", "secret"))
        self.assertEqual(response.code, 404)

    def test_anonymous(self):
        """Without a portal the tree is served as it is."""
        root = webRoot(self.service)
        self.assertIs(httpResource(root), root)
