"""
The journal protocol over real TCP against a real ``twistd -n logatron`` on the default
SQLite store and on PostgreSQL (the ``journalStore`` fixture): both dialects,
concurrency, crash safety, the npm tcp-log-client, slow readers and journal lines
across a clean shutdown.
"""

import random
import signal
import threading
import time

import pytest

from tests.clients import (Client, concurrentWrites, head, nodeClient, readAll, readUntil,
                           sendLogLines, streamWrites)
from tests.polling import waitFor, waitUntilRead



@pytest.fixture
def server(twistd, journalStore):
    return twistd(store=journalStore, listeners=("port", "journal"))


def test_writeIsConfirmedWithIndexOne(server):
    client = Client(server.ports["journal"])
    client.send({"id": "first", "entry": {"hello": "world"}})
    assert client.receive() == {"id": "first", "index": 1}


def test_secondReadIsAlreadyReading(server):
    client = Client(server.ports["journal"])
    client.send({"from": 1})
    assert client.receive() == {"current": True}
    client.send({"from": 1})
    assert client.receive() == {"error": "already reading"}
    client.send({"id": "w", "entry": {"still": "open"}})
    replies = client.receiveMany(2)  # the ack and the live entry, in either order
    assert sorted(replies, key=len) == [{"id": "w", "index": 1},
                                        {"index": 1, "entry": {"still": "open"}}]


def test_writeThenRead(server):
    client = Client(server.ports["journal"])
    assert client.write("a", {"n": 1}) == 1
    client.send({"from": 1})
    assert client.receiveMany(2) == [{"index": 1, "entry": {"n": 1}}, {"current": True}]


def test_writeReadWrite(server):
    client = Client(server.ports["journal"])
    assert client.write("a", {"n": 1}) == 1
    client.send({"from": 1}, {"id": "b", "entry": {"n": 2}})
    messages = client.receiveMany(4)
    assert {"id": "b", "index": 2} in messages
    assert [m for m in messages if "id" not in m] == [
        {"index": 1, "entry": {"n": 1}}, {"current": True}, {"index": 2, "entry": {"n": 2}}]


def test_readRacingWritesDeliversEachEntryOnceInOrder(server):
    writer = Client(server.ports["journal"])
    for n in range(1, 101):
        writer.send({"id": str(n), "entry": {"n": n}})
    assert [writer.receive()["index"] for _ in range(100)] == list(range(1, 101))
    reader = Client(server.ports["journal"])
    reader.send({"from": 1})
    writer.send(*[{"id": str(n), "entry": {"n": n}} for n in range(101, 201)])
    found, messages = readUntil(reader, 200)
    if {"current": True} not in messages:  # every write was committed before the read
        messages.append(reader.receive())
    assert [m["index"] for m in found] == list(range(1, 201))
    assert [m["entry"]["n"] for m in found] == list(range(1, 201))
    assert messages.count({"current": True}) == 1
    assert messages.index({"current": True}) >= 100
    assert sorted(writer.receive()["index"] for _ in range(100)) == list(range(101, 201))


def test_twoClientsSeeEachOthersEntries(server):
    first, second = Client(server.ports["journal"]), Client(server.ports["journal"])
    for client in (first, second):
        client.send({"from": 1})
        assert client.receive() == {"current": True}
    first.send({"id": "1", "entry": {"by": "first"}})
    second.send({"id": "2", "entry": {"by": "second"}})
    seen = []
    for client in (first, second):
        messages = client.receiveMany(3)  # its own ack and both entries
        assert len([m for m in messages if "id" in m]) == 1
        seen.append(sorted((m["index"], m["entry"]["by"]) for m in messages if "entry" in m))
    assert seen[0] == seen[1]
    assert sorted(by for _, by in seen[0]) == ["first", "second"]
    assert [index for index, _ in seen[0]] == [1, 2]


def test_readFromTwoBeforeAnythingExists(server):
    reader = Client(server.ports["journal"])
    reader.send({"from": 2})
    assert reader.receive() == {"current": True}
    writer = Client(server.ports["journal"])
    for n in (1, 2, 3):
        writer.write(str(n), {"n": n})
    assert reader.receiveMany(2) == [{"index": 2, "entry": {"n": 2}},
                                     {"index": 3, "entry": {"n": 3}}]


def test_currentAfterOldEntriesBeforeLiveOnes(server):
    writer = Client(server.ports["journal"])
    for n in (1, 2, 3):
        writer.write(str(n), {"n": n})
    reader = Client(server.ports["journal"])
    reader.send({"from": 2})
    assert reader.receiveMany(3) == [{"index": 2, "entry": {"n": 2}},
                                     {"index": 3, "entry": {"n": 3}}, {"current": True}]
    writer.write("4", {"n": 4})
    assert reader.receive() == {"index": 4, "entry": {"n": 4}}


def test_invalidMessageKeepsConnectionInvalidJSONClosesIt(server):
    client = Client(server.ports["journal"])
    client.send({"hello": "world"})
    assert client.receive() == {"error": "invalid message"}
    assert client.write("a", {}) == 1
    client.send(b"{not json")
    assert client.receive() == {"error": "invalid JSON"}
    assert client.closedByServer()


def test_invalidJSONMidReadClosesIt(server):
    client = Client(server.ports["journal"])
    client.write("a", {})
    client.send({"from": 1})
    assert client.receiveMany(2) == [{"index": 1, "entry": {}}, {"current": True}]
    client.send(b"[1, 2")
    assert client.receive() == {"error": "invalid JSON"}
    assert client.closedByServer()


def test_messageTooLongCloses(twistd, journalStore):
    server = twistd("--max-entry", "100", store=journalStore, listeners=("port", "journal"))
    client = Client(server.ports["journal"])
    client.send({"id": "a", "entry": {"x": "y" * 200}})
    assert client.receive() == {"error": "message too long"}
    assert client.closedByServer()


def test_pullReadsPageThroughWithHead(server):
    writer = Client(server.ports["journal"])
    for n in range(1, 8):
        writer.write(str(n), {"n": n})
    reader = Client(server.ports["journal"])
    reader.send({"from": 1, "read": 3})
    assert [m.get("index") for m in reader.receiveMany(3)] == [1, 2, 3]
    assert reader.receive() == {"head": 7}
    reader.send({"from": 4, "read": 3})
    assert [m.get("index") for m in reader.receiveMany(3)] == [4, 5, 6]
    assert reader.receive() == {"head": 7}
    reader.send({"from": 7, "read": 3})
    assert reader.receiveMany(2) == [{"index": 7, "entry": {"n": 7}}, {"current": True}]
    reader.send({"from": 1, "read": 1})
    assert reader.receive() == {"error": "already reading"}
    writer.write("8", {"n": 8})
    writer.write("9", {"n": 9})
    assert reader.receiveMany(3) == [{"index": 8, "entry": {"n": 8}},
                                     {"index": 9, "entry": {"n": 9}}, {"head": 9}]


def test_retryGetsTheSameIndexAcrossRestarts(twistd, journalStore):
    server = twistd(store=journalStore, listeners=("port", "journal"))
    client = Client(server.ports["journal"])
    assert client.write("retry-me", {"x": 1}) == 1
    assert client.write("other", {"x": 1}) == 2
    assert client.write("retry-me", {"x": 1}) == 1
    assert server.stop() == 0
    server.start()
    client = Client(server.ports["journal"])
    assert client.write("retry-me", {"x": 1}) == 1
    assert client.write("retry-me", {"x": 2}) == 3


def test_eightConcurrentWriters(server):
    port = server.ports["journal"]
    acknowledged = concurrentWrites(port, range(8), 10_000)
    assert sorted(acknowledged) == list(range(1, 80_001))
    found = readAll(port, 80_000)
    assert [m["index"] for m in found] == list(range(1, 80_001))
    assert all(m["entry"] == acknowledged[m["index"]] for m in found)


def test_killNineLosesNoAcknowledgedEntry(twistd, journalStore):
    """
    Ten kill -9s, each after at least 100 more writes were acknowledged (a writer fails
    the test on any other reply), lose none of them.
    """
    server = twistd(store=journalStore, listeners=("port", "journal"), start=False)
    acknowledged: dict = {}
    for _ in range(10):
        server.start()
        stop = threading.Event()
        writers = [threading.Thread(target=streamWrites,
                                    args=(server.ports["journal"], w, acknowledged, stop))
                   for w in range(4)]
        before = len(acknowledged)
        for thread in writers:
            thread.start()
        waitFor(lambda: len(acknowledged) >= before + 100, "100 acknowledgements")
        time.sleep(random.uniform(0, 0.3))
        server.kill()
        stop.set()
        for thread in writers:
            thread.join(30)
            assert not thread.is_alive()
    server.start()
    total = head(server.ports["journal"])
    assert total >= max(acknowledged)
    found = readAll(server.ports["journal"], total)
    assert [m["index"] for m in found] == list(range(1, total + 1))
    stored = {m["index"]: m["entry"] for m in found}
    assert all(stored[index] == entry for index, entry in acknowledged.items())


@pytest.mark.parametrize("version", [4, 6])
def test_npmTcpLogClient(server, version):
    port = server.ports["journal"]
    writer = Client(port)
    for n in range(12):
        writer.write(f"py.{n}", {"python": n})
    result = nodeClient(version, port, 30, 42)
    assert sorted(result["written"]) == list(range(13, 43))
    assert [e["index"] for e in result["read"]] == list(range(1, 43))
    assert result["read"][:12] == [{"index": n + 1, "entry": {"python": n}} for n in range(12)]
    byIndex = {e["index"]: e["entry"] for e in result["read"]}
    assert sorted(byIndex[i]["n"] for i in result["written"]) == list(range(30))
    assert result["current"] >= 1


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slowReaderKeepsServerMemoryBounded(server):
    """
    A reader that stops reading while 200,000 entries (about 90 MB) are appended costs the
    server at most a page and the transport's buffer (and the store's read cache, 16 MiB
    for SQLite), not the backlog; then it catches up in order.  The first 100,000 writes,
    with no reader, bring the store's caches and retry window to their working size, so
    that only the reader's cost is measured.
    """
    journal = server.ports["journal"]
    pad = "x" * 400
    concurrentWrites(journal, range(4), 25_000, window=200, pad=pad)
    before = rss(server.process.pid)
    slow = Client(journal, receiveBuffer=16 * 1024)
    slow.send({"from": 1})
    acknowledged = concurrentWrites(journal, range(4, 8), 50_000, window=200, pad=pad)
    growth = rss(server.process.pid) - before
    print(f"server RSS {before / 2**20:.1f} MiB before the slow reader, "
          f"grew {growth / 2**20:.1f} MiB while 200,000 entries were appended")
    assert growth < 32 * 2**20, f"server grew by {growth / 2**20:.1f} MiB for a slow reader"
    found, messages = readUntil(slow, 300_000)
    assert [m["index"] for m in found] == list(range(1, 300_001))
    assert messages.count({"current": True}) == 1
    assert all(acknowledged[m["index"]] == m["entry"] for m in found[100_000:])


def test_lineEventsAreJournaled(server):
    lines = sendLogLines(server.ports["port"], "web-1", 3)
    lines.sendall(b"SET mode on\n")
    waitUntilRead(server.ports["port"])
    found = readAll(server.ports["journal"], 5)
    entries = [m["entry"] for m in found]
    assert [e["event"] for e in entries] == ["ready", "log", "log", "log", "set"]
    assert all(e["client"] == "web-1" and isinstance(e["time"], float) for e in entries)
    assert [e["message"] for e in entries[1:4]] == ["0", "1", "2"]
    assert (entries[4]["key"], entries[4]["value"]) == ("mode", "on")
    lines.close()
    found = readAll(server.ports["journal"], 6)
    assert found[5]["entry"]["event"] == "close"


def test_noJournalLines(twistd, journalStore):
    server = twistd("--no-journal-lines", store=journalStore, listeners=("port", "journal"))
    lines = sendLogLines(server.ports["port"], "web-1", 100)
    waitUntilRead(server.ports["port"])
    lines.close()
    time.sleep(0.2)
    assert Client(server.ports["journal"]).write("only", {"entry": 1}) == 1


def test_logLinesSentJustBeforeSigtermAreKept(server):
    lines = sendLogLines(server.ports["port"], "burst", 20_000)
    waitUntilRead(server.ports["port"])
    assert server.stop(signal.SIGTERM) == 0
    lines.close()
    server.start()
    found = readAll(server.ports["journal"], 20_001)
    messages = [m["entry"].get("message") for m in found if m["entry"]["event"] == "log"]
    assert messages == [str(n) for n in range(20_000)]
