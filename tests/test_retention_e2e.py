"""
Retention against a real ``twistd -n logatron``: bad option values, a trimmed journal
as every interface shows it (journal port in both dialects, HTTP, WebSocket, PB and
logsvc-query), the npm tcp-log-client 4.0.0 and 6.0.0 reading it, and the periodic check.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from websockets.sync.client import connect

from .server import startupError
from .test_journal_e2e import Client

QUERY = os.path.join(os.path.dirname(sys.executable), "logsvc-query")
NODE_DIR = os.path.join(os.path.dirname(__file__), "node")


@pytest.mark.parametrize("option, value, message", [
    ("--retain-entries", "0", "--retain-entries must be a positive integer, not '0'"),
    ("--retain-entries", "many", "--retain-entries must be a positive integer"),
    ("--retain-age", "7w", "--retain-age must be a positive number of s, m, h or d"),
    ("--retain-age", "0s", "--retain-age must be a positive number"),
    ("--retain-bytes", "20Q", "--retain-bytes must be a positive size such as 500M"),
    ("--retain-bytes", "-5M", "--retain-bytes must be a positive size"),
])
def test_badRetentionValueIsOneLineAndExitOne(tmp_path, option, value, message):
    assert message in startupError("--store", "memory:", option, value, cwd=tmp_path)


def getJSON(server, path: str, code: int = 200):
    url = f"http://127.0.0.1:{server.ports['http']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == code
            return json.load(response)
    except urllib.error.HTTPError as e:
        assert e.code == code, e.read()
        return json.load(e)


def until(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


@pytest.fixture
def trimmed(twistd):
    """
    A SQLite journal of 20 entries kept to the last 5 (first 16, head 20): written, then
    restarted with --retain-entries 5, which applies at start-up.
    """
    server = twistd()
    client = Client(server.ports["journal"])
    for n in range(1, 21):
        assert client.write(f"w{n}", {"n": n}) == n
    client.close()
    assert server.stop() == 0
    server = twistd("--retain-entries", "5")
    until(lambda: getJSON(server, "/status")["first"] == 16)
    return server


NOTICE = {"trimmed": {"first": 16, "head": 20}}


def test_journalPortBothDialects(trimmed):
    client = Client(trimmed.ports["journal"])
    client.send({"from": 1})
    assert client.receiveMany(7) == [NOTICE] + [
        {"index": n, "entry": {"n": n}} for n in range(16, 21)] + [{"current": True}]
    client.close()
    client = Client(trimmed.ports["journal"])
    client.send({"from": 3, "read": 2})
    assert client.receiveMany(4) == [NOTICE, {"index": 16, "entry": {"n": 16}},
                                     {"index": 17, "entry": {"n": 17}}, {"head": 20}]
    # A retry of a deleted write still gets its original index.
    assert client.write("w3", {"n": 3}) == 3
    assert client.write("new", {"n": 21}) == 21
    client.close()


def test_everyInterfaceShowsFirstAndHead(trimmed):
    status = getJSON(trimmed, "/status")
    assert (status["first"], status["head"]) == (16, 20)
    health = getJSON(trimmed, "/health")
    assert (health["first"], health["head"]) == (16, 20)
    gone = getJSON(trimmed, "/journal?from=1", 410)
    assert gone["trimmed"] == {"first": 16, "head": 20}
    assert "entries before 16 were deleted by retention" in gone["error"]
    assert [e["index"] for e in getJSON(trimmed, "/journal?from=16")["entries"]] == list(
        range(16, 21))
    url = f"http://127.0.0.1:{trimmed.ports['http']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        metrics = response.read().decode()
    assert "logsvc_journal_first 16.0" in metrics
    assert "logsvc_journal_head 20.0" in metrics
    pb = ["--connect", f"tcp:127.0.0.1:{trimmed.ports['pb']}"]
    status = subprocess.run([QUERY, *pb, "status", "--json"], capture_output=True,
                            text=True, timeout=30)
    assert json.loads(status.stdout) == {"first": 16, "head": 20}
    read = subprocess.run([QUERY, *pb, "read", "1"], capture_output=True, text=True,
                          timeout=30)
    assert read.returncode == 0, read.stderr
    assert "entries before 16 were deleted by retention (head 20); reading from 16" in read.stderr
    assert [line.split()[0] for line in read.stdout.splitlines()] == [
        str(n) for n in range(16, 21)]
    read = subprocess.run([QUERY, *pb, "--json", "read", "2"], capture_output=True,
                          text=True, timeout=30)
    assert [json.loads(line) for line in read.stdout.splitlines()][:2] == [
        NOTICE, {"index": 16, "entry": {"n": 16}}]


def test_webSocketFromBelowFirst(trimmed):
    url = f"ws://127.0.0.1:{trimmed.ports['http']}/stream?events=entry&from=2"
    with connect(url) as ws:
        messages = [json.loads(ws.recv(timeout=5)) for _ in range(6)]
    assert messages == [{"type": "trimmed", "first": 16, "head": 20}] + [
        {"type": "entry", "index": n, "entry": {"n": n}} for n in range(16, 21)]


@pytest.mark.parametrize("version", [4, 6])
def test_npmTcpLogClientReadsATrimmedJournal(trimmed, version):
    """4.0.0 ignores the notice; 6.0.0 emits it as an 'error' event, and a program
    that listens for errors reads on from first."""
    result = subprocess.run([shutil.which("node") or "node", "trimmed-client.js",
                             str(version), str(trimmed.ports["journal"]), "20"],
                            cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    outcome = json.loads(result.stdout)
    assert outcome["read"] == list(range(16, 22))
    assert outcome["written"] == 21
    assert outcome["notices"] == ([NOTICE] if version == 6 else [])


def test_periodicCheckOnMemoryStore(twistd):
    """Retention is checked again while running, not only at start-up."""
    server = twistd("--retain-entries", "3", store="memory:")
    client = Client(server.ports["journal"])
    for n in range(1, 11):
        client.write(f"w{n}", {"n": n})
    until(lambda: getJSON(server, "/status")["first"] == 8, timeout=30)
    client.send({"from": 1})
    assert client.receive() == {"trimmed": {"first": 8, "head": 10}}
    client.close()
