"""Options and service construction for ``twistd logatron``."""

import io
import os
import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import IResource

from logsvc.lineservice import LineFactory
from logsvc.pb.avatar import LONGEST_LINE
from logsvc.retention import Retention
from logsvc.tap import endpointDescription, isLoopback
from tests.services import buildService, parse
from twisted.internet.endpoints import serverFromString
from twisted.internet import reactor

DEFAULTS = {
    "port": "tcp:2212",
    "journal": "tcp:8089:interface=127.0.0.1",
    "pb": "tcp:8787:interface=127.0.0.1",
    "http": "tcp:8080:interface=127.0.0.1",
    "syslog": None,
    "store": "sqlite:logsvc.db",
    "sync": "always",
    "buffer-size": 128,
    "max-line": 65536,
    "max-entry": 1048576,
    "max-offline": 10000,
    "max-connections": 10000,
    "journal-lines": True,
    "retention": Retention(),
}


def parseError(testCase: TestCase, *args: str) -> str:
    """The one line a bad command line prints, checking that it exits 1."""
    stderr = io.StringIO()
    testCase.patch(sys, "__stderr__", stderr)
    error = testCase.assertRaises(SystemExit, parse, *args)
    testCase.assertEqual(error.code, 1)
    testCase.assertEqual(stderr.getvalue().count("\n"), 1)
    return stderr.getvalue()


class OptionsTests(TestCase):
    def test_defaults(self):
        self.assertEqual(dict(parse()), DEFAULTS)

    def test_everyOption(self):
        options = parse("--port", "2300", "--journal", "none", "--pb", "unix:/tmp/pb.sock",
                        "--http", "none", "--store", "memory:", "--sync", "os",
                        "--buffer-size", "16", "--max-line", "1000", "--max-entry", "2000",
                        "--max-offline", "5", "--max-connections", "7",
                        "--no-journal-lines", "--syslog", "udp:5514", "--retain-entries",
                        "1000000", "--retain-age", "7d", "--retain-bytes", "20G")
        self.assertEqual(dict(options), {
            "retention": Retention(1_000_000, 7 * 86400, 20 << 30),
            "port": "tcp:2300", "journal": None, "pb": "unix:/tmp/pb.sock", "http": None,
            "syslog": "udp:5514", "store": "memory:", "sync": "os", "buffer-size": 16,
            "max-line": 1000, "max-entry": 2000, "max-offline": 5, "max-connections": 7,
            "journal-lines": False})

    def test_journalLinesLastFlagWins(self):
        self.assertTrue(parse("--no-journal-lines", "--journal-lines")["journal-lines"])

    def test_badNumbers(self):
        for args in (["--buffer-size", "0"], ["--max-line", "x"], ["--max-entry", "-1"]):
            self.assertIn("must be a positive integer", parseError(self, *args))

    def test_longestLineIsWhatPBCanCarry(self):
        self.assertEqual(parse("--max-line", str(LONGEST_LINE))["max-line"], LONGEST_LINE)
        self.assertIn(f"--max-line must be at most {LONGEST_LINE} (the longest line PB can "
                      f"carry), not '{LONGEST_LINE + 1}'",
                      parseError(self, "--max-line", str(LONGEST_LINE + 1)))

    def test_malformedEndpoint(self):
        self.assertIn("logatron: --port: malformed endpoint 'tcp:notaport'",
                      parseError(self, "--port", "tcp:notaport"))
        self.assertIn("--journal: malformed endpoint", parseError(self, "--journal", "bogus:1"))

    def test_portCannotBeNone(self):
        self.assertIn("--port cannot be none", parseError(self, "--port", "none"))

    def test_nonLoopbackNeedsAuth(self):
        self.assertIn("--pb tcp:8787 is reachable from other hosts: give --auth",
                      parseError(self, "--pb", "tcp:8787"))
        self.assertIn("--http", parseError(self, "--http", "tcp:8080:interface=0.0.0.0"))
        self.assertEqual(parse("--auth", "memory:a:b", "--pb", "tcp:8787")["pb"], "tcp:8787")

    def test_endpointDescription(self):
        self.assertEqual(endpointDescription("2212"), "tcp:2212")
        self.assertEqual(endpointDescription("NONE"), None)
        self.assertEqual(endpointDescription("unix:/x"), "unix:/x")

    def test_isLoopback(self):
        for description, expected in [
            ("tcp:1:interface=127.0.0.1", True), ("tcp:1:interface=localhost", True),
            ("tcp6:1:interface=\\:\\:1", True), ("unix:/tmp/x", True), ("tcp:1", False),
            ("tcp:1:interface=10.1.2.3", False), ("tcp6:1", False),
        ]:
            self.assertEqual(isLoopback(serverFromString(reactor, description)), expected,
                             description)


class MakeServiceTests(TestCase):
    def test_listenersAreNamedEndpointServices(self):
        service = buildService(self, "--store", "memory:", "--journal", "none", "--pb", "none",
                               "--http", "none", "--port", "2399", reactor=Clock())
        [listener] = service.listeners()
        self.assertIsInstance(listener, StreamServerEndpointService)
        self.assertEqual(listener.name, "port")
        self.assertIsInstance(listener.factory.wrappedFactory, LineFactory)
        self.assertEqual(listener.factory.maxConnections, 10000)
        self.assertEqual(service.endpoints, {"port": "tcp:2399"})
        self.assertEqual(service.registry.bufferSize, 128)

    def test_syncModeReachesTheStore(self):
        """--sync always fsyncs every commit (synchronous=FULL); os leaves it to the OS."""
        for mode, synchronous in (("always", 2), ("os", 1)):
            path = os.path.join(self.mktemp(), "journal.db")
            os.makedirs(os.path.dirname(path))
            service = buildService(self, "--store", f"sqlite:{path}", "--sync", mode,
                                   "--journal", "none", "--pb", "none", "--http", "none")
            store = service.store
            self.successResultOf(store.open())
            self.addCleanup(store.close)
            self.assertEqual(store._writer.connection.execute("PRAGMA synchronous").fetchone()[0],
                             synchronous, mode)

    def test_sharedObjectsAreBuiltOnce(self):
        """The site and the auth realm serve one tree; metrics read the journal's readers."""
        service = buildService(self, "--store", "memory:", "--pb", "none",
                               "--auth", "memory:alice:secret", reactor=Clock())
        journal = service.getServiceNamed("journal").factory.wrappedFactory
        guard = service.getServiceNamed("http").factory.wrappedFactory.resource
        root = guard._portal.realm.webRoot
        self.assertIs(root.children[b"metrics"].metrics.journalReaders, journal.readers)
        self.assertIs(root.children[b"clients"].registry, service.registry)
        self.assertIs(guard._portal.realm.requestAvatar("alice", None, IResource)[1], root)
