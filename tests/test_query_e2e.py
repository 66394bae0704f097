"""``logsvc-query`` against a real ``twistd -n logatron``: the only proof of the whole path."""

import base64
import json
import os
import selectors
import signal
import subprocess
import time
import urllib.request

from datetime import datetime, timedelta

import pytest
from twisted.cred import credentials
from twisted.python import usage
from twisted.trial.unittest import TestCase

from logsvc.query import Options, localTime, loginCredentials

from tests.clients import QUERY, httpGet, lineClient, oneLineError, query
from tests.polling import waitFor
from tests.server import freePort, startupError

@pytest.fixture
def open_server(twistd):
    return twistd(store="memory:", listeners=("port", "pb"))


@pytest.fixture
def auth_server(twistd):
    return twistd("--auth", "memory:alice:secret", store="memory:", listeners=("port", "pb"))


def test_logStateAndClients(open_server):
    with lineClient(open_server.ports["port"], "web-1") as client:
        client.sendall(b"LOG hello from web-1\nSET pid 4242\nLOG second line\n")
        # Times are local, with their UTC offset: here 5 h 30 ahead of UTC.
        log = waitFor(lambda: "second line" in (result := query(
            open_server, "log", "web-1", env={"TZ": "IST-5:30"})).stdout and result,
            "the lines in logsvc-query log")
        assert log.returncode == 0
        lines = log.stdout.splitlines()
        assert [line.split("  ", 1)[1] for line in lines] == ["hello from web-1", "second line"]
        when = datetime.fromisoformat(lines[0].split("  ")[0])
        assert when.utcoffset() == timedelta(hours=5, minutes=30), lines[0]
        assert abs(when.timestamp() - time.time()) < 3600, lines[0]

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
    """
    watch prints each new LOG line of the clients it follows as it arrives, and Ctrl-C
    ends it cleanly (how soon a line shows: C{bench/run.py watch}).
    """
    watcher = subprocess.Popen(
        [QUERY, "--connect", f"tcp:127.0.0.1:{open_server.ports['pb']}", "watch", "--json",
         "--client", "watched-*", "--events", "log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stderr.readline() == "watching; Ctrl-C to stop\n"
        with lineClient(open_server.ports["port"], "other") as other, \
                lineClient(open_server.ports["port"], "watched-1") as client:
            other.sendall(b"LOG not for this watch\n")
            time.sleep(0.2)
            selector = selectors.DefaultSelector()
            selector.register(watcher.stdout, selectors.EVENT_READ)
            for n in range(5):
                client.sendall(b"LOG fresh line %d\n" % n)
                assert selector.select(timeout=10), "watch printed nothing"
                message = json.loads(watcher.stdout.readline())
                assert (message["client"], message["event"], message["message"]) == \
                    ("watched-1", "log", f"fresh line {n}")
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
    with lineClient(auth_server.ports["port"], "db-1") as client:
        client.sendall(b"LOG ok\n")
        waitFor(lambda: query(auth_server, "--user", "alice", "--password", "secret",
                              "log", "db-1").stdout, "db-1's line")
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
        """The instant, in local time with its UTC offset (a naive time would lose it)."""
        parsed = datetime.fromisoformat(localTime(0.25))
        self.assertEqual((parsed.timestamp(), parsed.utcoffset()),
                         (0.25, datetime.fromtimestamp(0.25).astimezone().utcoffset()))
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
    with lineClient(server.ports["port"], "db-1") as client:
        client.sendall(b"LOG ok\n")
        waitFor(lambda: query(server, "--user", unixUser, "--password", "s3cret pass",
                              "log", "db-1").stdout, "db-1's line")
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


def test_authFile(twistd, tmp_path):
    """--auth file:PATH, one user:password a line, over PB and HTTP."""
    users = tmp_path / "users"
    users.write_text("alice:secret\nbob:hunter2\n")
    server = twistd("--auth", f"file:{users}", store="memory:",
                    listeners=("port", "pb", "http"))
    with lineClient(server.ports["port"], "db-1") as client:
        client.sendall(b"LOG ok\n")
        waitFor(lambda: query(server, "--user", "bob", "--password", "hunter2",
                              "log", "db-1").stdout, "db-1's line")
    right = query(server, "--user", "alice", "--password", "secret", "log", "db-1")
    assert right.returncode == 0 and right.stdout.endswith("  ok\n"), right
    oneLineError(query(server, "--user", "alice", "--password", "hunter2", "clients"),
                 "login refused")
    oneLineError(query(server, "--user", "carol", "--password", "secret", "clients"),
                 "login refused")
    for password, status in (("secret", 200), ("wrong", 401)):
        headers = {"Authorization": "Basic " + base64.b64encode(
            f"alice:{password}".encode()).decode()}
        assert httpGet(server.ports["http"], "/clients", headers)[0] == status, password
