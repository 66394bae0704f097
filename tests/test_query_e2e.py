"""``logsvc-query`` against a real ``twistd -n logatron``: the only proof of the whole path."""

import base64
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from datetime import datetime

import pytest
from twisted.cred import credentials
from twisted.python import usage
from twisted.trial.unittest import TestCase

from logsvc.query import Options, localTime, loginCredentials

from tests.server import freePort, startupError

QUERY = os.path.join(os.path.dirname(sys.executable), "logsvc-query")


@pytest.fixture
def open_server(twistd):
    return twistd(store="memory:", listeners=("port", "pb"))


@pytest.fixture
def auth_server(twistd):
    return twistd("--auth", "memory:alice:secret", store="memory:", listeners=("port", "pb"))


def query(server, *args, env=None, connect=None):
    environ = {k: v for k, v in os.environ.items() if k != "LOGSVC_PASSWORD"}
    environ.update(env or {})
    return subprocess.run(
        [QUERY, "--connect", connect or f"tcp:127.0.0.1:{server.ports['pb']}", *args],
        capture_output=True, text=True, timeout=30, env=environ, stdin=subprocess.DEVNULL)


def oneLineError(result, text):
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert text in result.stderr


def lineClient(server, name):
    client = socket.create_connection(("127.0.0.1", server.ports["port"]))
    client.sendall(f"IAM {name}\n".encode())
    return client


def until(check, timeout=10.0):
    """Poll a condition the server reaches asynchronously; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_logStateAndClients(open_server):
    with lineClient(open_server, "web-1") as client:
        client.sendall(b"LOG hello from web-1\nSET pid 4242\nLOG second line\n")
        log = until(lambda: "second line" in query(open_server, "log", "web-1").stdout
                    and query(open_server, "log", "web-1"))
        assert log.returncode == 0
        lines = log.stdout.splitlines()
        assert [line.split("  ", 1)[1] for line in lines] == ["hello from web-1", "second line"]
        assert lines[0][:4].isdigit() and "T" in lines[0].split("  ")[0]

        state = query(open_server, "state", "web-1")
        assert state.stdout == "pid  4242\n"

        clients = query(open_server, "clients")
        header, row = clients.stdout.splitlines()
        assert header.split() == ["NAME", "ONLINE", "CONNECTED", "LINES", "STATE"]
        assert row.split()[0:2] == ["web-1", "yes"] and row.endswith("pid=4242")

        parsed = json.loads(query(open_server, "--json", "clients").stdout)
        assert parsed["web-1"]["log"][1][1] == "second line"
        assert parsed["web-1"]["state"] == {"pid": "4242"}
        assert json.loads(query(open_server, "log", "--json", "web-1").stdout)[0][1] == \
            "hello from web-1"


def test_unknownClient(open_server):
    oneLineError(query(open_server, "log", "no-such-client"), "no such client: no-such-client")
    oneLineError(query(open_server, "state", "no-such-client"), "no such client")


def test_journalAppendAndRead(open_server):
    first = json.loads(query(open_server, "--json", "append", '{"k": "é", "n": 1}').stdout)
    second = int(query(open_server, "append", '{"n": 2}').stdout)
    assert second == first["index"] + 1
    read = query(open_server, "--json", "read", str(first["index"]))
    items = [json.loads(line) for line in read.stdout.splitlines()]
    assert [item["entry"] for item in items] == [{"k": "é", "n": 1}, {"n": 2}]
    limited = query(open_server, "read", "--limit", "1", str(first["index"]))
    assert limited.stdout == f'{first["index"]}  {{"k": "é", "n": 1}}\n'


def test_badArguments(open_server):
    for args in (["read", "0"], ["append", "[1]"], ["append", "{"], ["watch", "--events", "nope"],
                 [], ["frobnicate"]):
        result = query(open_server, *args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, args


def test_serverDown():
    oneLineError(query(None, "clients", connect=f"tcp:127.0.0.1:{freePort()}"),
                 "cannot connect to")


def test_watchFollowsLiveLines(open_server):
    """watch prints a new LOG line as soon as it arrives, and Ctrl-C ends it cleanly."""
    watcher = subprocess.Popen(
        [QUERY, "--connect", f"tcp:127.0.0.1:{open_server.ports['pb']}", "watch", "--json",
         "--client", "watched-*", "--events", "log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stderr.readline() == "watching; Ctrl-C to stop\n"
        with lineClient(open_server, "other") as other, \
                lineClient(open_server, "watched-1") as client:
            other.sendall(b"LOG not for this watch\n")
            time.sleep(0.2)
            selector = selectors.DefaultSelector()
            selector.register(watcher.stdout, selectors.EVENT_READ)
            latencies = []
            for n in range(5):
                sent = time.monotonic()
                client.sendall(b"LOG fresh line %d\n" % n)
                assert selector.select(timeout=10), "watch printed nothing"
                message = json.loads(watcher.stdout.readline())
                latencies.append(time.monotonic() - sent)
                assert (message["client"], message["event"], message["message"]) == \
                    ("watched-1", "log", f"fresh line {n}")
                time.sleep(0.05)
        # Issue 4: a new line shows within 100 ms; the median of five keeps one
        # scheduling hiccup on a shared machine from deciding it.
        median = sorted(latencies)[2]
        print(f"watch latencies: {[round(t * 1000, 1) for t in latencies]} ms")
        assert median < 0.1, latencies
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(10) == 0
        assert "Traceback" not in watcher.stderr.read()
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.wait()
        watcher.stdout.close()
        watcher.stderr.close()


def test_passwords(auth_server):
    with lineClient(auth_server, "db-1") as client:
        client.sendall(b"LOG ok\n")
        until(lambda: query(auth_server, "--user", "alice", "--password", "secret",
                            "log", "db-1").stdout)
    right = query(auth_server, "--user", "alice", "--password", "secret", "log", "db-1")
    assert right.returncode == 0 and right.stdout.endswith("  ok\n")
    fromEnvironment = query(auth_server, "--user", "alice", "clients",
                            env={"LOGSVC_PASSWORD": "secret"})
    assert fromEnvironment.returncode == 0 and "db-1" in fromEnvironment.stdout
    oneLineError(query(auth_server, "--user", "alice", "--password", "wrong", "clients"),
                 "login refused")
    oneLineError(query(auth_server, "--user", "mallory", "--password", "secret", "clients"),
                 "login refused")
    oneLineError(query(auth_server, "clients"), "login refused: this server needs --user")
    noPassword = query(auth_server, "--user", "alice", "clients")
    assert noPassword.returncode == 2 and "LOGSVC_PASSWORD" in noPassword.stderr


def test_nonLoopbackPBWithoutAuthIsRefusedAtStartUp(tmp_path):
    error = startupError("--store", "memory:", "--port", "tcp:0:interface=127.0.0.1",
                         "--journal", "none", "--http", "none", "--pb", "tcp:0", cwd=tmp_path)
    assert "--pb" in error and "--auth" in error


class QueryOptionsTests(TestCase):
    """The command line's parsing and password sources, without a server."""

    def parse(self, *args):
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self):
        options = self.parse("watch")
        self.assertEqual((options["connect"], options["user"], options["json"]),
                         ("tcp:127.0.0.1:8787", None, False))
        self.assertEqual(options.subOptions["events"], ["ready", "log", "set", "close"])
        self.assertEqual(self.parse("--connect", "9000", "clients")["connect"],
                         "tcp:127.0.0.1:9000")

    def test_subcommandArguments(self):
        watch = self.parse("watch", "--client", "api-*", "--events", "log,entry",
                           "--from", "5").subOptions
        self.assertEqual((watch["client"], watch["events"], watch["from"]),
                         ("api-*", ["log", "entry"], 5))
        self.assertEqual(self.parse("watch", "--from", "1").subOptions["events"],
                         ["ready", "log", "set", "close", "entry"])
        read = self.parse("read", "--limit", "3", "7").subOptions
        self.assertEqual((read["from"], read["limit"]), (7, 3))
        self.assertEqual(self.parse("append", '{"a": [1]}').subOptions["entry"], {"a": [1]})
        self.assertTrue(self.parse("log", "--json", "web-1")["json"])

    def test_badArguments(self):
        for args in ([], ["log"], ["read", "x"], ["read", "--limit", "0", "1"],
                     ["append", "1"], ["watch", "--events", "log,bogus"]):
            self.assertRaises(usage.UsageError, self.parse, *args)

    def test_passwordSources(self):
        class Terminal:
            def __init__(self, tty):
                self.tty = tty

            def isatty(self):
                return self.tty

        self.assertIsInstance(loginCredentials(self.parse("clients"), {}, Terminal(False)),
                              credentials.Anonymous)
        given = loginCredentials(self.parse("-u", "alice", "-p", "s3", "clients"),
                                 {"LOGSVC_PASSWORD": "env"}, Terminal(False))
        self.assertEqual((given.username, given.password), (b"alice", b"s3"))
        fromEnv = loginCredentials(self.parse("-u", "alice", "clients"),
                                   {"LOGSVC_PASSWORD": "env"}, Terminal(False))
        self.assertEqual(fromEnv.password, b"env")
        asked = loginCredentials(self.parse("-u", "alice", "clients"), {}, Terminal(True),
                                 ask=lambda prompt: "typed")
        self.assertEqual(asked.password, b"typed")
        self.assertRaises(usage.UsageError, loginCredentials,
                          self.parse("-u", "alice", "clients"), {}, Terminal(False))

    def test_localTime(self):
        text = localTime(0.25)
        self.assertEqual(datetime.fromisoformat(text).timestamp(), 0.25)
        self.assertEqual(localTime(None), "-")


@pytest.fixture
def unixUser():
    """A system account with a password, removed afterwards (root only: it edits
    /etc/passwd and /etc/shadow, as an administrator would)."""
    if os.geteuid() != 0 or not all(
            os.path.exists(f"/usr/sbin/{tool}") for tool in ("useradd", "chpasswd", "userdel")):
        pytest.skip("needs root and useradd/chpasswd/userdel to create a system account")
    name = f"logsvc{os.getpid() % 100000}"
    subprocess.run(["/usr/sbin/useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        subprocess.run(["/usr/sbin/chpasswd"], input=f"{name}:s3cret pass\n", text=True,
                       check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["/usr/sbin/userdel", name], capture_output=True)


def test_unixAccounts(twistd, unixUser):
    """--auth unix over PB and HTTP: logsvc-query sends the password, which the system's
    hash is checked against, and PB's challenge cannot carry.  A second --auth adds its
    users: either checker may accept a login."""
    server = twistd("--auth", "unix", "--auth", "memory:alice:secret",
                    store="memory:", listeners=("port", "pb", "http"))
    with lineClient(server, "db-1") as client:
        client.sendall(b"LOG ok\n")
        until(lambda: query(server, "--user", unixUser, "--password", "s3cret pass",
                            "log", "db-1").stdout)
    right = query(server, "--user", unixUser, "--password", "s3cret pass", "log", "db-1")
    assert right.returncode == 0 and right.stdout.endswith("  ok\n"), right
    alice = query(server, "--user", "alice", "--password", "secret", "clients")
    assert alice.returncode == 0 and "db-1" in alice.stdout, alice
    oneLineError(query(server, "--user", unixUser, "--password", "wrong", "clients"),
                 "login refused")
    oneLineError(query(server, "--user", "alice", "--password", "s3cret pass",
                       "clients"), "login refused")
    oneLineError(query(server, "clients"), "login refused: this server needs --user")
    for user, password in [(unixUser, "s3cret pass"), ("alice", "secret")]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.ports['http']}/clients", headers={
                "Authorization": "Basic " + base64.b64encode(
                    f"{user}:{password}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert "db-1" in json.loads(response.read()), user
