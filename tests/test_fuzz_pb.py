"""
Property-based fuzzing of the PB avatar with a hostile caller on real brokers pumped in
memory: whatever it sends (types the server does not know, deep nesting, oversized or
malformed Banana, wrong arguments to every method), it gets a remote error or a dropped
connection, never a traceback, nothing raises from logsvc's own code, and a well-behaved
client on the same server keeps working.
"""

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.cred import credentials
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.spread import banana, jelly, pb
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import TestCase

import logsvc
from logsvc.auth import makePortal
from logsvc.pb.avatar import PB_DEPTH, BadRequest
from logsvc.pb.login import serverFactory
from logsvc.registry import ClientRegistry
from logsvc.service import LogService
from logsvc.memorystore import MemoryStore
from logsvc.store import canonical
from tests.observers import Observer
from tests.stores import appendOne

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LOGSVC = os.path.dirname(logsvc.__file__)
METHODS = ["clientNames", "clients", "clientLog", "clientState", "subscribe", "unsubscribe",
           "head", "read", "append", "noSuchMethod", "logout", "_lookup", "__init__"]


class Stranger:
    """A class the server never agreed to receive."""

    def __init__(self, value=None):
        self.value = value


class UnregisteredCopyable(pb.Copyable):
    """A Copyable with no RemoteCopy registered on the server."""

    def __init__(self, value=None):
        self.value = value


class Raw(bytes):
    """Banana bytes put into a frame as they are."""


def encode(sexp) -> bytes:
    """Banana for lists, byte strings and ints, written here so nothing is refused locally."""
    out: list = []
    if isinstance(sexp, Raw):
        return bytes(sexp)
    if isinstance(sexp, list):
        banana.int2b128(len(sexp), out.append)
        out.append(banana.LIST)
        out += [encode(item) for item in sexp]
    elif isinstance(sexp, bytes):
        banana.int2b128(len(sexp), out.append)
        out += [banana.STRING, sexp]
    else:
        banana.int2b128(sexp, out.append)
        out.append(banana.INT)
    return b"".join(out)


def deepList(depth: int) -> Raw:
    """A jellied list nested C{depth} deep, built without recursion."""
    return Raw((b"\x02" + banana.LIST + encode(b"list")) * depth + encode([b"list"]))


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2 ** 300, 2 ** 300),
                    st.floats(), st.text(max_size=10), st.binary(max_size=10))
hostileValues = st.recursive(
    scalars | st.builds(Stranger, scalars) | st.builds(UnregisteredCopyable, scalars)
    | st.builds(Observer),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3),
    max_leaves=10)
calls = st.tuples(st.sampled_from(METHODS), st.lists(hostileValues, max_size=4),
                  st.dictionaries(st.sampled_from(["events", "clients", "fromIndex", "limit",
                                                   "observer", "junk"]),
                                  hostileValues, max_size=2))


class AnyAnswers(dict):
    """
    This side's answers awaited: any request id the server answers, even one this side
    never sent or cannot hash (a hostile frame's list echoed back), has a quiet waiter.
    """

    def __missing__(self, requestId) -> Deferred:
        return Deferred().addErrback(lambda _: None)

    def __getitem__(self, requestId) -> Deferred:
        try:
            return super().__getitem__(requestId)
        except TypeError:
            return self.__missing__(requestId)

    def __delitem__(self, requestId) -> None:
        try:
            super().__delitem__(requestId)
        except (KeyError, TypeError):
            pass


class Caller:
    """One PB connection, logged in anonymously, on its own in-memory pump."""

    def __init__(self, test: "PBFuzzTests"):
        self.test = test
        clientFactory = pb.PBClientFactory()
        self.client, self.server, self.pump = connectedServerAndClient(
            lambda: test.factory.buildProtocol(None),
            lambda: clientFactory.buildProtocol(None), clock=test.clock)
        d = clientFactory.login(credentials.Anonymous())
        self.pump.flush()
        self.avatar = test.successResultOf(d)
        self.dropped = False
        # Hostile frames can make the server answer request ids this side never sent.
        self.client.waitingForAnswers = AnyAnswers(self.client.waitingForAnswers)

    def call(self, name: str, *args, **kwargs):
        """The answer, a remote failure, or None when the client library refused to send."""
        try:
            d = self.avatar.callRemote(name, *args, **kwargs)
        except Exception:  # refused on this side (jelly, Banana's size limit): nothing sent
            return None
        self.pump.flush()
        result: list = []
        d.addBoth(result.append)
        self.test.assertEqual(len(result), 1, (name, args, kwargs))
        return result[0]

    def send(self, data: bytes, requestId: int | None = None):
        """
        Feed raw bytes to the server's broker as the reactor would: an exception out of
        dataReceived is logged and drops that connection.
        """
        answer: list = []
        if requestId is not None:
            waiting = Deferred()
            waiting.addBoth(answer.append)
            self.client.waitingForAnswers[requestId] = waiting
        try:
            self.server.dataReceived(data)
        except Exception as e:
            self.test.assertNotFromLogsvc(e.__traceback__)
            self.server.transport.loseConnection()
            self.dropped = True
        self.pump.flush()
        return answer[0] if answer else None

    def message(self, method: bytes, netArgs: Raw, requestId: int = 10 ** 6):
        frame = [b"message", requestId, self.avatar.luid, method, 1, netArgs,
                 Raw(encode([b"dictionary"]))]
        return self.send(encode(frame), requestId)


class PBFuzzTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.service = LogService(ClientRegistry(self.clock), MemoryStore(self.clock), self.clock)
        self.factory = serverFactory(makePortal(self.service, []))
        self.failures: list = []
        observer = self.failures.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.good = Caller(self)
        self.appended = 0

    def assertNotFromLogsvc(self, traceback) -> None:
        """logsvc's own code never raises on hostile input (only pb.Error, by design)."""
        while traceback is not None and traceback.tb_next is not None:
            traceback = traceback.tb_next
        if traceback is not None:
            self.assertFalse(traceback.tb_frame.f_code.co_filename.startswith(LOGSVC),
                             traceback.tb_frame.f_code)

    def assertRefusedCleanly(self, result) -> None:
        """A remote failure carries its type and message only: no traceback."""
        if isinstance(result, pb.CopiedFailure):
            self.assertNotIn(".py", result.getTraceback())
            self.assertNotIn(".py", result.getErrorMessage())

    def assertServerHealthy(self, hostile: Caller | None = None) -> None:
        """The good client still reads, writes and queries; nothing broke in logsvc."""
        self.appended += 1
        index = self.good.call("append", {"n": self.appended})
        self.assertEqual(index, self.good.call("head"))
        self.assertEqual(self.good.call("read", index, 1), [{"index": index,
                                                             "entry": {"n": self.appended}}])
        self.assertEqual(self.good.call("clientNames"), [])
        if hostile is not None and not hostile.dropped:
            self.assertEqual(hostile.call("head"), index)
        for event in self.failures:
            failure = event.get("log_failure")
            if failure is not None and failure.frames:
                self.assertFalse(failure.frames[-1][1].startswith(LOGSVC), failure.frames[-1])
        self.failures.clear()
        self.flushLoggedErrors()

    @SETTINGS
    @given(script=st.lists(calls, min_size=1, max_size=6))
    def test_hostileCallsToEveryMethod(self, script):
        hostile = Caller(self)
        for name, args, kwargs in script:
            self.assertRefusedCleanly(hostile.call(name, *args, **kwargs))
            self.assertServerHealthy(hostile)
        hostile.client.transport.loseConnection()
        hostile.pump.flush()
        self.assertServerHealthy()

    def test_wrongArgumentsAreRemoteErrors(self):
        hostile = Caller(self)
        observer = Observer()
        self.assertEqual(hostile.call("subscribe", observer), 1)
        cases = [("clientLog", (123,)), ("clientState", (None,)), ("read", ("x", None)),
                 ("read", (True,)), ("read", (1, 10 ** 40)), ("append", ([1, 2],)),
                 ("append", ({"x": float("nan")},)), ("append", ({"x": b"bytes"},)),
                 ("subscribe", (1,)),
                 ("subscribe", (observer, "entry")), ("subscribe", (observer, ["nope"])),
                 ("subscribe", (observer, None, 5)), ("subscribe", (observer, None, None, 0)),
                 ("subscribe", (observer, None, None, 1.5)), ("unsubscribe", ([],)),
                 ("unsubscribe", ({},)),
                 ("unsubscribe", ("1",)),
                 ("noSuchMethod", ()), ("clientNames", (1, 2, 3)), ("head", (), {"x": 1}),
                 ("logout", ()), ("_lookup", ("x",))]
        for name, args, *kwargs in cases:
            result = hostile.call(name, *args, **(kwargs[0] if kwargs else {}))
            if name == "read" and args == (1, 10 ** 40):
                self.assertEqual(result, [])
                continue
            self.assertIsInstance(result, pb.CopiedFailure, repr((name, args)))
            self.assertRefusedCleanly(result)
        self.assertServerHealthy(hostile)

    def test_unregisteredTypesAreInsecureJelly(self):
        hostile = Caller(self)
        for value in (Stranger(1), UnregisteredCopyable(2), {"x": [Stranger()]},
                      (UnregisteredCopyable(),)):
            result = hostile.call("append", value)
            self.assertTrue(result.check(jelly.InsecureJelly, BadRequest), value)
            self.assertRefusedCleanly(result)
        self.assertServerHealthy(hostile)

    def test_deepNestingIsARemoteError(self):
        """Arguments nested past the recursion limit are refused, for any depth."""
        for depth in (10, 300, 1000, 10_000, 100_000):
            hostile = Caller(self)
            result = hostile.message(b"append", Raw(encode([b"tuple", deepList(depth)])))
            if depth <= 10:
                self.assertTrue(result.check(BadRequest), depth)
            else:
                self.assertIsInstance(result, pb.CopiedFailure, depth)
            self.assertRefusedCleanly(result)
            self.assertServerHealthy(hostile)

    def test_oversizedBananaDropsTheConnection(self):
        """Strings and lists beyond Banana's 640 KiB limit are refused before buffering."""
        limit = banana.SIZE_LIMIT
        for header in (banana.STRING, banana.LIST):
            hostile = Caller(self)
            prefix: list = []
            banana.int2b128(limit + 1, prefix.append)
            hostile.send(b"".join(prefix) + header + b"x" * 100)
            self.assertTrue(hostile.dropped)
            self.assertLess(len(hostile.server.buffer), 200)
            self.assertServerHealthy()
        hostile = Caller(self)
        self.assertIsNone(hostile.call("append", {"x": "y" * (limit + 1)}))
        self.assertServerHealthy(hostile)

    @SETTINGS
    @given(chunks=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=8))
    def test_arbitraryBytesAfterLogin(self, chunks):
        hostile = Caller(self)
        for chunk in chunks:
            if hostile.dropped:
                break
            hostile.send(chunk)
        # Its own stream may now stop mid-element: only the others must be fine.
        self.assertServerHealthy()

    @SETTINGS
    @given(frame=st.recursive(st.binary(max_size=12) | st.integers(0, 2 ** 64)
                              | st.sampled_from([b"message", b"answer", b"error", b"decref",
                                                 b"cachemessage", b"uncache", b"version"]),
                              lambda inner: st.lists(inner, max_size=7), max_leaves=12))
    @example(frame=[b"message", [], b"", b"", b"\x00", b"", []])  # an unhashable request id
    def test_wellFormedBananaWithHostileFrames(self, frame):
        """Valid Banana carrying any s-expression: refused or dropped, never harmful."""
        hostile = Caller(self)
        hostile.send(encode(frame))
        self.assertServerHealthy(hostile)

    def test_tooDeepStoredEntriesAreErrorItems(self):
        """
        An entry the journal port accepted but PB cannot carry (nested past PB_DEPTH)
        is an error item in read() and in subscriptions, not a failed page or a gap.
        """
        observer = Observer()
        self.good.call("subscribe", observer, ["entry"], None, 1)
        deep: list = []
        for _ in range(PB_DEPTH + 50):
            deep = [deep]
        for entry in ({"a": 1}, {"deep": deep}, {"b": 2}):
            appendOne(self.service.store, canonical(entry))
        self.clock.advance(0)
        self.good.pump.flush()
        page = self.good.call("read", 1, 10)
        self.assertEqual([item["index"] for item in page], [1, 2, 3])
        self.assertIn("deeper than", page[1]["error"])
        self.assertEqual((page[0]["entry"], page[2]["entry"]), ({"a": 1}, {"b": 2}))
        delivered = [payload for kind, payload in observer.events if kind == "entry"]
        self.assertEqual([item["index"] for item in delivered], [1, 2, 3])
        self.assertIn("deeper than", delivered[1]["error"])
        self.assertServerHealthy()
