"""
How many WebSocket /stream messages each LOG line makes, against a real ``twistd`` that
journals line events: one without filters, two (told apart by ``type``) when journal
entries are asked for as well.
"""

import json
import socket
import time

import pytest
from websockets.sync.client import connect

from .server import Servers

LINES = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Servers(tmp_path_factory.mktemp("stream-counts")) as twistd:
        yield twistd()


def collect(ws, until) -> list:
    """Messages until C{until(messages)} holds, then whatever else comes within 0.5 s."""
    messages = []
    while not until(messages):
        messages.append(json.loads(ws.recv(timeout=10)))
    deadline = time.monotonic() + 0.5
    while (left := deadline - time.monotonic()) > 0:
        try:
            messages.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            break
    return messages


def logLines(server, name: str) -> None:
    with socket.create_connection(("127.0.0.1", server.ports["port"])) as client:
        client.sendall(f"IAM {name}\n".encode()
                       + b"".join(b"LOG line %d\n" % n for n in range(LINES)))
        time.sleep(0.2)


def kinds(messages: list, name: str) -> list:
    """(type, event) of each message about client C{name}."""
    return [(m["type"], m["event"] if m["type"] == "event" else m["entry"]["event"])
            for m in messages
            if m.get("client") == name or m.get("entry", {}).get("client") == name]


@pytest.mark.parametrize("query, perLine", [
    ("", [("event", "log")]),
    ("?events=log", [("event", "log")]),
    ("?events=entry", [("entry", "log")]),
    ("?events=ready,log,set,close,entry", [("event", "log"), ("entry", "log")]),
])
def test_messagesPerLogLine(server, query, perLine):
    name = f"counts-{len(query)}-{len(perLine)}"
    url = f"ws://127.0.0.1:{server.ports['http']}/stream{query}"
    with connect(url) as ws:
        logLines(server, name)
        wanted = LINES * len(perLine)
        messages = collect(ws, lambda got: sum(
            kind[1] == "log" for kind in kinds(got, name)) >= wanted)
    logs = [kind for kind in kinds(messages, name) if kind[1] == "log"]
    assert sorted(logs) == sorted(perLine * LINES)
    texts = [m.get("message") or m.get("entry", {}).get("message") for m in messages
             if "log" in (m.get("event"), m.get("entry", {}).get("event"))]
    assert sorted(texts) == sorted([f"line {n}" for n in range(LINES)] * len(perLine))


def test_fromAddsJournalEntries(server):
    logLines(server, "counts-from")
    url = f"ws://127.0.0.1:{server.ports['http']}/stream?from=1&client=counts-from"
    with connect(url) as ws:
        messages = collect(ws, lambda got: sum(m["type"] == "entry" for m in got) >= LINES + 2)
    assert [kind for kind in kinds(messages, "counts-from")] == (
        [("entry", "ready")] + [("entry", "log")] * LINES + [("entry", "close")])
