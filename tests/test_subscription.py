"""The live feed shared by PB and WebSocket: filters, replay, order and flow control."""

import json
import sys

from twisted.internet.defer import fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from logsvc.errors import EntryError, StoreError
from logsvc.interfaces import IEventObserver
from logsvc.registry import ClientRegistry
from logsvc.service import LogService
from logsvc.memorystore import MemoryStore
from logsvc.store import canonical
from logsvc.subscription import Subscription
from tests.stores import HeldReads, appendOne


def event(kind, client, time, **fields):
    return {"type": "event", "event": kind, "client": client, "time": time, **fields}


def entry(index, value):
    return {"type": "entry", "index": index, "entry": value}


class SubscriptionTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = ClientRegistry(self.clock)
        self.store = MemoryStore(self.clock)
        self.service = LogService(self.registry, self.store, self.clock)
        self.received: list = []
        self.ends: list = []

    def subscribe(self, **kwargs) -> Subscription:
        subscription = Subscription(self.service, self.received.append,
                                    onEnd=self.ends.append, **kwargs)
        self.addCleanup(subscription.cancel)
        return subscription

    def append(self, *values, announce=True):
        for value in values:
            appendOne(self.store, canonical(value))
        if announce:
            self.clock.advance(0)

    def test_interfaces(self):
        subscription = self.subscribe()
        verifyObject(IEventObserver, subscription)
        verifyObject(IPushProducer, subscription)

    def test_lineEvents(self):
        self.subscribe()
        record = self.registry.connect("web-1")
        self.registry.log(record, 1001.5, ["hello", "world"])
        self.registry.set(record, 1002.0, "pid", "42")
        self.registry.disconnect(record)
        self.assertEqual(self.received, [
            event("ready", "web-1", 1000.0),
            event("log", "web-1", 1001.5, message="hello"),
            event("log", "web-1", 1001.5, message="world"),
            event("set", "web-1", 1002.0, key="pid", value="42"),
            event("close", "web-1", 1000.0),
        ])

    def test_filters(self):
        self.subscribe(events=["log", "entry"], clients="api-*")
        api = self.registry.connect("api-1")
        web = self.registry.connect("web-1")
        self.registry.log(api, 1.0, ["from api"])
        self.registry.log(web, 2.0, ["from web"])
        self.registry.set(api, 3.0, "k", "v")
        self.append({"client": "api-2", "n": 1}, {"client": "web-1", "n": 2}, {"n": 3})
        self.assertEqual(self.received, [
            event("log", "api-1", 1.0, message="from api"),
            entry(1, {"client": "api-2", "n": 1}),
        ])

    def test_onlyLineEventsDoNotFollowTheJournal(self):
        self.subscribe(events=["ready"])
        self.append({"n": 1})
        self.registry.connect("a")
        self.assertEqual(self.received, [event("ready", "a", 1000.0)])

    def test_badArguments(self):
        self.assertRaises(ValueError, Subscription, self.service, print, events=["logs"])
        self.assertRaises(ValueError, Subscription, self.service, print, fromIndex=0)
        self.assertRaises(ValueError, Subscription, self.service, print, fromIndex="1")
        self.assertFalse(self.registry.observed)

    def test_liveEntriesStartAtSubscription(self):
        self.append({"n": 1})
        self.subscribe(events=["entry"])
        self.append({"n": 2}, {"n": 3})
        self.assertEqual(self.received, [entry(2, {"n": 2}), entry(3, {"n": 3})])

    def test_replayInPagesThenLive(self):
        self.append(*[{"n": n} for n in range(1, 6)])
        self.subscribe(events=["entry"], fromIndex=2, pageSize=2)
        self.append({"n": 6})
        self.assertEqual(self.received, [entry(n, {"n": n}) for n in range(2, 7)])

    def test_replayStartsAfterTheConstructor(self):
        """The consumer can attach the subscription as a producer before anything comes."""
        self.append({"n": 1})
        subscription = self.subscribe(events=["entry"], fromIndex=1)
        self.assertEqual(self.received, [])
        subscription.pauseProducing()
        self.clock.advance(0)
        self.assertEqual(self.received, [])
        subscription.resumeProducing()
        self.assertEqual(self.received, [entry(1, {"n": 1})])

    def test_replayedEntriesAreNotRepeatedWhenAnnounced(self):
        """Entries read back before the store announces them arrive once."""
        self.append({"n": 1}, {"n": 2}, announce=False)
        self.subscribe(events=["entry"], fromIndex=1)
        self.append({"n": 3})
        self.assertEqual(self.received, [entry(n, {"n": n}) for n in (1, 2, 3)])

    def test_replayComesBeforeLiveEvents(self):
        self.append({"n": 1}, {"n": 2})
        self.service.store = HeldReads(self.store)
        self.subscribe(fromIndex=1)
        self.registry.connect("a")
        self.append({"n": 3})
        self.assertEqual(self.received, [])
        self.service.store.release()
        self.assertEqual(self.received, [
            entry(1, {"n": 1}), entry(2, {"n": 2}), entry(3, {"n": 3}),
            event("ready", "a", 1000.0),
        ])

    def test_entriesAnnouncedDuringAReadAreNotMissed(self):
        self.service.store = HeldReads(self.store)
        self.subscribe(events=["entry"], fromIndex=1)
        self.append({"n": 1})
        self.service.store.release()
        self.service.store.release()
        self.assertEqual(self.received, [entry(1, {"n": 1})])

    def test_unreadableEntry(self):
        pairs = [(1, EntryError("bad checksum")), (2, canonical({"n": 2}))]
        self.store.read = lambda start, limit: succeed(pairs[start - 1:][:limit])
        self.subscribe(events=["entry"], fromIndex=1)
        self.clock.advance(0)
        self.assertEqual(self.received, [
            {"type": "entry", "index": 1, "error": "bad checksum"}, entry(2, {"n": 2})])

    def test_readFailureEndsTheSubscription(self):
        self.store.read = lambda start, limit: fail(StoreError("disk on fire"))
        subscription = self.subscribe(events=["entry"], fromIndex=1)
        self.clock.advance(0)
        self.assertTrue(subscription.ended)
        self.assertEqual(self.ends, ["cannot read the journal: disk on fire"])

    def test_pausedKeepsOrder(self):
        subscription = self.subscribe()
        subscription.pauseProducing()
        record = self.registry.connect("a")
        self.append({"n": 1})
        self.registry.log(record, 5.0, ["after the entry"])
        self.append({"n": 2})
        self.assertEqual(self.received, [])
        subscription.resumeProducing()
        self.assertEqual(self.received, [
            event("ready", "a", 1000.0),
            entry(1, {"n": 1}), entry(2, {"n": 2}),
            event("log", "a", 5.0, message="after the entry"),
        ])

    def test_pauseFromDeliver(self):
        """A consumer may pause inside deliver: nothing more comes until it resumes."""
        subscription = Subscription(self.service, lambda m: (self.received.append(m),
                                                             subscription.pauseProducing()),
                                    events=["entry"], fromIndex=1)
        self.addCleanup(subscription.cancel)
        self.append({"n": 1}, {"n": 2}, {"n": 3})
        self.assertEqual(self.received, [entry(1, {"n": 1})])
        subscription.resumeProducing()
        subscription.resumeProducing()
        self.assertEqual(self.received, [entry(n, {"n": n}) for n in (1, 2, 3)])

    def test_overflowIsCountedAndReported(self):
        subscription = self.subscribe(events=["log"], queueLimit=3)
        record = self.registry.connect("a")
        subscription.pauseProducing()
        self.registry.log(record, 1.0, [str(n) for n in range(5)])
        subscription.resumeProducing()
        self.assertEqual(self.received, [
            event("log", "a", 1.0, message="0"), event("log", "a", 1.0, message="1"),
            event("log", "a", 1.0, message="2"), {"type": "dropped", "dropped": 2}])

    def test_droppedNoticeSitsWhereTheGapIs(self):
        subscription = self.subscribe(events=["log"], queueLimit=2)
        record = self.registry.connect("a")
        subscription.pauseProducing()
        self.registry.log(record, 1.0, ["0", "1", "2", "3"])
        subscription.resumeProducing()
        subscription.pauseProducing()
        self.registry.log(record, 1.0, ["4"])
        subscription.resumeProducing()
        messages = [m.get("message", m.get("dropped")) for m in self.received]
        self.assertEqual(messages, ["0", "1", 2, "4"])

    def test_journalEntriesAreNeverDropped(self):
        subscription = self.subscribe(events=["entry"], queueLimit=1, missedLimit=1)
        subscription.pauseProducing()
        self.append(*[{"n": n} for n in range(1, 21)])
        subscription.resumeProducing()
        self.assertEqual(self.received, [entry(n, {"n": n}) for n in range(1, 21)])
        self.assertEqual(self.ends, [])

    def test_stalledConsumerIsEnded(self):
        """A consumer that never resumes costs at most the queue, then is let go."""
        subscription = self.subscribe(queueLimit=10, missedLimit=100)
        record = self.registry.connect("a")
        subscription.pauseProducing()
        for n in range(1000):
            self.registry.log(record, 1.0, [str(n)])
        self.assertTrue(subscription.ended)
        self.assertEqual(self.ends, ["subscriber too slow: 101 messages dropped"])
        self.assertFalse(self.registry.observed)
        subscription.resumeProducing()
        self.append({"n": 1})
        self.assertEqual(self.received, [event("ready", "a", 1000.0)])

    def test_slowConsumerIsNotEnded(self):
        subscription = self.subscribe(queueLimit=2, missedLimit=3)
        record = self.registry.connect("a")
        for n in range(10):
            subscription.pauseProducing()
            self.registry.log(record, 1.0, ["x"] * 5)
            subscription.resumeProducing()
        self.assertFalse(subscription.ended)
        self.assertEqual(self.received.count({"type": "dropped", "dropped": 3}), 10)

    def test_cancel(self):
        subscription = self.subscribe()
        subscription.cancel()
        subscription.cancel()
        self.registry.connect("a")
        self.append({"n": 1})
        self.assertEqual(self.received, [])
        self.assertFalse(self.registry.observed)
        self.assertEqual(self.ends, [])

    def test_entryTooDeepToDecodeIsAnErrorItem(self):
        """The journal stores what its parser took; a deeper stack here must not crash."""
        self.subscribe(events=["entry"])
        limit = sys.getrecursionlimit()
        self.addCleanup(sys.setrecursionlimit, limit)
        data = b"[" * 400 + b"]" * 400
        sys.setrecursionlimit(300)
        appendOne(self.store, data)
        appendOne(self.store, canonical({"after": True}))
        self.clock.advance(0)
        sys.setrecursionlimit(limit)
        self.assertEqual(self.received, [
            {"type": "entry", "index": 1, "error": "entry nested too deeply to decode here"},
            {"type": "entry", "index": 2, "entry": {"after": True}}])

    def test_entriesAreDecodedJSON(self):
        self.subscribe(events=["entry"])
        self.append({"text": "é", "list": [1, 2.5, None, True]})
        self.assertEqual(json.loads(json.dumps(self.received[0]))["entry"],
                         {"text": "é", "list": [1, 2.5, None, True]})
