"""
Blocking clients for end-to-end tests: a line client, a journal client and what is
built on it, and ``logsvc-query`` run as a user runs it.
"""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.polling import waitFor

QUERY = os.path.join(os.path.dirname(sys.executable), "logsvc-query")


def lineClient(port: int, name: str, timeout: float = 30) -> socket.socket:
    """A line-service connection that has sent C{IAM name}."""
    client = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    client.sendall(f"IAM {name}\n".encode())
    return client


def sendLogLines(port: int, name: str, count: int) -> socket.socket:
    """A line-service client that sent C{LOG 0} to C{LOG count-1}."""
    client = lineClient(port, name)
    for start in range(0, count, 10_000):
        client.sendall("".join(f"LOG {n}\n"
                               for n in range(start, min(count, start + 10_000))).encode())
    return client


class Closed(ConnectionError):
    """The server closed the connection, or it broke, before a whole reply arrived."""


class Client:
    """One blocking journal connection."""

    def __init__(self, port: int, receiveBuffer: int | None = None):
        self.socket = socket.socket()
        if receiveBuffer is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
        self.socket.settimeout(30)
        self.socket.connect(("127.0.0.1", port))
        self.file = self.socket.makefile("rb")

    def send(self, *messages) -> None:
        self.socket.sendall(b"".join(
            (m if isinstance(m, bytes) else json.dumps(m).encode()) + b"\n" for m in messages))

    def receive(self) -> dict:
        line = self.file.readline()
        if not line.endswith(b"\n"):
            raise Closed(f"connection closed: {line!r}")
        return json.loads(line)

    def receiveMany(self, count: int) -> list:
        return [self.receive() for _ in range(count)]

    def write(self, writeId: str, entry: dict) -> int:
        self.send({"id": writeId, "entry": entry})
        reply = self.receive()
        assert reply.get("id") == writeId and "index" in reply, reply
        return reply["index"]

    def closedByServer(self) -> bool:
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.socket.close()


def readUntil(client: Client, entries: int) -> tuple[list, list]:
    """Every message until C{entries} entries arrived: (entries, all messages)."""
    found, messages = [], []
    while len(found) < entries:
        message = client.receive()
        messages.append(message)
        if "entry" in message:
            found.append(message)
    return found, messages


def head(port: int) -> int:
    """The journal's head index (0 when empty)."""
    client = Client(port)
    try:
        client.send({"from": 1, "read": 1})
        while True:
            message = client.receive()
            if "head" in message:
                return message["head"]
            if message.get("current"):
                return 0
    finally:
        client.close()


def readAll(port: int, expected: int) -> list:
    """The first C{expected} entries, read from index 1."""
    client = Client(port)
    try:
        client.send({"from": 1})
        return readUntil(client, expected)[0]
    finally:
        client.close()


def journalEntries(port: int) -> list:
    """Every entry the journal holds now."""
    return [m["entry"] for m in readAll(port, head(port))]


def writeMany(port: int, writer: int, count: int, window: int = 100, pad: str = "") -> dict:
    """
    C{count} writes of C{{"w": writer, "n": n}} (plus C{pad} if given) with C{window} in
    flight; returns {index: entry} as acknowledged.
    """
    client = Client(port)
    extra = {"pad": pad} if pad else {}
    acknowledged = {}
    try:
        for start in range(0, count, window):
            numbers = range(start, min(count, start + window))
            client.send(*[{"id": f"{writer}.{n}", "entry": {"w": writer, "n": n, **extra}}
                          for n in numbers])
            for n in numbers:
                reply = client.receive()
                writer_, n_ = map(int, reply["id"].split("."))
                acknowledged[reply["index"]] = {"w": writer_, "n": n_, **extra}
    finally:
        client.close()
    return acknowledged


def concurrentWrites(port: int, writers: range, count: int, **options) -> dict:
    """C{count} writes by each writer, all at once; returns {index: entry} as acknowledged."""
    results: dict = {}

    def run(writer):
        results[writer] = writeMany(port, writer, count, **options)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    acknowledged: dict = {}
    for writer in writers:
        assert len(results.get(writer, ())) == count
        assert not acknowledged.keys() & results[writer].keys(), "an index was given twice"
        acknowledged.update(results[writer])
    return acknowledged


def streamWrites(port: int, writer: int, acknowledged: dict, stop: threading.Event) -> None:
    """
    Write batches of 20 until C{stop} is set or the server goes away, recording each
    acknowledged index and entry.  Any reply but an acknowledgement of the write it
    answers is an error, raised (record it: this runs in a thread).
    """
    try:
        client = Client(port)
        n = 0
        while not stop.is_set():
            batch = [{"w": writer, "n": n + k, "pad": "x" * random.randrange(100)}
                     for k in range(20)]
            client.send(*[{"id": f"{writer}.{e['n']}", "entry": e} for e in batch])
            for entry in batch:
                reply = client.receive()
                assert set(reply) == {"id", "index"}, reply
                assert reply["id"] == f"{writer}.{entry['n']}", reply
                acknowledged[reply["index"]] = entry
            n += 20
        client.close()
    except OSError:
        return  # the server was stopped: unacknowledged writes are allowed to be lost


def httpGet(port: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """C{(status, body)} of a GET, error statuses included."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def clientInfo(server, name: str) -> dict | None:
    """The record of client C{name} on C{server}'s HTTP port, or C{None} if it has none."""
    try:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{server.ports['http']}/clients/{name}", timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def getJSON(port: int, path: str, headers: dict | None = None):
    """The JSON body of a GET that must answer 200."""
    status, body = httpGet(port, path, headers)
    assert status == 200, (status, body)
    return json.loads(body)


def health(port: int) -> tuple[int, dict]:
    """C{(status, body)} of C{/health}."""
    status, body = httpGet(port, "/health")
    return status, json.loads(body)


def query(server, *args, env=None, connect=None) -> subprocess.CompletedProcess:
    """Run C{logsvc-query} against C{server}'s PB port (or C{connect}), no password in env."""
    environ = {k: v for k, v in os.environ.items() if k != "LOGSVC_PASSWORD"}
    environ.update(env or {})
    return subprocess.run(
        [QUERY, "--connect", connect or f"tcp:127.0.0.1:{server.ports['pb']}", *args],
        capture_output=True, text=True, timeout=60, env=environ, stdin=subprocess.DEVNULL)


def oneLineError(result: subprocess.CompletedProcess, text: str, status: int = 1) -> None:
    """C{logsvc-query} failed with C{status}, nothing on stdout and one line with C{text}."""
    assert result.returncode == status, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert text in result.stderr


NODE_DIR = os.path.join(os.path.dirname(__file__), "node")


def nodeClient(version: int, port: int, writes: int, expected: int) -> dict:
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", f"tcp-log-client-{version}")):
        pytest.fail("npm clients missing: run `npm install` in tests/node (tools/test.sh does)")
    result = subprocess.run([shutil.which("node") or "node", "journal-client.js", str(version),
                             str(port), str(writes), str(expected)],
                            cwd=NODE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


PAD = "x" * 500
"""Padding of a L{Writer}'s entries."""


def waitForHealth(port: int, status: int, timeout: float = 30) -> dict:
    """The body of the first C{/health} answer with C{status}."""
    return waitFor(lambda: (answer := health(port))[0] == status and answer[1],
                   f"/health to answer {status}", timeout)


class Writer(threading.Thread):
    """
    Streams writes of C{{"w": number, "n": n, "pad": ...}}, ten in flight, until told to
    stop; records every acknowledgement and every refusal, and checks each reply's shape.
    Batches are paced so that the writers do not fill the freed space again themselves
    before the test has seen the recovery.
    """

    def __init__(self, port: int, number: int):
        super().__init__()
        self.port = port
        self.number = number
        self.acknowledged: dict = {}   # index -> entry
        self.refused: list = []        # (id, entry, error)
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        client = Client(self.port)
        n = 0
        try:
            while not self.stopping.is_set():
                batch = {f"{self.number}.{k}": {"w": self.number, "n": k, "pad": PAD}
                         for k in range(n, n + 10)}
                client.send(*[{"id": i, "entry": e} for i, e in batch.items()])
                for _ in batch:
                    reply = client.receive()
                    entry = batch[reply["id"]]
                    if set(reply) == {"id", "index"}:
                        self.acknowledged[reply["index"]] = entry
                    else:
                        assert set(reply) == {"id", "error"}, reply
                        assert isinstance(reply["error"], str) and reply["error"], reply
                        self.refused.append((reply["id"], entry, reply["error"]))
                n += 10
                time.sleep(0.02)
        except BaseException as e:
            self.failure = e
        finally:
            client.close()


def acknowledgedSoFar(writers: list) -> int:
    return sum(len(w.acknowledged) for w in writers)


def refusedSoFar(writers: list) -> int:
    return sum(len(w.refused) for w in writers)


def startWriters(port: int, count: int = 4, least: int = 200) -> list:
    """
    C{count} L{Writer}s on C{port}, returned once C{least} writes were acknowledged: the
    load a fault test breaks the store under, so the fault meets writes in flight.
    """
    writers = [Writer(port, number) for number in range(count)]
    for writer in writers:
        writer.start()
    waitFor(lambda: acknowledgedSoFar(writers) >= least, "writes before the fault")
    return writers


def stopWriters(writers: list) -> None:
    """Stop the L{Writer}s and wait for them; one that failed in its thread fails the test."""
    for writer in writers:
        writer.stopping.set()
    for writer in writers:
        writer.join(30)
        assert writer.failure is None, writer.failure


def retryRefused(client: Client, writers: list) -> dict:
    """
    Send again, with the same ids, every write the L{Writer}s saw refused, each of which
    must now be acknowledged: refused writes are safe to retry. Returns {index: entry}.
    """
    return {client.write(i, entry): entry for writer in writers for i, entry, _ in writer.refused}


def acknowledgedOnce(acknowledgements: list) -> dict:
    """
    {index: entry} acknowledged to several clients, merged; an index acknowledged to two
    of them fails the test, as the journal gives each index to one write only.
    """
    merged: dict = {}
    for acknowledged in acknowledgements:
        assert not merged.keys() & acknowledged.keys(), "an index given twice"
        merged.update(acknowledged)
    return merged


def denseEntries(found: list, total: int) -> dict:
    """
    {index: entry} of messages read from index 1, which must be exactly 1 to C{total} in
    order: a gap is a lost entry, a repeat one served twice.
    """
    assert [m["index"] for m in found] == list(range(1, total + 1))
    return {m["index"]: m["entry"] for m in found}
