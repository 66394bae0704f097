"""The syslog listener without a network: parsing, framing, client mapping, protocols."""

import io
import sys
from datetime import datetime, timezone

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject
from twisted.internet.interfaces import IPushProducer

from logsvc.producers import ProducerGroup
from logsvc.registry import ClientRegistry
from logsvc.syslogformat import Framing, parse
from logsvc.sysloglistener import (
    DatagramEndpoint, SyslogClients, SyslogDatagramProtocol,
    SyslogStreamFactory, clientName, datagramAddress,
)
from logsvc.tap import Options
from tests.services import buildService

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc).timestamp()


class Recorder:
    """An event observer that keeps every event as a plain tuple."""

    def __init__(self):
        self.events = []

    def logged(self, name, time, messages, truncated, fields=None):
        fields = fields or [{}] * len(messages)
        self.events.extend(("log", name, {"message": m, **f}) for m, f in zip(messages, fields))

    def event(self, kind, name, time, fields):
        self.events.append((kind, name, fields))


class ParseTests(TestCase):
    def test_rfc5424(self):
        message = parse(b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
                        b"\xef\xbb\xbf'su root' failed on /dev/pts/8", NOW)
        self.assertEqual((message.format, message.facility, message.severity),
                         ("rfc5424", 4, 2))
        self.assertEqual(message.timestamp,
                         datetime(2003, 10, 11, 22, 14, 15, 3000, timezone.utc).timestamp())
        self.assertEqual((message.hostname, message.appName, message.procId, message.msgId),
                         ("mymachine.example.com", "su", None, "ID47"))
        self.assertEqual(message.text, "'su root' failed on /dev/pts/8")

    def test_rfc5424StructuredDataAndOffset(self):
        message = parse(b'<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - '
                        b'[exampleSDID@32473 iut="3" eventSource="Ap\\]p"][x@1 y="a b"] '
                        b"An application event", NOW)
        self.assertEqual(message.structuredData,
                         '[exampleSDID@32473 iut="3" eventSource="Ap\\]p"][x@1 y="a b"]')
        self.assertEqual(message.text, "An application event")
        self.assertEqual(message.procId, "8710")
        self.assertAlmostEqual(message.timestamp, datetime(
            2003, 8, 24, 12, 14, 15, 3, timezone.utc).timestamp(), places=5)

    def test_rfc5424NilValues(self):
        message = parse(b"<13>1 - - - - - -", NOW)
        self.assertEqual((message.format, message.timestamp, message.hostname,
                          message.appName, message.text), ("rfc5424", None, None, None, ""))

    def test_bsdWithHostAndTag(self):
        message = parse(b"<13>Jun 15 11:59:58 web-3 nginx[123]: GET / 200", NOW)
        self.assertEqual((message.format, message.hostname, message.appName,
                          message.procId, message.text),
                         ("rfc3164", "web-3", "nginx", "123", "GET / 200"))
        self.assertEqual(message.timestamp, datetime(2026, 6, 15, 11, 59, 58).timestamp())

    def test_bsdTagWithoutColonAfterAHostname(self):
        message = parse(b"<82>Jun 15 11:59:58 vm sshd Accepted", NOW)
        self.assertEqual((message.hostname, message.appName, message.text),
                         ("vm", "sshd", "Accepted"))

    def test_bsdWithoutHostname(self):
        message = parse(b"<86>Jun 15 11:59:58 sshd[7]: Accepted publickey", NOW)
        self.assertEqual((message.hostname, message.appName, message.text),
                         (None, "sshd", "Accepted publickey"))

    def test_bsdYearIsTheNearest(self):
        january = datetime(2027, 1, 1, 0, 5).timestamp()
        message = parse(b"<13>Dec 31 23:59:00 h t: m", january)
        self.assertEqual(message.timestamp, datetime(2026, 12, 31, 23, 59).timestamp())

    def test_rsyslogForwardFormat(self):
        message = parse(b"<13>2026-06-15T11:00:00.5+01:00 host1 app: text", NOW)
        self.assertEqual((message.hostname, message.appName, message.text),
                         ("host1", "app", "text"))
        self.assertEqual(message.timestamp, NOW - 7200 + 0.5)

    def test_priOnly(self):
        message = parse(b"<0>just text\r\n", NOW)
        self.assertEqual((message.format, message.facility, message.severity,
                          message.timestamp, message.hostname, message.appName,
                          message.text), ("rfc3164", 0, 0, None, None, None, "just text"))

    def test_malformed(self):
        for raw in (b"no pri", b"<192>too high", b"<1", b"", b"<>x", b"\xff\xfe"):
            message = parse(raw, NOW)
            self.assertTrue(message.malformed, raw)
            self.assertEqual(message.text, raw.decode("utf-8", "replace"))

    def test_badRfc5424HeaderIsReadAsBsd(self):
        message = parse(b"<13>1 2026-13-45T00:00:00Z h a p m - text", NOW)
        self.assertEqual(message.format, "rfc3164")
        self.assertEqual(message.text, "1 2026-13-45T00:00:00Z h a p m - text")


class FramingTests(TestCase):
    def test_octetCountingAndNewlineMixed(self):
        framing = Framing(100)
        self.assertEqual(framing.feed(b"5 <1>ab<2>newline\n10 <3>a\nb c d"),
                         [(b"<1>ab", False), (b"<2>newline", False), (b"<3>a\nb c d", False)])

    def test_everySplitGivesTheSameMessages(self):
        stream = b"12 <13>hello\nx\n<14>line one\r\n<15>two\n3 abc\n\n9 <1>nine!!"
        whole = Framing(100).feed(stream)
        for cut in range(len(stream) + 1):
            framing = Framing(100)
            self.assertEqual(framing.feed(stream[:cut]) + framing.feed(stream[cut:]), whole)

    def test_longMessagesAreCutAndTheRestSkipped(self):
        framing = Framing(10)
        self.assertEqual(framing.feed(b"25 " + b"a" * 25 + b"<1>next\n"),
                         [(b"a" * 10, True), (b"<1>next", False)])
        self.assertEqual(framing.feed(b"b" * 30), [(b"b" * 10, True)])
        self.assertEqual(framing.feed(b"b" * 30 + b"\n<2>after\n"), [(b"<2>after", False)])

    def test_bufferStaysBounded(self):
        framing = Framing(50)
        for chunk in (b"9" * 10, b"99 ", b"x" * 40, b"y" * 5000, b"\n", b"z" * 49):
            framing.feed(chunk)
            self.assertLessEqual(len(framing._buffer), 50 + 11)

    def test_digitsWithoutSpaceAreALine(self):
        self.assertEqual(Framing(100).feed(b"12345678901234 not counted\n"),
                         [(b"12345678901234 not counted", False)])


class ClientNameTests(TestCase):
    def test_rule(self):
        self.assertEqual(clientName("web-3", "nginx", "10.0.0.1"), "web-3.nginx")
        self.assertEqual(clientName(None, "sshd", "10.0.0.1"), "10.0.0.1.sshd")
        self.assertEqual(clientName(None, None, "::1"), "__1")
        self.assertEqual(clientName("h st/é", "a:b", ""), "h_st__.a_b")
        self.assertEqual(clientName(None, None, ""), "local")
        long = clientName("h" * 300, "a" * 300, "")
        self.assertEqual(len(long), 128)
        self.assertRegex(long, r"\A[A-Za-z0-9_.\-]{1,128}\Z")


class SyslogClientsTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.registry = ClientRegistry(self.clock)
        self.recorder = Recorder()
        self.registry.addObserver(self.recorder)
        self.clients = SyslogClients(self.registry, self.clock, quiet=60)
        self.clients.startService()

    def test_firstMessageConnectsAndCarriesItsFields(self):
        self.clients.receive(b"<11>1 2026-06-15T11:00:00Z web-3 nginx 99 req1 - oops",
                             "10.1.1.1")
        self.assertEqual(self.recorder.events, [
            ("ready", "web-3.nginx", {}),
            ("log", "web-3.nginx", {"message": "oops", "facility": "user", "severity": "err",
                                    "timestamp": NOW - 3600, "procid": "99",
                                    "msgid": "req1"})])
        self.assertEqual(self.registry.lookup("web-3.nginx").log(), [[NOW, "oops"]])
        self.assertTrue(self.registry.lookup("web-3.nginx").online)

    def test_runsOfOneClientAreOneBatch(self):
        calls = []

        class Batches:
            def logged(self, name, time, messages, truncated, fields=None):
                calls.append((name, messages, truncated))

            def event(self, kind, name, time, fields):
                pass

        self.registry.addObserver(Batches())
        self.clients.receiveMany([(b"<13>a: 1", False), (b"<13>a: 2", False),
                                  (b"<13>b: 3", False), (b"<13>b: cut", True),
                                  (b"<13>b: 4", False)], "h")
        self.assertEqual(calls, [("h.a", ["1", "2"], False), ("h.b", ["3"], False),
                                 ("h.b", ["cut"], True), ("h.b", ["4"], False)])
        self.assertEqual(self.registry.lookup("h.b").truncated, 1)

    def test_quietClientsGoOffline(self):
        self.clients.receive(b"<13>a: one", "h1")
        self.clock.advance(30)
        self.clients.receive(b"<13>b: two", "h1")
        self.clock.advance(40)
        self.assertFalse(self.registry.lookup("h1.a").online)
        self.assertTrue(self.registry.lookup("h1.b").online)
        self.clients.receive(b"<13>a: again", "h1")
        self.assertEqual([e[0] for e in self.recorder.events if e[1] == "h1.a"],
                         ["ready", "log", "close", "ready", "log"])
        self.assertEqual(self.clients.status()["online"], 2)

    def test_malformedKeptUnderTheSender(self):
        self.clients.receive(b"no pri at all", "10.0.0.9", truncated=True)
        self.assertEqual(self.recorder.events[-1], (
            "log", "10.0.0.9", {"message": "no pri at all", "malformed": True,
                                "truncated": True}))
        self.assertEqual(self.registry.lookup("10.0.0.9").truncated, 1)
        self.assertEqual((self.clients.counters["malformed"],
                          self.clients.counters["truncated"]), (1, 1))

    def test_nameHeldByALineClientIsRefused(self):
        self.registry.connect("h.app")
        self.clients.receive(b"<13>app: x", "h")
        self.assertEqual(self.clients.counters["refused"], 1)
        self.assertEqual(self.registry.lookup("h.app").log(), [])
        self.flushLoggedErrors()

    def test_onlineNamesAreBounded(self):
        self.clients.maxOnline = 3
        for n in range(5):
            self.clients.receive(b"<13>app: x", f"h{n}")
        self.assertEqual(self.registry.onlineNames(), ["h2.app", "h3.app", "h4.app"])

    def test_stopDisconnectsEveryone(self):
        self.clients.receive(b"<13>app: x", "h")
        self.clients.stopService()
        self.assertEqual(self.registry.onlineNames(), [])
        self.clients.receive(b"<13>app: late", "h")
        self.assertEqual(self.clients.counters["messages"], 1)


class ProtocolTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = ClientRegistry(self.clock)
        self.clients = SyslogClients(self.registry, self.clock)
        self.clients.startService()

    def test_stream(self):
        factory = SyslogStreamFactory(self.clients, 100)
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=None)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"15 <13>app: octets\n<13>app: newline\n<13>app: part")
        self.assertEqual([m for _, m in self.registry.lookup("192.168.1.1.app").log()],
                         ["octets", "newline"])
        verifyObject(IPushProducer, factory)
        factory.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        factory.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_datagram(self):
        protocol = SyslogDatagramProtocol(self.clients, 10)
        protocol.datagramReceived(b"<13>app: a long message\n", ("10.0.0.1", 514))
        record = self.registry.lookup("10.0.0.1.app")
        self.assertEqual(record.log()[0][1], "a")  # cut at 10 bytes: "<13>app: a"
        self.assertEqual(record.truncated, 1)


    def test_pausedDatagramsStopReading(self):
        class Port:
            reading = True

            def stopReading(self):
                self.reading = False

            def startReading(self):
                self.reading = True

        protocol = SyslogDatagramProtocol(self.clients, 100)
        protocol.transport = Port()
        group = ProducerGroup([protocol, SyslogStreamFactory(self.clients, 100)])
        group.pauseProducing()
        self.assertFalse(protocol.transport.reading)
        group.resumeProducing()
        self.assertTrue(protocol.transport.reading)


class EndpointTests(TestCase):
    def test_datagramAddress(self):
        self.assertEqual(datagramAddress("udp:514"), (514, ""))
        self.assertEqual(datagramAddress("UDP:5514:interface=127.0.0.1"), (5514, "127.0.0.1"))
        self.assertEqual(datagramAddress("udp:0:interface=\\:\\:1"), (0, "::1"))
        self.assertIsNone(datagramAddress("tcp:514"))
        for bad in ("udp:", "udp:x", "udp:70000", "udp:514:backlog=5", "udp:514:interface"):
            self.assertRaises(ValueError, datagramAddress, bad)

    def test_datagramEndpointListens(self):
        listened = []

        class Reactor:
            def listenUDP(self, *args):
                listened.append(args)
                return "port"

            def listenUDPInUse(self, *args):
                raise OSError("in use")

        protocol = SyslogDatagramProtocol(None, 10)
        endpoint = DatagramEndpoint(Reactor(), 5514, "127.0.0.1", protocol)
        self.assertEqual(self.successResultOf(endpoint.listen(None)), "port")
        self.assertEqual(listened, [(5514, protocol, "127.0.0.1", 65535)])
        Reactor.listenUDP = Reactor.listenUDPInUse
        self.failureResultOf(endpoint.listen(None), OSError)

    def test_option(self):
        udp = "udp:5514:interface=127.0.0.1"
        for value, expected in (("none", None), ("5514", "tcp:5514"), (udp, udp)):
            options = Options()
            options.parseOptions(["--syslog", value])
            self.assertEqual(options["syslog"], expected)

    def test_malformedOption(self):
        stderr = io.StringIO()
        self.patch(sys, "__stderr__", stderr)
        for value in ("udp:x", "bogus:1"):
            self.assertRaises(SystemExit, Options().parseOptions, ["--syslog", value])
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertIn("--syslog: malformed endpoint 'udp:x'", lines[0])

    def test_serviceHasASyslogListener(self):
        service = buildService(self, "--store", "memory:", "--syslog",
                               "udp:0:interface=127.0.0.1", reactor=MemoryReactorClock())
        listener = service.getServiceNamed("syslog")
        self.assertIsInstance(listener, StreamServerEndpointService)
        self.assertIsInstance(listener.endpoint, DatagramEndpoint)
        self.assertIs(service.syslog, listener.endpoint._protocol._clients)
        journal = [o for o in service.registry._observers if hasattr(o, "backlog")][0]
        self.assertIsInstance(journal._producer, ProducerGroup)
