"""
Client records survive a restart of a real ``twistd`` on SQLite and on PostgreSQL: after
a clean stop, and after kill -9 once a tick has passed, every client's ring, state,
counters and offline record are as before; only ``online`` has changed.
"""

import json
import socket
import time
import urllib.request

import pytest

from tests.postgres import sharedCluster, skipUnlessAvailable


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'journal.db'}"
    skipUnlessAvailable()
    return sharedCluster().database()


def clients(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/clients", timeout=30) as r:
        return json.load(r)


def settle(port: int, expected: dict, condition=lambda found: True) -> dict:
    """Wait until /clients shows the lines counted per client in C{expected}, and
    C{condition} holds."""
    deadline = time.monotonic() + 30
    while True:
        found = clients(port)
        if all(found.get(name, {}).get("counters", {}).get("lines") == lines
               for name, lines in expected.items()) and condition(found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def lineClient(port: int, *lines: bytes) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(b"".join(line + b"\n" for line in lines))
    return client


@pytest.mark.parametrize("stop", ["clean", "kill -9"])
def test_clientsAsBeforeTheRestart(twistd, store, stop):
    server = twistd(store=store, listeners=("port", "journal", "http"))
    gone = lineClient(server.ports["port"], b"IAM web-1", b"LOG one", b"LOG two",
                      b"SET status ready", b"nonsense")
    gone.close()
    staying = lineClient(server.ports["port"], b"IAM web-2", b"LOG still here",
                         b"SET mode busy")
    before = settle(server.ports["http"], {"web-1": 2, "web-2": 1}, lambda found: (
        not found["web-1"]["online"] and found["web-2"]["state"] == {"mode": "busy"}))
    if stop == "clean":
        assert server.stop() == 0
    else:
        time.sleep(2.5)     # a tick has passed: the records are written
        server.kill()
    staying.close()
    server.start()
    after = clients(server.ports["http"])
    assert set(after) == {"web-1", "web-2"}
    for name in after:
        assert after[name] == {**before[name], "online": False}, name
    assert after["web-1"]["counters"]["ignored"] == 1
    assert [m for _, m in after["web-2"]["log"]] == ["still here"]
    assert after["web-2"]["state"] == {"mode": "busy"}


def test_reconnectedClientKeepsItsRing(twistd, store):
    server = twistd(store=store, listeners=("port", "journal", "http"))
    lineClient(server.ports["port"], b"IAM web-1", b"LOG before").close()
    settle(server.ports["http"], {"web-1": 1}, lambda found: not found["web-1"]["online"])
    assert server.stop() == 0
    server.start()
    again = lineClient(server.ports["port"], b"IAM web-1", b"LOG after")
    found = settle(server.ports["http"], {"web-1": 2})
    again.close()
    assert [m for _, m in found["web-1"]["log"]] == ["before", "after"]
    assert found["web-1"]["online"] is True
