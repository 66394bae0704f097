"""The line service, driven in memory."""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from logsvc.errors import NameInUse, NoSuchClient
from logsvc.interfaces import IClientRegistry, IEventObserver
from logsvc.lineservice import IDENTIFY_TIMEOUT, LineFactory
from logsvc.registry import ClientRegistry
from tests.observers import Recorder


class LineServiceTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = ClientRegistry(self.clock, bufferSize=128)
        self.factory = LineFactory(self.registry, self.clock, maxLine=65536)

    def connect(self, factory=None):
        protocol = (factory or self.factory).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def client(self, name="web-1", factory=None):
        protocol, transport = self.connect(factory)
        protocol.dataReceived(b"IAM " + name.encode() + b"\n")
        return protocol, transport

    def messages(self, name="web-1"):
        return [m for _, m in self.registry.lookup(name).log()]

    def test_logStoresTimeAndMessage(self):
        protocol, _ = self.client()
        self.clock.advance(0.5)
        protocol.dataReceived(b"LOG  hello world  \n")
        self.assertEqual(self.registry.lookup("web-1").log(), [[1000.5, "hello world"]])

    def test_dollarIsJustText(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"LOG costs $5 and $HOME\nLOG $\n")
        self.assertEqual(self.messages(), ["costs $5 and $HOME", "$"])

    def test_emptyLog(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"LOG\nLOG \nLOG    \r\n")
        self.assertEqual(self.messages(), ["", "", ""])

    def test_setKeyWithEmptyValue(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"SET key\nSET other   \n")
        self.assertEqual(self.registry.lookup("web-1").state, {"key": "", "other": ""})

    def test_setMultiWordValue(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"SET status  up and   running \r\n")
        self.assertEqual(self.registry.lookup("web-1").state, {"status": "up and   running"})

    def test_setLaterValueWins(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"SET n 1\nSET n 2\n")
        self.assertEqual(self.registry.lookup("web-1").state, {"n": "2"})

    def test_setWithBadKeyIsIgnored(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"SET\nSET k-ey v\nSET \xc3\xa9t\xc3\xa9 v\n")
        record = self.registry.lookup("web-1")
        self.assertEqual((record.state, record.ignored), ({}, 3))

    def test_crlf(self):
        protocol, transport = self.client()
        protocol.dataReceived(b"LOG one\r\nSET k v\r\n")
        self.assertEqual(self.messages(), ["one"])
        self.assertEqual(self.registry.lookup("web-1").state, {"k": "v"})
        self.assertFalse(transport.disconnecting)

    def test_crlfOnIAM(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"IAM web-2\r\n")
        self.assertEqual(self.registry.onlineNames(), ["web-2"])
        self.assertEqual(transport.value(), b"")

    def test_linesSplitAcrossChunks(self):
        protocol, _ = self.connect()
        for byte in b"IAM a\nLOG split line\nSET k v\n":
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(self.messages("a"), ["split line"])
        self.assertEqual(self.registry.lookup("a").state, {"k": "v"})

    def test_invalidUTF8IsReplaced(self):
        protocol, transport = self.client()
        protocol.dataReceived(b"LOG bad \xff\xfe byte\nSET k \xc3\n")
        self.assertEqual(self.messages(), ["bad \ufffd\ufffd byte"])
        self.assertEqual(self.registry.lookup("web-1").state, {"k": "\ufffd"})
        self.assertFalse(transport.disconnecting)

    def test_otherCommandsIgnoredAndCounted(self):
        protocol, transport = self.client()
        protocol.dataReceived(b"HELLO\nlog lower\n\nIAM web-1\nIAM other\nLOG kept\n")
        record = self.registry.lookup("web-1")
        self.assertEqual((record.ignored, self.messages()), (5, ["kept"]))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.registry.onlineNames(), ["web-1"])

    def test_longLineIsTruncatedAndConnectionStays(self):
        factory = LineFactory(self.registry, self.clock, maxLine=1000)
        protocol, transport = self.client(factory=factory)
        long = b"LOG " + b"x" * 200_000
        for i in range(0, len(long), 4096):
            protocol.dataReceived(long[i:i + 4096])
        protocol.dataReceived(b"\nLOG normal\n")
        record = self.registry.lookup("web-1")
        self.assertEqual(self.messages(), ["x" * 996, "normal"])
        self.assertEqual(record.truncated, 1)
        self.assertFalse(transport.disconnecting)
        self.assertLessEqual(len(protocol._pending), 1000)

    def test_longLineInOneChunk(self):
        """A whole over-long line arriving at once, between normal lines."""
        factory = LineFactory(self.registry, self.clock, maxLine=10)
        protocol, _ = self.client(factory=factory)
        protocol.dataReceived(b"LOG a\nLOG 0123456789abc\nLOG b\n")
        self.assertEqual(self.messages(), ["a", "012345", "b"])
        self.assertEqual(self.registry.lookup("web-1").truncated, 1)

    def test_defaultMaxLineWith200KLine(self):
        protocol, transport = self.client()
        protocol.dataReceived(b"LOG " + b"y" * 200_000 + b"\nLOG after\n")
        self.assertEqual(self.messages(), ["y" * (65536 - 4), "after"])
        self.assertFalse(transport.disconnecting)

    def test_truncatedLogIsMarkedInEvents(self):
        recorder = Recorder()
        self.registry.addObserver(recorder)
        factory = LineFactory(self.registry, self.clock, maxLine=8)
        protocol, _ = self.client(factory=factory)
        protocol.dataReceived(b"LOG abcdefghij\n")
        self.assertEqual(recorder.events[-1],
                         ("log", "web-1", 1000, {"message": "abcd", "truncated": True}))

    def test_memoryStaysBoundedWithoutNewlines(self):
        factory = LineFactory(self.registry, self.clock, maxLine=100)
        protocol, _ = self.client(factory=factory)
        for _ in range(1000):
            protocol.dataReceived(b"z" * 1000)
            self.assertLessEqual(len(protocol._pending), 100)

    def test_endedFirstLineOverMaxLine(self):
        """An IAM line longer than --max-line is judged whole; what follows it is read."""
        factory = LineFactory(self.registry, self.clock, maxLine=8)
        protocol, transport = self.connect(factory)
        data = b"IAM abcdef  \nLOG x\nSET k v\n"
        protocol.dataReceived(data)
        record = self.registry.lookup("abcdef")
        self.assertEqual((self.messages("abcdef"), record.state, record.bytes),
                         (["x"], {"k": "v"}, len(data)))
        self.assertFalse(transport.disconnecting)

    def test_openFirstLineOverMaxLine(self):
        """An IAM line still open past --max-line is judged by its head, the rest skipped."""
        factory = LineFactory(self.registry, self.clock, maxLine=8)
        protocol, transport = self.connect(factory)
        chunks = [b"IAM ab" + b" " * 20, b"  ignored\nLOG y\n"]
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.assertEqual(self.messages("ab"), ["y"])
        self.assertEqual(self.registry.lookup("ab").bytes, sum(map(len, chunks)))
        self.assertFalse(transport.disconnecting)

    def test_refusedConnectionReadsNoMore(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"HELLO\n")
        protocol.dataReceived(b"IAM late\nLOG x\n")
        self.assertEqual(transport.value(), b"ERR expected IAM <name>\n")
        self.assertEqual(self.registry.counts(), {"online": 0, "offline": 0})

    def test_duplicateNameRefusedFirstUnaffected(self):
        first, firstTransport = self.client("api")
        second, secondTransport = self.client("api")
        self.assertEqual(secondTransport.value(), b"ERR name in use: api\n")
        self.assertTrue(secondTransport.disconnecting)
        second.connectionLost(None)
        first.dataReceived(b"LOG still here\n")
        self.assertEqual(self.messages("api"), ["still here"])
        self.assertFalse(firstTransport.disconnecting)
        self.assertEqual(self.registry.onlineNames(), ["api"])

    def test_badFirstLine(self):
        for first in [b"LOG hi\n", b"IAM\n", b"IAM bad name\n", b"IAM " + b"n" * 129 + b"\n",
                      b"IAM caf\xc3\xa9\n", b"iam x\n"]:
            protocol, transport = self.connect()
            protocol.dataReceived(first + b"LOG after\n")
            self.assertTrue(transport.value().startswith(b"ERR "), first)
            self.assertEqual(transport.value().count(b"\n"), 1)
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.registry.records(), [])

    def test_longestValidName(self):
        name = "a" * 128
        self.client(name)
        self.assertEqual(self.registry.onlineNames(), [name])

    def test_silencePast30Seconds(self):
        protocol, transport = self.connect()
        self.clock.advance(IDENTIFY_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertEqual(transport.value(), b"ERR identify within 30 seconds\n")
        self.assertTrue(transport.disconnecting)

    def test_identifiedClientIsNotTimedOut(self):
        protocol, transport = self.client()
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ringKeepsNewestOldestFirst(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"".join(b"LOG line %d\n" % i for i in range(1000)))
        record = self.registry.lookup("web-1")
        self.assertEqual(self.messages(), [f"line {i}" for i in range(872, 1000)])
        self.assertEqual((record.lines, self.registry.totalLines), (1000, 1000))

    def test_ringAcrossManyChunksAndMixedCommands(self):
        protocol, _ = self.client()
        for i in range(1000):
            protocol.dataReceived(b"LOG line %d\nSET i %d\n" % (i, i))
        self.assertEqual(self.messages(), [f"line {i}" for i in range(872, 1000)])
        self.assertEqual(self.registry.lookup("web-1").state, {"i": "999"})

    def test_reconnectKeepsRingEmptiesState(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"LOG before crash\nSET k v\n")
        protocol.connectionLost(None)
        record = self.registry.lookup("web-1")
        self.assertFalse(record.online)
        self.assertEqual(record.state, {"k": "v"})
        self.clock.advance(5)
        again, _ = self.client()
        record = self.registry.lookup("web-1")
        self.assertEqual((record.online, record.state, record.connectedAt), (True, {}, 1005))
        again.dataReceived(b"LOG after restart\n")
        self.assertEqual(self.messages(), ["before crash", "after restart"])

    def test_countersCountBytes(self):
        protocol, _ = self.client()
        protocol.dataReceived(b"LOG abc\n")
        protocol.dataReceived(b"JUNK\n")
        self.assertEqual(self.registry.lookup("web-1").counters(),
                         {"lines": 1, "bytes": 23, "ignored": 1, "truncated": 0})

    def test_eventsInOrderToEveryObserver(self):
        first, second = Recorder(), Recorder()
        self.registry.addObserver(first)
        self.registry.addObserver(second)
        protocol, _ = self.client()
        protocol.dataReceived(b"LOG a\nSET k v\nLOG b\n")
        protocol.connectionLost(None)
        expected = [
            ("ready", "web-1", 1000, {}),
            ("log", "web-1", 1000, {"message": "a"}),
            ("set", "web-1", 1000, {"key": "k", "value": "v"}),
            ("log", "web-1", 1000, {"message": "b"}),
            ("close", "web-1", 1000, {}),
        ]
        self.assertEqual(first.events, expected)
        self.assertEqual(second.events, expected)

    def test_everyLineReachesObserversInABigChunk(self):
        recorder = Recorder()
        self.registry.addObserver(recorder)
        protocol, _ = self.client()
        protocol.dataReceived(b"".join(b"LOG %d\n" % i for i in range(500)))
        logs = [fields["message"] for kind, _, _, fields in recorder.events if kind == "log"]
        self.assertEqual(logs, [str(i) for i in range(500)])

    def test_removedObserverHearsNothing(self):
        recorder = Recorder()
        self.registry.addObserver(recorder)
        self.registry.removeObserver(recorder)
        self.client()
        self.assertEqual(recorder.events, [])

    def test_refusedConnectionEmitsNoEvents(self):
        recorder = Recorder()
        self.client("x")
        self.registry.addObserver(recorder)
        protocol, _ = self.client("x")
        protocol.connectionLost(None)
        self.assertEqual(recorder.events, [])
        self.assertTrue(self.registry.lookup("x").online)


class RegistryTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = ClientRegistry(self.clock, bufferSize=4, maxOffline=2)

    def test_interfaces(self):
        self.assertTrue(verifyObject(IClientRegistry, self.registry))
        self.assertTrue(verifyObject(IEventObserver, Recorder()))

    def test_connectTwiceRaises(self):
        self.registry.connect("a")
        self.assertRaises(NameInUse, self.registry.connect, "a")

    def test_unknownName(self):
        self.assertRaises(NoSuchClient, self.registry.lookup, "nobody")

    def test_longestOfflineEvictedFirst(self):
        """
        Connected b, c, a; offline c, a, b: c goes first, then a.  Connect order or name
        order would evict another.
        """
        records = {name: self.registry.connect(name) for name in ["b", "c", "a"]}
        for name in ["c", "a", "b"]:
            self.clock.advance(1)
            self.registry.disconnect(records[name])
        self.assertEqual([r.name for r in self.registry.records()], ["a", "b"])
        self.assertRaises(NoSuchClient, self.registry.lookup, "c")
        self.registry.disconnect(self.registry.connect("d"))
        self.assertEqual([r.name for r in self.registry.records()], ["b", "d"])

    def test_onlineRecordsAreNeverEvicted(self):
        online = [self.registry.connect(n) for n in ["x", "y", "z"]]
        for name in ["a", "b", "c"]:
            self.registry.disconnect(self.registry.connect(name))
        self.assertEqual(self.registry.onlineNames(), [r.name for r in online])
        self.assertEqual(self.registry.counts(), {"online": 3, "offline": 2})

    def test_reconnectedRecordLeavesOfflineSet(self):
        record = self.registry.connect("a")
        self.registry.disconnect(record)
        self.registry.connect("a")
        self.assertEqual(self.registry.counts(), {"online": 1, "offline": 0})

    def test_summaryIsPlainTypes(self):
        record = self.registry.connect("a")
        self.registry.log(record, 1.5, ["m"])
        self.registry.set(record, 2.0, "k", "v")
        self.assertEqual(record.summary(), {
            "connectedAt": 0.0, "online": True, "log": [[1.5, "m"]], "state": {"k": "v"},
            "counters": {"lines": 1, "bytes": 0, "ignored": 0, "truncated": 0}})
