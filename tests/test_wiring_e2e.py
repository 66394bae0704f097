"""
What makeService wires, seen from outside a real ``twistd -n logatron``: the journal
holds line clients back by TCP while it cannot keep up, each size option changes what a
client gets, and the retry window is as large as in production.
"""

import sqlite3
import threading
import time

from logsvc.journal.lines import BACKLOG_HIGH
from logsvc.store import RECENT_WRITES
from tests.clients import (Client, concurrentWrites, getJSON, head, lineClient,
                           sendLogLines)
from tests.polling import unreadBytes, waitFor, waitUntilRead


def received(server) -> int:
    """LOG lines the server has read from its line clients so far."""
    return getJSON(server.ports["http"], "/status")["lines"]


def steady(server) -> int:
    """The received count once it stays the same for half a second."""
    def unchanged():
        before = received(server)
        time.sleep(0.5)
        after = received(server)
        return before == after and after
    return waitFor(unchanged, "the line count to settle")


def test_journalLinesPauseLineClientsUntilTheStoreCatchesUp(twistd):
    """
    While the SQLite file is locked by another connection, the store commits nothing:
    past the journal's high mark of unstored line events (50,000) the server stops
    reading its line clients, so TCP holds the rest in the client; once the lock is
    released the backlog drains, reading resumes and every line is journaled.
    """
    server = twistd(listeners=("port", "journal", "http"))
    total = 3 * BACKLOG_HIGH
    locker = sqlite3.connect(server.store.removeprefix("sqlite:"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # the store waits for it (busy_timeout, 10 s)
    sender = threading.Thread(target=lambda: sendLogLines(server.ports["port"], "flood",
                                                          total).close())
    sender.start()
    try:
        waitFor(lambda: received(server) >= BACKLOG_HIGH, "lines up to the high mark")
        held = steady(server)
        assert BACKLOG_HIGH <= held < total, held
        assert unreadBytes(server.ports["port"]) > 0, "the server kept reading"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    waitFor(lambda: received(server) == total, "every line, once the store caught up")
    sender.join(30)
    assert not sender.is_alive()
    waitFor(lambda: head(server.ports["journal"]) == total + 2, "ready, every LOG, close")


def test_bufferSize(twistd):
    server = twistd("--buffer-size", "3", store="memory:", listeners=("port", "http"))
    with lineClient(server.ports["port"], "web-1") as client:
        client.sendall(b"".join(b"LOG %d\n" % n for n in range(10)))
        waitUntilRead(server.ports["port"])
        record = waitFor(lambda: (r := getJSON(server.ports["http"], "/clients/web-1"))
                         ["counters"]["lines"] == 10 and r, "ten lines")
    assert [message for _, message in record["log"]] == ["7", "8", "9"]


def test_maxLine(twistd):
    server = twistd("--max-line", "100", store="memory:", listeners=("port", "http"))
    with lineClient(server.ports["port"], "web-1") as client:
        client.sendall(b"LOG " + b"x" * 300 + b"\nLOG short\n")
        record = waitFor(lambda: (r := getJSON(server.ports["http"], "/clients/web-1"))
                         ["counters"]["lines"] == 2 and r, "two lines")
    assert [message for _, message in record["log"]] == ["x" * 96, "short"]
    assert record["counters"]["truncated"] == 1


def test_maxOffline(twistd):
    """With room for two offline records, the one offline longest goes."""
    server = twistd("--max-offline", "2", store="memory:", listeners=("port", "http"))
    clients = {name: lineClient(server.ports["port"], name) for name in ["b", "c", "a"]}
    waitFor(lambda: len(getJSON(server.ports["http"], "/clients")) == 3, "three clients")
    for name in ["c", "a", "b"]:
        clients[name].close()
        waitFor(lambda: not getJSON(server.ports["http"], "/clients").get(name, {})
                .get("online", True), f"{name} to be offline")
    assert sorted(getJSON(server.ports["http"], "/clients")) == ["a", "b"]


def test_retryWindowHoldsItsProductionSize(twistd):
    """
    Write 100,000 entries: retrying the oldest of them still gets its index back, before
    and after a restart (which reloads the window from the file).
    """
    assert RECENT_WRITES >= 100_000
    server = twistd(listeners=("port", "journal"))
    writers = 4
    acknowledged = concurrentWrites(server.ports["journal"], range(writers),
                                    RECENT_WRITES // writers)
    oldest = acknowledged[1]
    retry = (f"{oldest['w']}.{oldest['n']}", oldest)
    for restart in (False, True):
        if restart:
            assert server.stop() == 0
            server.start()
        client = Client(server.ports["journal"])
        assert client.write(*retry) == 1
        client.close()
        assert head(server.ports["journal"]) == RECENT_WRITES
