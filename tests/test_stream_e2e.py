"""WebSocket /stream and HTTP auth against a real twistd, with the `websockets` client."""

import base64
import json
import socket
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect



@pytest.fixture
def server(twistd):
    return twistd(store="memory:")


def lineClient(server, name: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.ports["port"]))
    sock.sendall(f"IAM {name}\n".encode())
    return sock


def streamURL(server, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.ports['http']}/stream{query}"


def receive(ws, count: int) -> list:
    return [json.loads(ws.recv(timeout=5)) for _ in range(count)]


def assertQuiet(ws) -> None:
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.3)


def getJSON(server, path: str, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{server.ports['http']}{path}",
                                     headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def waitForHead(server, head: int) -> None:
    deadline = time.monotonic() + 5
    while getJSON(server, "/status")["head"] < head:
        assert time.monotonic() < deadline, "journal did not reach the expected head"
        time.sleep(0.02)


def test_liveEventsFiltered(server):
    with connect(streamURL(server, "?client=web-*&events=ready,log")) as ws:
        other = lineClient(server, "db-1")
        other.sendall(b"LOG not for this subscriber\n")
        web = lineClient(server, "web-1")
        web.sendall(b"SET mood calm\nLOG hello \xc3\xa9\n")
        ready, logged = receive(ws, 2)
        assert (ready["type"], ready["event"], ready["client"]) == ("event", "ready", "web-1")
        assert (logged["event"], logged["client"], logged["message"]) == ("log", "web-1", "hello é")
        assertQuiet(ws)
        web.close()
        other.close()


def test_replayThenLive(server):
    client = lineClient(server, "app")
    client.sendall(b"LOG one\nLOG two\n")
    waitForHead(server, 3)   # ready, log, log
    with connect(streamURL(server, "?events=entry&from=2")) as ws:
        replayed = receive(ws, 2)
        assert [(m["index"], m["entry"]["event"], m["entry"].get("message")) for m in replayed] \
            == [(2, "log", "one"), (3, "log", "two")]
        client.sendall(b"LOG three\n")
        [live] = receive(ws, 1)
        assert (live["type"], live["index"], live["entry"]["client"], live["entry"]["message"]) \
            == ("entry", 4, "app", "three")
    client.close()


def test_badFilterRefusedBeforeUpgrade(server):
    with pytest.raises(InvalidStatus) as refused:
        connect(streamURL(server, "?events=nope"))
    assert refused.value.response.status_code == 400
    assert b"unknown event kind" in refused.value.response.body


def test_closedSubscriberIsForgotten(server):
    with connect(streamURL(server)):
        pass
    deadline = time.monotonic() + 5
    url = f"http://127.0.0.1:{server.ports['http']}/metrics"
    while b"logsvc_stream_subscribers 0.0" not in urllib.request.urlopen(url).read():
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def authServer(twistd):
    return twistd("--auth", "memory:alice:secret", store="memory:")


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_authHTTP(authServer):
    for headers in (None, basic("alice", "wrong")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            getJSON(authServer, "/status", headers)
        assert refused.value.code == 401
    assert getJSON(authServer, "/status", basic("alice", "secret"))["clients"] == \
        {"online": 0, "offline": 0}


def test_authWebSocket(authServer):
    with pytest.raises(InvalidStatus) as refused:
        connect(streamURL(authServer))
    assert refused.value.response.status_code == 401
    with connect(streamURL(authServer, "?events=ready"),
                 additional_headers=basic("alice", "secret")) as ws:
        client = lineClient(authServer, "secured")
        [ready] = receive(ws, 1)
        assert ready["client"] == "secured"
        client.close()
