"""twisted.cred without a network, and the PB avatar over two brokers pumped in memory."""

import io
import json

from twisted.cred import checkers, credentials, error, strcred
from twisted.internet.defer import ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.spread import pb
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import TestCase
from twisted.python import usage
from zope.interface import implementer
from zope.interface.verify import verifyObject

from logsvc.auth import AnyOf, LogRealm, makePortal
from logsvc.errors import NoSuchClient
from logsvc.pb.avatar import LONGEST_LINE, PAGE_BYTES, READ_LIMIT, BadRequest, QueryPerspective
from logsvc.pb.login import LoginRefused
from logsvc.pb.login import serverFactory as pbServerFactory
from logsvc.query import CLIENTS_PAGE, Output, logIn, showClients
from logsvc.registry import ClientRegistry
from logsvc.service import LogService
from logsvc.memorystore import MemoryStore
from logsvc.store import canonical
from logsvc.tap import Options
from tests.observers import Observer
from tests.stores import appendOne


def makeService(clock):
    return LogService(ClientRegistry(clock), MemoryStore(clock), clock)


@implementer(checkers.ICredentialsChecker)
class PasswordOnly:
    """Checks the password itself, as C{--auth unix} does against the system's hash."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, **users):
        self.users = {name.encode(): password.encode() for name, password in users.items()}

    def requestAvatarId(self, given):
        if self.users.get(given.username) == given.password:
            return succeed(given.username)
        return fail(error.UnauthorizedLogin())


class CredTests(TestCase):
    """The realm and portal, called directly."""

    def setUp(self):
        self.service = makeService(Clock())

    def test_realmGivesAQueryPerspective(self):
        interface, avatar, logout = LogRealm(self.service).requestAvatar(
            b"alice", None, pb.IPerspective)
        self.assertIs(interface, pb.IPerspective)
        self.assertIsInstance(avatar, QueryPerspective)
        self.assertEqual(avatar.avatarId, b"alice")
        self.assertEqual(logout, avatar.logout)

    def test_realmRefusesOtherInterfaces(self):
        self.assertRaises(NotImplementedError, LogRealm(self.service).requestAvatar,
                          b"alice", None, credentials.ICredentials)

    def portalFromAuth(self, auth):
        return makePortal(self.service, [strcred.makeChecker(auth)])

    def test_rightPassword(self):
        portal = self.portalFromAuth("memory:alice:secret")
        result = self.successResultOf(portal.login(
            credentials.UsernamePassword(b"alice", b"secret"), None, pb.IPerspective))
        self.assertIsInstance(result[1], QueryPerspective)

    def test_wrongPassword(self):
        portal = self.portalFromAuth("memory:alice:secret")
        self.failureResultOf(portal.login(
            credentials.UsernamePassword(b"alice", b"wrong"), None, pb.IPerspective),
            error.UnauthorizedLogin)

    def test_anonymousRefusedWithAuth(self):
        portal = self.portalFromAuth("memory:alice:secret")
        self.failureResultOf(portal.login(credentials.Anonymous(), None, pb.IPerspective),
                             error.UnhandledCredentials)

    def test_anonymousWithoutAuth(self):
        portal = makePortal(self.service, [])
        result = self.successResultOf(
            portal.login(credentials.Anonymous(), None, pb.IPerspective))
        self.assertIsInstance(result[1], QueryPerspective)

    def test_anyOfSeveralCheckers(self):
        """Each --auth checker's users log in, whichever kind of credentials they use."""
        portal = makePortal(self.service, [strcred.makeChecker("memory:alice:secret"),
                                           strcred.makeChecker("memory:bob:hunter2"),
                                           PasswordOnly(carol="pw")])
        for user, password in [(b"alice", b"secret"), (b"bob", b"hunter2"), (b"carol", b"pw")]:
            result = self.successResultOf(portal.login(
                credentials.UsernamePassword(user, password), None, pb.IPerspective))
            self.assertEqual(result[1].avatarId, user)
        for user, password in [(b"alice", b"hunter2"), (b"carol", b"secret"), (b"dave", b"")]:
            self.failureResultOf(portal.login(
                credentials.UsernamePassword(user, password), None, pb.IPerspective),
                error.UnauthorizedLogin)
        self.assertTrue(portal.passwordInClear)

    def test_anyOfIsAChecker(self):
        checker = AnyOf([strcred.makeChecker("memory:a:b"), PasswordOnly(c="d")])
        self.assertTrue(verifyObject(checkers.ICredentialsChecker, checker))
        self.assertEqual(set(checker.credentialInterfaces),
                         {credentials.IUsernamePassword, credentials.IUsernameHashedPassword})
        self.failureResultOf(checker.requestAvatarId(credentials.Anonymous()),
                             error.UnhandledCredentials)

    def test_passwordInClearOnlyForCheckersThatNeedIt(self):
        self.assertFalse(self.portalFromAuth("memory:alice:secret").passwordInClear)
        self.assertFalse(makePortal(self.service, []).passwordInClear)
        self.assertTrue(makePortal(self.service, [PasswordOnly(a="b")]).passwordInClear)

    def test_nonLoopbackPBNeedsAuth(self):
        """(Options.parseOptions turns the UsageError into one line and exit 1.)"""
        def parse(*args):
            usage.Options.parseOptions(Options(), ["--http", "none", *args])

        refused = self.assertRaises(usage.UsageError, parse, "--pb", "tcp:8787")
        self.assertIn("--pb tcp:8787 is reachable from other hosts", str(refused))
        parse("--pb", "tcp:8787", "--auth", "memory:alice:secret")
        parse("--pb", "unix:/tmp/logsvc-pb.sock")
        parse("--pb", r"tcp6:8787:interface=\:\:1")


class PasswordLoginTests(TestCase):
    """Checkers that need the password itself get it through loginWithPassword."""

    def connect(self, *checkers):
        self.clock = Clock()
        self.service = makeService(self.clock)
        factory = pbServerFactory(makePortal(self.service, list(checkers)))
        self.clientFactory = pb.PBClientFactory()
        self.client, _, self.pump = connectedServerAndClient(
            lambda: factory.buildProtocol(None),
            lambda: self.clientFactory.buildProtocol(None), clock=self.clock)

    def outcome(self, d):
        self.pump.flush()
        return d

    def passwordInClear(self) -> bool:
        root = self.successResultOf(self.outcome(self.clientFactory.getRootObject()))
        return self.successResultOf(self.outcome(root.callRemote("passwordInClear")))

    def test_passwordOnlyChecker(self):
        self.connect(PasswordOnly(alice="secret"))
        self.assertTrue(self.passwordInClear())
        self.service.registry.connect("web-1")
        avatar = self.successResultOf(self.outcome(logIn(
            self.clientFactory, credentials.UsernamePassword(b"alice", b"secret"))))
        names = self.outcome(avatar.callRemote("clientNames"))
        self.assertEqual(self.successResultOf(names), ["web-1"])
        subscribed = self.outcome(avatar.callRemote("subscribe", Observer()))
        self.successResultOf(subscribed)
        self.assertTrue(self.service.registry.observed)
        self.client.transport.loseConnection()
        self.pump.flush()
        self.assertFalse(self.service.registry.observed, "logout did not run")

    def test_passwordOnlyCheckerRefuses(self):
        self.connect(PasswordOnly(alice="secret"))
        for user, password in [(b"alice", b"wrong"), (b"bob", b"secret")]:
            failure = self.failureResultOf(self.outcome(logIn(
                self.clientFactory, credentials.UsernamePassword(user, password))))
            self.assertTrue(failure.check(LoginRefused), (user, password))
        challenged = self.outcome(self.clientFactory.login(
            credentials.UsernamePassword(b"alice", b"secret")))
        self.assertTrue(self.failureResultOf(challenged).check(LoginRefused),
                        "a challenge's answer cannot be checked against the password")

    def test_badPasswordLogin(self):
        self.connect(PasswordOnly(alice="secret"))
        root = self.successResultOf(self.outcome(self.clientFactory.getRootObject()))
        for args in [("alice", b"secret"), (b"alice", 1), (b"alice",)]:
            failure = self.failureResultOf(
                self.outcome(root.callRemote("loginWithPassword", *args)))
            self.assertTrue(failure.check(BadRequest), args)

    def test_mixedCheckers(self):
        """With a checker that needs the password among them, every user sends it."""
        for user, password in [(b"alice", b"secret"), (b"bob", b"hunter2")]:
            self.connect(strcred.makeChecker("memory:bob:hunter2"),
                         PasswordOnly(alice="secret"))
            self.assertTrue(self.passwordInClear())
            avatar = self.successResultOf(self.outcome(logIn(
                self.clientFactory, credentials.UsernamePassword(user, password))))
            self.assertEqual(
                self.successResultOf(self.outcome(avatar.callRemote("clientNames"))), [])

    def test_challengeWhenTheCheckerCanAnswerOne(self):
        self.connect(strcred.makeChecker("memory:alice:secret"))
        self.assertFalse(self.passwordInClear())
        avatar = self.successResultOf(self.outcome(logIn(
            self.clientFactory, credentials.UsernamePassword(b"alice", b"secret"))))
        self.assertEqual(self.successResultOf(self.outcome(avatar.callRemote("clientNames"))),
                         [])


class PBTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.service = makeService(self.clock)
        self.registry = self.service.registry
        portal = makePortal(self.service, [strcred.makeChecker("memory:alice:secret")])
        serverFactory = pbServerFactory(portal)
        self.clientFactory = pb.PBClientFactory()
        self.client, self.server, self.pump = connectedServerAndClient(
            lambda: serverFactory.buildProtocol(None),
            lambda: self.clientFactory.buildProtocol(None), clock=self.clock)
        self.avatar = self.login(b"alice", b"secret")

    def login(self, user, password):
        d = self.clientFactory.login(credentials.UsernamePassword(user, password))
        self.pump.flush()
        return self.successResultOf(d)

    def call(self, name, *args, **kwargs):
        d = self.avatar.callRemote(name, *args, **kwargs)
        self.pump.flush()
        return d

    def result(self, name, *args, **kwargs):
        return self.successResultOf(self.call(name, *args, **kwargs))

    def disconnect(self):
        self.client.transport.loseConnection()
        self.pump.flush()

    def test_wrongPasswordOverPB(self):
        d = self.clientFactory.login(credentials.UsernamePassword(b"alice", b"nope"))
        self.pump.flush()
        failure = self.failureResultOf(d)
        self.assertTrue(failure.check(LoginRefused))
        self.assertTrue(failure.check(error.LoginFailed))
        self.assertNotIn(".py", failure.getTraceback())

    def test_anonymousRefusedOverPB(self):
        d = self.clientFactory.login(credentials.Anonymous())
        self.pump.flush()
        self.assertTrue(self.failureResultOf(d).check(LoginRefused))

    def test_clientQueries(self):
        web = self.registry.connect("web-1")
        self.registry.log(web, 1001.0, ["started", "é"])
        self.registry.set(web, 1002.0, "pid", "42")
        gone = self.registry.connect("old")
        self.registry.disconnect(gone)
        self.assertEqual(self.result("clientNames"), ["web-1"])
        self.assertEqual(self.result("clientLog", "web-1"),
                         [[1001.0, "started"], [1001.0, "é"]])
        self.assertEqual(self.result("clientState", "web-1"), {"pid": "42"})
        self.assertEqual(self.result("clientLog", "old"), [])
        clients = self.result("clients")
        self.assertEqual(sorted(clients), ["old", "web-1"])
        self.assertEqual(clients["web-1"]["state"], {"pid": "42"})
        self.assertIs(clients["old"]["online"], False)

    def test_longestLineCrossesBanana(self):
        """
        The longest line --max-line allows, every byte of it invalid UTF-8 (so three bytes
        once replaced), still fits in one Banana string: queries and events answer.
        """
        worst = "\ufffd" * LONGEST_LINE
        observer = Observer()
        self.subscribe(observer, events=["log"])
        web = self.registry.connect("web-1")
        self.registry.log(web, 1001.0, [worst])
        self.registry.set(web, 1001.0, "k", worst)
        self.assertEqual(self.result("clientLog", "web-1"), [[1001.0, worst]])
        self.assertEqual(self.result("clientState", "web-1"), {"k": worst})
        self.assertEqual(self.result("clients")["web-1"]["log"], [[1001.0, worst]])
        self.pump.flush()
        self.assertEqual([payload["message"] for _, payload in observer.events], [worst])

    def test_clientsInPages(self):
        for name in ("b", "a", "d", "c"):
            self.registry.connect(name)
        self.assertEqual(list(self.result("clients", None, 2)), ["a", "b"])
        self.assertEqual(list(self.result("clients", "b", 2)), ["c", "d"])
        self.assertEqual(list(self.result("clients", "bb", 5)), ["c", "d"])
        self.assertEqual(self.result("clients", "d", 2), {})
        self.assertEqual(list(self.result("clients", "a")), ["b", "c", "d"])
        for args in [(3,), (None, 0), (None, "2"), (None, True)]:
            failure = self.failureResultOf(self.call("clients", *args))
            self.assertTrue(failure.check(BadRequest), args)

    def test_queryListsClientsInPages(self):
        """logsvc-query asks for CLIENTS_PAGE clients at a time and shows them all."""
        names = [f"c{n:03}" for n in range(2 * CLIENTS_PAGE + 5)]
        for name in names:
            self.registry.connect(name)
        asked = []
        remote = self.avatar.callRemote

        def callRemote(method, *args):
            asked.append((method, *args))
            return remote(method, *args)

        self.patch(self.avatar, "callRemote", callRemote)
        stream = io.StringIO()
        shown = ensureDeferred(showClients(None, self.avatar, {}, Output(True, stream)))
        while not shown.called:
            self.pump.flush()
        self.successResultOf(shown)
        self.assertEqual(sorted(json.loads(stream.getvalue())), names)
        self.assertEqual(asked, [("clients", None, CLIENTS_PAGE),
                                 ("clients", names[CLIENTS_PAGE - 1], CLIENTS_PAGE),
                                 ("clients", names[2 * CLIENTS_PAGE - 1], CLIENTS_PAGE)])

    def test_noSuchClientIsCaughtByType(self):
        for method in ("clientLog", "clientState"):
            failure = self.failureResultOf(self.call(method, "ghost"))
            self.assertTrue(failure.check(NoSuchClient))
            self.assertEqual(failure.getErrorMessage(), "no such client: ghost")
            self.assertNotIn(".py", failure.getTraceback())

    def test_badArguments(self):
        for name, args in [("clientLog", (3,)), ("read", (0,)), ("read", (1, "10")),
                           ("append", ([1],)), ("append", ({"x": float("nan")},))]:
            failure = self.failureResultOf(self.call(name, *args))
            self.assertTrue(failure.check(BadRequest), (name, args, failure))

    def test_journal(self):
        self.assertEqual(self.result("head"), 0)
        self.assertEqual(self.result("append", {"b": 1, "a": [1, 2]}), 1)
        self.assertEqual(self.result("append", {"n": 2}), 2)
        self.assertEqual(self.result("head"), 2)
        self.assertEqual(self.result("read", 1, 10), [
            {"index": 1, "entry": {"a": [1, 2], "b": 1}}, {"index": 2, "entry": {"n": 2}}])
        self.assertEqual(self.result("read", 2), [{"index": 2, "entry": {"n": 2}}])
        self.assertEqual(self.result("read", 3, 10), [])

    def test_readPagesStayUnderBanana(self):
        """Answers are capped in entries and in bytes; an oversized entry is an error item."""
        blob = "x" * (PAGE_BYTES // 3)
        for n in range(6):
            appendOne(self.service.store, canonical({"n": n, "blob": blob}))
        appendOne(self.service.store, canonical({"blob": blob * 4}))
        for n in range(READ_LIMIT + 5):
            appendOne(self.service.store, canonical({"n": n}))
        page = self.result("read", 1, 100)
        self.assertEqual([item["index"] for item in page], [1, 2])
        self.assertEqual(len(self.result("read", 3, 100)), 2)
        [oversized] = self.result("read", 7, 1)
        self.assertIn("too large", oversized["error"])
        self.assertEqual(len(self.result("read", 8, READ_LIMIT * 10)), READ_LIMIT)

    def subscribe(self, observer, **kwargs):
        return self.result("subscribe", observer, **kwargs)

    def test_subscription(self):
        observer = Observer()
        self.subscribe(observer, clients="web-*")
        web = self.registry.connect("web-1")
        self.registry.connect("db-1")
        self.registry.log(web, 1003.0, ["hello"])
        self.result("append", {"client": "web-1", "n": 1})
        self.pump.flush()
        self.assertEqual(observer.events, [
            ("ready", {"type": "event", "event": "ready", "client": "web-1", "time": 1000.0}),
            ("log", {"type": "event", "event": "log", "client": "web-1", "time": 1003.0,
                     "message": "hello"}),
            ("entry", {"type": "entry", "index": 1, "entry": {"client": "web-1", "n": 1}}),
        ])

    def test_subscribeWithReplay(self):
        self.result("append", {"n": 1})
        observer = Observer()
        self.subscribe(observer, events=["entry"], fromIndex=1)
        self.pump.flush()
        self.assertEqual(observer.events, [
            ("entry", {"type": "entry", "index": 1, "entry": {"n": 1}})])

    def test_badSubscription(self):
        for kwargs in [{"events": ["nope"]}, {"events": "log"}, {"clients": 3},
                       {"fromIndex": 0}]:
            failure = self.failureResultOf(self.call("subscribe", Observer(), **kwargs))
            self.assertTrue(failure.check(BadRequest), kwargs)
        self.assertTrue(self.failureResultOf(self.call("subscribe", 1)).check(BadRequest))
        self.assertFalse(self.registry.observed)

    def test_unsubscribe(self):
        observer = Observer()
        subscriptionId = self.subscribe(observer)
        self.assertTrue(self.result("unsubscribe", subscriptionId))
        self.assertFalse(self.result("unsubscribe", subscriptionId))
        self.registry.connect("a")
        self.pump.flush()
        self.assertEqual(observer.events, [])
        self.assertFalse(self.registry.observed)

    def test_disconnectEndsSubscriptions(self):
        self.subscribe(Observer())
        self.subscribe(Observer(), events=["log"])
        self.assertTrue(self.registry.observed)
        self.disconnect()
        self.assertFalse(self.registry.observed)

    def test_stalledObserverIsBoundedThenUnsubscribed(self):
        """At most N calls in flight; the rest waits in a bounded queue, then it is let go."""
        self.patch(QueryPerspective, "inFlightLimit", 4)
        self.patch(QueryPerspective, "queueLimit", 10)
        self.patch(QueryPerspective, "missedLimit", 50)
        observer = Observer()
        observer.stalled = []
        self.subscribe(observer, events=["log"])
        record = self.registry.connect("a")
        for n in range(30):
            self.registry.log(record, 1.0, [str(n)])
            self.pump.flush()
        self.assertEqual(len(observer.events), 4)
        # The observer catches up: it gets the queue, then what it missed.
        for d in observer.stalled:
            d.callback(None)
        observer.stalled = None
        self.pump.flush()
        messages = [payload.get("message", payload.get("dropped"))
                    for _, payload in observer.events]
        self.assertEqual(messages, [str(n) for n in range(14)] + [16])
        # Stalled again, past the limit: unsubscribed and told why.
        observer.stalled, observer.events = [], []
        for n in range(100):
            self.registry.log(record, 1.0, [str(n)])
        self.pump.flush()
        self.assertFalse(self.registry.observed)
        self.assertEqual(observer.events[-1],
                         ("end", {"type": "end",
                                  "reason": "subscriber too slow: 51 messages dropped"}))
        self.assertEqual(len(observer.events), 5)

    def test_observerErrorsDoNotEndTheSubscription(self):
        class Failing(Observer):
            def remote_event(self, kind, payload):
                Observer.remote_event(self, kind, payload)
                raise ValueError("observer bug")

        observer = Failing()
        self.subscribe(observer, events=["ready"])
        for name in ("a", "b"):
            self.registry.connect(name)
        self.pump.flush()
        self.assertEqual([p["client"] for _, p in observer.events], ["a", "b"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
