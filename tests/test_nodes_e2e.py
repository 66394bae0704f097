"""
Two real ``twistd`` nodes on one PostgreSQL database share one view of every client: a
line client on node A is known on node B (HTTP, ``logsvc-query`` over PB), its name is
refused on B while it is online on A, its events reach a WebSocket subscriber on B, and
when A is killed (-9) its clients show offline on B within 10 seconds, rings kept.
"""

import json
import select
import socket
import time

import pytest
from websockets.sync.client import connect

from tests.clients import clientInfo, getJSON, lineClient, query
from tests.postgres import sharedCluster, skipUnlessAvailable
from tests.polling import waitFor


@pytest.fixture
def nodes(twistd, tmp_path):
    skipUnlessAvailable()
    database = sharedCluster().database()
    started = []
    for number in range(2):
        directory = tmp_path / f"node{number}"
        directory.mkdir()
        started.append(twistd("--node-name", f"node-{number}", directory=directory,
                              store=database, listeners=("port", "journal", "pb", "http")))
    return started


def refusal(port: int, name: str) -> bytes:
    """What the line service answers to C{IAM name}, until it closes."""
    client = lineClient(port, name)
    answer = b""
    while chunk := client.recv(1024):
        answer += chunk
    client.close()
    return answer


def allOffline(clients: dict) -> dict | None:
    return clients if not any(info["online"] for info in clients.values()) else None


def test_clientOnAIsKnownOnB(nodes):
    a, b = nodes
    client = lineClient(a.ports["port"], "web-1")
    client.sendall(b"LOG one\nLOG two\nSET status ready\nnonsense\n")
    found = waitFor(lambda: (info := clientInfo(b, "web-1")) and info["counters"]["lines"] == 2
                    and info["state"] == {"status": "ready"} and info,
                    "web-1 on node B")
    assert found["online"] is True
    assert [m for _, m in found["log"]] == ["one", "two"]
    assert found["counters"]["ignored"] == 1
    assert getJSON(b.ports["http"], "/clients")["web-1"] == {
        k: v for k, v in found.items() if k != "name"}
    assert getJSON(b.ports["http"], "/status")["clients"] == {"online": 1, "offline": 0}
    listed = json.loads(query(b, "--json", "clients").stdout)
    assert listed["web-1"]["online"] is True
    assert [m for _, m in json.loads(query(b, "--json", "log", "web-1").stdout)] == [
        "one", "two"]
    assert json.loads(query(b, "--json", "state", "web-1").stdout) == {"status": "ready"}
    assert refusal(b.ports["port"], "web-1") == b"ERR name in use: web-1\n"
    client.close()
    waitFor(lambda: clientInfo(b, "web-1")["online"] is False, "web-1 offline on node B")
    again = lineClient(b.ports["port"], "web-1")
    again.sendall(b"LOG three\n")
    moved = waitFor(lambda: (info := clientInfo(a, "web-1"))["counters"]["lines"] == 3
                    and info, "web-1 back, on node B, seen from A")
    assert moved["online"] is True
    assert [m for _, m in moved["log"]] == ["one", "two", "three"]
    assert refusal(a.ports["port"], "web-1") == b"ERR name in use: web-1\n"
    again.close()


def test_nameClaimedOnBothNodesAtOnceIsGivenOnce(nodes):
    a, b = nodes
    for round in range(5):
        name = f"race-{round}"
        pair = [socket.create_connection(("127.0.0.1", node.ports["port"]), timeout=30)
                for node in nodes]
        for client in pair:
            client.sendall(f"IAM {name}\nLOG from {client.getpeername()[1]}\n".encode())
        readable, _, _ = select.select(pair, [], [], 15)
        assert len(readable) >= 1, "neither node refused the name"
        [refused] = readable
        assert refused.recv(1024) == f"ERR name in use: {name}\n".encode()
        kept = pair[1 - pair.index(refused)]
        owner = nodes[pair.index(kept)]
        found = waitFor(lambda: (info := clientInfo(owner, name)) and info["online"]
                        and info["counters"]["lines"] == 1 and info, f"{name} online")
        assert found["log"][0][1] == f"from {kept.getpeername()[1]}"
        for client in pair:
            client.close()


def test_statusNamesTheNode(nodes):
    assert [getJSON(node.ports["http"], "/status")["node"] for node in nodes] == [
        "node-0", "node-1"]
    assert getJSON(nodes[1].ports["http"], "/health")["node"] == "node-1"


def test_killedNodesClientsGoOfflineElsewhere(nodes):
    a, b = nodes
    clients = [lineClient(a.ports["port"], f"app-{n}") for n in range(3)]
    for n, client in enumerate(clients):
        client.sendall(b"".join(b"LOG line %d\n" % i for i in range(n + 2)))
    before = waitFor(lambda: all((info := clientInfo(b, f"app-{n}")) and info["online"]
                                 and info["counters"]["lines"] == n + 2
                                 for n in range(3)) and getJSON(b.ports["http"], "/clients"),
                     "A's clients on node B")
    a.kill()
    killed = time.monotonic()
    after = waitFor(lambda: allOffline(getJSON(b.ports["http"], "/clients")),
                    "A's clients offline on node B", timeout=30)
    assert time.monotonic() - killed < 10
    assert {name: {**info, "online": False} for name, info in before.items()} == after
    assert [m for _, m in after["app-2"]["log"]] == [f"line {i}" for i in range(4)]
    # The names are free again: a client that reconnects to B keeps its ring.
    back = lineClient(b.ports["port"], "app-1")
    back.sendall(b"LOG on B now\n")
    found = waitFor(lambda: (info := clientInfo(b, "app-1"))["online"] and info,
                    "app-1 online on B")
    assert [m for _, m in found["log"]][:2] == ["line 0", "line 1"]
    back.close()
    for client in clients:
        client.close()


def test_eventsOfAReachSubscribersOnB(nodes):
    a, b = nodes
    url = f"ws://127.0.0.1:{b.ports['http']}/stream?client=web-*&events=ready,log,set,close"
    with connect(url) as ws:
        time.sleep(0.5)     # the subscription is in place before the client comes
        client = lineClient(a.ports["port"], "web-7")
        client.sendall(b"LOG hello \xc3\xa9\nSET mood calm\n"
                       + b"".join(b"LOG %d\n" % n for n in range(200)))
        client.shutdown(socket.SHUT_WR)
        client.recv(1)
        client.close()
        got = []
        while not got or got[-1]["event"] != "close":
            got.append(json.loads(ws.recv(timeout=15)))
    assert [(m["event"], m["client"]) for m in got[:3]] == [
        ("ready", "web-7"), ("log", "web-7"), ("set", "web-7")]
    assert got[1]["message"] == "hello é"
    assert (got[2]["key"], got[2]["value"]) == ("mood", "calm")
    assert [m["message"] for m in got[3:-1]] == [str(n) for n in range(200)]
    assert got[-1]["event"] == "close"
