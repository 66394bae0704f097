"""
The decisions of several nodes sharing one registry, without a database: name claims
(in the registry and the line service), records and events of other nodes' clients,
heartbeats and event batches on a task.Clock, and the events' notification payloads.
"""

import json

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from logsvc.errors import NameInUse
from logsvc.lineservice import LineFactory
from logsvc.nodes import EVENTS_PENDING, EVENTS_TICK, HEARTBEAT, HOLD, SharedRegistry, payloads
from logsvc.registry import ClientRecord, ClientRegistry
from tests.observers import Recorder



class Names:
    """Another node's answers to claims, given by the test."""

    def __init__(self):
        self.asked: dict[str, Deferred] = {}
        self.released: list = []

    def claim(self, name: str) -> Deferred:
        self.asked[name] = Deferred()
        return self.asked[name]

    def release(self, name: str) -> None:
        self.released.append(name)


def saved(*lines: str, state=None, connectedAt=1.0) -> dict:
    return {"connectedAt": connectedAt, "disconnectedAt": None, "online": True,
            "log": [[2.0, line] for line in lines], "state": state or {},
            "counters": {"lines": len(lines), "bytes": 10, "ignored": 0, "truncated": 0}}


class ClaimTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = ClientRegistry(self.clock, bufferSize=4)
        self.names = Names()

    def test_withoutNamesClaimIsConnect(self):
        record = self.successResultOf(self.registry.claim("web-1"))
        self.assertTrue(record.online)
        self.failureResultOf(self.registry.claim("web-1"), NameInUse)

    def test_claimWaitsForTheCluster(self):
        self.registry.names = self.names
        claimed = self.registry.claim("web-1")
        self.assertNoResult(claimed)
        self.failureResultOf(self.registry.claim("web-1"), NameInUse)
        self.assertEqual(self.registry.onlineNames(), [])
        self.names.asked["web-1"].callback(True)
        record = self.successResultOf(claimed)
        self.assertEqual(self.registry.claimedNames(), ["web-1"])
        self.registry.disconnect(record)
        self.assertEqual(self.names.released, ["web-1"])
        self.assertEqual(self.registry.claimedNames(), [])

    def test_heldElsewhereIsRefused(self):
        self.registry.names = self.names
        claimed = self.registry.claim("web-1")
        self.names.asked["web-1"].callback(False)
        self.failureResultOf(claimed, NameInUse)
        self.assertRaises(Exception, self.registry.lookup, "web-1")
        self.registry.names.claim = lambda name: succeed(True)
        self.successResultOf(self.registry.claim("web-1"))

    def test_clusterUnreachableTakesTheNameHere(self):
        self.registry.names = self.names
        self.names.claim = lambda name: fail(OSError("connection refused"))
        record = self.successResultOf(self.registry.claim("web-1"))
        self.assertTrue(record.online)
        self.registry.disconnect(record)
        self.assertEqual(self.names.released, [], "nothing was held, nothing released")

    def test_takenLocallyMeanwhileReleasesTheClaim(self):
        self.registry.names = self.names
        claimed = self.registry.claim("web-1")
        self.registry.connect("web-1")      # a syslog sender, local only
        self.names.asked["web-1"].callback(True)
        self.failureResultOf(claimed, NameInUse)
        self.assertEqual(self.names.released, ["web-1"])


class RemoteRecordTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = ClientRegistry(self.clock, bufferSize=4, maxOffline=2)

    def test_onlineElsewhereIsAnswered(self):
        self.registry.applyRemote("web-1", saved("a", "b", state={"k": "v"}), online=True)
        record = self.registry.lookup("web-1")
        self.assertEqual(record.summary(), {
            "connectedAt": 1.0, "online": True, "log": [[2.0, "a"], [2.0, "b"]],
            "state": {"k": "v"},
            "counters": {"lines": 2, "bytes": 10, "ignored": 0, "truncated": 0}})
        self.assertEqual(self.registry.onlineNames(), ["web-1"])
        self.assertEqual(self.registry.counts(), {"online": 1, "offline": 0})
        self.assertEqual([r.name for r in self.registry.records()], ["web-1"])

    def test_wentOfflineElsewhere(self):
        self.registry.applyRemote("web-1", saved("a"), online=True)
        self.registry.applyRemote("web-1", saved("a", "b"), online=False)
        self.assertEqual(self.registry.counts(), {"online": 0, "offline": 1})
        self.assertFalse(self.registry.lookup("web-1").online)
        self.assertEqual(self.registry.takeChanges(), ([], []), "not this node's to save")

    def test_onlineHereWins(self):
        record = self.registry.connect("web-1")
        self.registry.applyRemote("web-1", saved("old"), online=False)
        self.assertIs(self.registry.lookup("web-1"), record)
        self.assertTrue(record.online)

    def test_connectKeepsTheRingFromElsewhere(self):
        self.registry.applyRemote("web-1", saved("a", "b"), online=False)
        record = self.registry.connect("web-1")
        self.registry.log(record, 3.0, ["c"])
        self.assertEqual([m for _, m in record.log()], ["a", "b", "c"])
        self.assertEqual(record.lines, 3)
        [(name, form)], _ = self.registry.takeChanges()
        self.assertEqual((name, form["online"]), ("web-1", True))

    def test_offlineFromElsewhereIsBounded(self):
        for n in range(4):
            self.registry.applyRemote(f"web-{n}", saved(), online=False)
        self.assertEqual([r.name for r in self.registry.records()], ["web-2", "web-3"])
        self.assertEqual(self.registry.takeChanges(), ([], []), "others' rows stay")

    def test_remoteEventsSkipLocalOnlyObservers(self):
        everyNode, localOnly = Recorder(), Recorder()
        self.registry.addObserver(everyNode)
        self.registry.addObserver(localOnly, localOnly=True)
        self.registry.remoteEvents([
            ["ready", "web-1", 1.0, {}],
            ["log", "web-1", 2.0, {"message": "hi", "truncated": True}],
            ["set", "web-1", 3.0, {"key": "k", "value": "v"}]])
        self.assertEqual(everyNode.events, [
            ("ready", "web-1", 1.0, {}),
            ("log", "web-1", 2.0, {"message": "hi", "truncated": True}),
            ("set", "web-1", 3.0, {"key": "k", "value": "v"})])
        self.assertEqual(localOnly.events, [])
        self.registry.connect("db-1")
        self.assertEqual(localOnly.events, [("ready", "db-1", 0.0, {})])


class LineServiceClaimTests(TestCase):
    """The IAM handshake waits for a claim that another node must answer."""

    def setUp(self):
        self.clock = Clock()
        self.registry = ClientRegistry(self.clock, bufferSize=8)
        self.names = self.registry.names = Names()
        self.factory = LineFactory(self.registry, self.clock)

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_linesWaitForTheClaim(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"IAM web-1\nLOG one\nLO")
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(b"G two\nSET k v\n")
        self.assertEqual(self.registry.onlineNames(), [])
        self.names.asked["web-1"].callback(True)
        record = self.registry.lookup("web-1")
        self.assertEqual([m for _, m in record.log()], ["one", "two"])
        self.assertEqual(record.state, {"k": "v"})
        self.assertEqual(record.bytes, len(b"IAM web-1\nLOG one\nLOG two\nSET k v\n"))
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value(), b"")

    def test_overLongFirstLineWaitsForTheClaim(self):
        """An IAM line over --max-line: what follows it waits for the claim too."""
        self.factory.maxLine = 16
        protocol, transport = self.connect()
        protocol.dataReceived(b"IAM web-1" + b" " * 20 + b"\nLOG one\n")
        protocol.dataReceived(b"LOG two\n")
        self.assertEqual(self.registry.onlineNames(), [])
        self.names.asked["web-1"].callback(True)
        record = self.registry.lookup("web-1")
        self.assertEqual([m for _, m in record.log()], ["one", "two"])
        self.assertEqual(record.bytes, 30 + len(b"LOG one\nLOG two\n"))
        self.assertEqual(transport.producerState, "producing")

    def test_refusedWhenOnlineElsewhere(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"IAM web-1\nLOG one\n")
        protocol.dataReceived(b"LOG two\n")
        self.names.asked["web-1"].callback(False)
        self.assertEqual(transport.value(), b"ERR name in use: web-1\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.registry.records(), [])

    def test_goneBeforeTheAnswer(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"IAM web-1\n")
        protocol.connectionLost(None)
        self.names.asked["web-1"].callback(True)
        self.assertFalse(self.registry.lookup("web-1").online)
        self.assertEqual(self.names.released, ["web-1"])


class FakeNodes:
    """A database's answers, in place (C{run} calls in the test's thread)."""

    def __init__(self):
        self.beats: list = []
        self.published: list = []
        self.sweptHere = False
        self.dead = 0
        self.subscribed = {"node-b": 0.0}   # other nodes with subscribers, since when
        self.announced: list = []

    def beat(self, claimed: list, stale: float, since: float | None) -> tuple:
        self.beats.append(sorted(claimed))
        swept, self.sweptHere = self.sweptHere, False
        return swept, self.dead, dict(self.subscribed)

    def announce(self, since: float | None) -> None:
        self.announced.append(since)

    def publish(self, events: list) -> None:
        self.published.append(events)

    def lock(self, name: str) -> bool:
        return True

    def unlock(self, name: str) -> None:
        pass


class FakeClients:
    def save(self, rows: list, gone: list) -> None:
        pass


class SharedRegistryTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry = ClientRegistry(self.clock, bufferSize=8)
        self.nodes = FakeNodes()
        self.shared = SharedRegistry(self.registry, FakeClients(), self.nodes, self.clock,
                                     run=maybeDeferred)
        self.registry.names = self.shared
        self.registry.addObserver(self.shared, localOnly=True)
        self.registry.subscribersChanged = self.shared.subscribersChanged
        self.shared.othersSubscribed("node-b", 0.0)
        self.shared._heartbeat.start(HEARTBEAT, now=False)
        self.shared._sender.start(EVENTS_TICK, now=False)
        self.addCleanup(self.shared._heartbeat.stop)
        self.addCleanup(self.shared._sender.stop)

    def test_heartbeatEverySecondWithTheClaimedNames(self):
        self.successResultOf(self.registry.claim("web-1"))
        self.registry.connect("syslog.host")        # local only: not held
        self.clock.pump([HEARTBEAT] * 3)
        self.assertEqual(self.nodes.beats, [["web-1"]] * 3)

    def test_takenForDeadSavesOnlineClientsAgain(self):
        record = self.successResultOf(self.registry.claim("web-1"))
        self.registry.takeChanges()
        self.nodes.sweptHere = True
        self.clock.advance(HEARTBEAT)
        changed, _ = self.registry.takeChanges()
        self.assertEqual([(name, form["online"]) for name, form in changed],
                         [("web-1", True)])
        self.assertTrue(record.online)

    def test_eventsBatchedPerTickInOrder(self):
        record = self.successResultOf(self.registry.claim("web-1"))
        self.registry.log(record, 5.0, ["a", "b"], truncated=True)
        self.registry.set(record, 6.0, "k", "v")
        self.assertEqual(self.nodes.published, [])
        self.clock.advance(EVENTS_TICK)
        self.assertEqual(self.nodes.published, [[
            ["ready", "web-1", 0.0, {}],
            ["log", "web-1", 5.0, {"message": "a", "truncated": True}],
            ["log", "web-1", 5.0, {"message": "b", "truncated": True}],
            ["set", "web-1", 6.0, {"key": "k", "value": "v"}]]])
        self.registry.disconnect(record)
        self.clock.advance(EVENTS_TICK)
        self.assertEqual(self.nodes.published[1], [["close", "web-1", EVENTS_TICK, {}]])
        self.clock.advance(EVENTS_TICK)
        self.assertEqual(len(self.nodes.published), 2, "nothing new, nothing sent")

    def test_remoteEventsAreNotSentBack(self):
        self.registry.remoteEvents([["ready", "web-9", 1.0, {}]])
        self.clock.advance(EVENTS_TICK)
        self.assertEqual(self.nodes.published, [])

    def test_pendingEventsAreBounded(self):
        record = self.successResultOf(self.registry.claim("web-1"))
        self.registry.log(record, 5.0, ["x"] * (EVENTS_PENDING + 10))
        self.assertEqual(self.shared.droppedEvents, 11)
        self.clock.advance(EVENTS_TICK)
        self.assertEqual(len(self.nodes.published[0]), EVENTS_PENDING)

    def test_subscribersAnnouncedFirstAndLast(self):
        first, second = Recorder(), Recorder()
        self.clock.advance(3)
        self.registry.addObserver(first)
        self.registry.addObserver(second)
        self.registry.removeObserver(first)
        self.assertEqual(self.nodes.announced, [3.0])
        self.registry.removeObserver(second)
        self.assertEqual(self.nodes.announced, [3.0, None])

    def unsubscribed(self) -> ClientRecord:
        """No other node has subscribers: web-1's events are held."""
        self.nodes.subscribed = {}
        self.shared.othersSubscribed("node-b", None)
        return self.successResultOf(self.registry.claim("web-1"))

    def test_nothingSentWhileNoOtherNodeSubscribes(self):
        record = self.unsubscribed()
        self.registry.log(record, 0.05, ["a"])
        self.clock.pump([EVENTS_TICK, HEARTBEAT])
        self.assertEqual(self.nodes.published, [])

    def test_heldEventsSinceTheSubscriptionAreSent(self):
        record = self.unsubscribed()
        self.clock.advance(1.0)
        self.registry.log(record, 1.0, ["before"])
        self.registry.log(record, 1.2, ["after"])
        self.registry.set(record, 1.3, "k", "v")
        self.shared.othersSubscribed("node-b", 1.25)
        self.registry.log(record, 1.4, ["then"])
        self.clock.advance(EVENTS_TICK)
        self.assertEqual(self.nodes.published, [[
            ["log", "web-1", 1.2, {"message": "after"}],
            ["set", "web-1", 1.3, {"key": "k", "value": "v"}],
            ["log", "web-1", 1.4, {"message": "then"}]]])

    def test_eventsHeldForHoldSeconds(self):
        record = self.unsubscribed()
        self.registry.log(record, 0.0, ["old"])
        self.clock.pump([EVENTS_TICK] * int((HOLD + 1) / EVENTS_TICK))
        self.shared.othersSubscribed("node-b", 0.0)
        self.clock.advance(EVENTS_TICK)
        self.assertEqual(self.nodes.published, [])

    def test_heartbeatLearnsOfSubscribers(self):
        record = self.unsubscribed()
        self.nodes.subscribed = {"node-c": 0.5}
        self.registry.log(record, 0.5, ["a"])
        self.clock.advance(HEARTBEAT)
        self.clock.advance(EVENTS_TICK)
        self.assertEqual(self.nodes.published, [[["log", "web-1", 0.5, {"message": "a"}]]])

    def test_heartbeatReadBeforeAnAnnouncementIsIgnored(self):
        self.nodes.subscribed = {}
        heard = self.shared._heard
        self.shared.othersSubscribed("node-c", 1.0)
        self.shared._beaten((False, 0, {}), heard)
        self.assertEqual(self.shared._subscribed, {"node-b": 0.0, "node-c": 1.0})

    def test_remoteRowsReachTheRegistry(self):
        self.shared.remoteRows([("web-2", saved("a"), True)])
        self.assertTrue(self.registry.lookup("web-2").online)


class PayloadTests(TestCase):
    def test_splitInOrderWithinTheLimit(self):
        events = [["log", "web-1", 1.0, {"message": f"line {n} " + "é" * 50}]
                  for n in range(300)]
        found = payloads("node-a", events, limit=2000)
        self.assertGreater(len(found), 1)
        self.assertTrue(all(len(p.encode()) <= 2000 for p in found))
        batches = [json.loads(p) for p in found]
        self.assertEqual({b["node"] for b in batches}, {"node-a"})
        self.assertEqual([b["seq"] for b in batches], list(range(len(batches))))
        self.assertEqual([e for b in batches for e in b["events"]], events)

    def test_largeEventIsCutAndMarked(self):
        events = [["log", "web-1", 1.0, {"message": "é" * 5000}],
                  ["set", "web-1", 2.0, {"key": "k", "value": "v" * 9000}],
                  ["ready", "web-2", 3.0, {}]]
        found = payloads("node-a", events, limit=1000)
        self.assertTrue(all(len(p.encode()) <= 1000 for p in found))
        sent = [e for p in found for e in json.loads(p)["events"]]
        self.assertEqual([e[0] for e in sent], ["log", "set", "ready"])
        self.assertTrue(sent[0][3]["truncated"])
        self.assertTrue("é" * 100 in sent[0][3]["message"])
        self.assertTrue(sent[1][3]["value"].startswith("vvv"))
        self.assertEqual(sent[2], ["ready", "web-2", 3.0, {}])
