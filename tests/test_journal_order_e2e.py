"""
The order one journal connection sees over real TCP against a real ``twistd``: the
"writes before and after read" scenario of tcp-log-server's own test suite, byte for
byte, with both writes in one SQLite group commit; and the acks of accepted writes
before the error that closes a connection.
"""

import os
import platform
import socket
import sqlite3
import threading
import time
import urllib.request

import pytest

from tests.server import Server
from tests.clients import Client

# What tcp-log-server's test client (duplex-json-stream) puts on the wire.
FIRST = b'{"entry":{"a":1},"id":"first"}\n'
SECOND = b'{"entry":{"b":2},"id":"second"}\n'
READS = {"pull": b'{"from":1,"read":2}\n', "push": b'{"from":1}\n'}

NANOSLEEP = {"x86_64": {"35", "230"}, "aarch64": {"101", "115"}}.get(platform.machine())
"""The numbers of nanosleep and clock_nanosleep, where this test knows them."""


@pytest.fixture
def server(twistd):
    return twistd(listeners=("port", "journal", "http"))


class HeldCommit:
    """
    Holds the store's writer thread inside a commit: another connection to the file
    holds its write lock while /health's probe commits, so that every write sent
    meanwhile waits in the queue and goes to disk in the next commit, all together.
    """

    def __init__(self, server: Server):
        self.server = server
        self.lock = sqlite3.connect(os.path.join(server.directory, "journal.db"),
                                    isolation_level=None)
        self.health: list = []

    def __enter__(self):
        self.lock.execute("BEGIN IMMEDIATE")
        url = f"http://127.0.0.1:{self.server.ports['http']}/health"
        self.probe = threading.Thread(
            target=lambda: self.health.append(urllib.request.urlopen(url, timeout=30).status))
        self.probe.start()
        deadline = time.monotonic() + 30
        while not self.writerWaits():
            assert time.monotonic() < deadline, "the probe never reached the writer thread"
            time.sleep(0.02)
        return self

    def writerWaits(self) -> bool:
        """
        Whether a thread of the server sleeps in SQLite's busy handler (nanosleep: its
        other threads wait in futex or epoll); where /proc cannot say, after a second.
        """
        tasks = f"/proc/{self.server.process.pid}/task"
        try:
            calls = {open(f"{tasks}/{task}/syscall").read().split()[0]
                     for task in os.listdir(tasks)}
        except OSError:
            calls = None
        if NANOSLEEP is None or calls is None:
            time.sleep(1.0)
            return True
        return bool(NANOSLEEP & calls)

    def __exit__(self, *exc_info):
        time.sleep(0.5)     # for the server to queue what was just sent
        self.lock.execute("ROLLBACK")
        self.lock.close()
        self.probe.join(30)

    def commits(self) -> list:
        """(first index, count) of every chunk: one per commit for these small ones."""
        with sqlite3.connect(os.path.join(self.server.directory, "journal.db")) as db:
            return db.execute("SELECT first, count FROM chunks ORDER BY first").fetchall()


@pytest.mark.parametrize("dialect", ["pull", "push"])
def test_writesBeforeAndAfterReadInOneCommit(server, dialect):
    """tcp-log-server's order whatever the group commit did: ack 1, entry 1, ack 2, entry 2."""
    client = Client(server.ports["journal"])
    with HeldCommit(server) as held:
        client.socket.sendall(FIRST + READS[dialect] + SECOND)
    expected = [{"current": True},
                {"id": "first", "index": 1}, {"index": 1, "entry": {"a": 1}},
                {"id": "second", "index": 2}, {"index": 2, "entry": {"b": 2}}]
    if dialect == "pull":
        expected.append({"head": 2})
    assert client.receiveMany(len(expected)) == expected
    assert held.commits() == [(1, 2)], "both writes were to be in one commit"
    assert held.health == [200]
    client.socket.settimeout(0.5)
    with pytest.raises(socket.timeout):
        client.receive()


def test_anotherConnectionSeesIndexOrderOnly(server):
    other = Client(server.ports["journal"])
    other.send({"from": 1})
    assert other.receive() == {"current": True}
    client = Client(server.ports["journal"])
    with HeldCommit(server):
        client.socket.sendall(FIRST + READS["push"] + SECOND)
    assert other.receiveMany(2) == [{"index": 1, "entry": {"a": 1}},
                                    {"index": 2, "entry": {"b": 2}}]


@pytest.mark.parametrize("bad, error", [
    (b"{not json}\n", {"error": "invalid JSON"}),
    (b'{"id":"long","entry":{"x":"' + b"x" * 2000 + b'"}}\n', {"error": "message too long"}),
])
def test_writeThenBadMessageInOneSend(twistd, bad, error):
    """The write before it is acked, then the error, then the server closes."""
    server = twistd("--max-entry", "1000", listeners=("port", "journal"))
    client = Client(server.ports["journal"])
    client.socket.sendall(FIRST + bad + SECOND)
    assert client.receiveMany(2) == [{"id": "first", "index": 1}, error]
    assert client.closedByServer()
    reader = Client(server.ports["journal"])
    reader.send({"from": 1})
    assert reader.receiveMany(2) == [{"index": 1, "entry": {"a": 1}}, {"current": True}]
