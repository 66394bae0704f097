"""WebSocket /stream and HTTP auth against a real twistd, with the `websockets` client."""

import base64
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.clients import getJSON, httpGet, lineClient
from tests.polling import waitFor



@pytest.fixture
def server(twistd):
    return twistd(store="memory:")


def streamURL(server, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.ports['http']}/stream{query}"


def receive(ws, count: int) -> list:
    return [json.loads(ws.recv(timeout=5)) for _ in range(count)]


def assertQuiet(ws) -> None:
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.3)


def waitForHead(server, head: int) -> None:
    waitFor(lambda: getJSON(server.ports["http"], "/status")["head"] >= head,
            f"the journal's head to reach {head}")


def subscribers(server) -> float:
    """The WebSocket subscriber gauge, from /metrics."""
    _, body = httpGet(server.ports["http"], "/metrics")
    [value] = [sample.value for family in text_string_to_metric_families(body.decode())
               for sample in family.samples if sample.name == "logsvc_stream_subscribers"]
    return value


def test_liveEventsFiltered(server):
    with connect(streamURL(server, "?client=web-*&events=ready,log")) as ws:
        other = lineClient(server.ports["port"], "db-1")
        other.sendall(b"LOG not for this subscriber\n")
        web = lineClient(server.ports["port"], "web-1")
        web.sendall(b"SET mood calm\nLOG hello \xc3\xa9\n")
        ready, logged = receive(ws, 2)
        assert (ready["type"], ready["event"], ready["client"]) == ("event", "ready", "web-1")
        assert ((logged["event"], logged["client"], logged["message"])
                == ("log", "web-1", "hello é"))
        assertQuiet(ws)
        web.close()
        other.close()


def test_replayThenLive(server):
    client = lineClient(server.ports["port"], "app")
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
    assert subscribers(server) == 0
    with connect(streamURL(server)):
        waitFor(lambda: subscribers(server) == 1, "the subscriber to be counted")
    waitFor(lambda: subscribers(server) == 0, "the closed subscriber to be forgotten")


@pytest.fixture
def authServer(twistd):
    return twistd("--auth", "memory:alice:secret", store="memory:")


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_authHTTP(authServer):
    for headers in (None, basic("alice", "wrong")):
        assert httpGet(authServer.ports["http"], "/status", headers)[0] == 401
    assert getJSON(authServer.ports["http"], "/status", basic("alice", "secret"))["clients"] == \
        {"online": 0, "offline": 0}


def test_authWebSocket(authServer):
    with pytest.raises(InvalidStatus) as refused:
        connect(streamURL(authServer))
    assert refused.value.response.status_code == 401
    with connect(streamURL(authServer, "?events=ready"),
                 additional_headers=basic("alice", "secret")) as ws:
        client = lineClient(authServer.ports["port"], "secured")
        [ready] = receive(ws, 1)
        assert ready["client"] == "secured"
        client.close()
