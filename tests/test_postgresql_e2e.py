"""
Real ``twistd`` nodes on PostgreSQL: start-up errors, the journal id, the server stopped
mid-write and started again, a journal rewound behind a node's back, and several nodes
on one database (dense indices, every reader on every node gets every entry once in
order, retries across nodes, the npm tcp-log-client reading one node while another
writes).
"""

import json
import threading
import urllib.request

import pytest

from tests.postgres import Cluster, sharedCluster, skipUnlessAvailable
from tests.server import freePort, startupError
from tests.clients import (Client, acknowledgedSoFar, concurrentWrites, denseEntries,
                           nodeClient, readUntil, refusedSoFar, retryRefused, startWriters,
                           stopWriters, waitForHealth)
from tests.polling import waitFor


@pytest.fixture
def database():
    skipUnlessAvailable()
    return sharedCluster().database()


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as r:
        return json.load(r)


def refused(store: str) -> str:
    return startupError("--store", store, "--port", "tcp:0:interface=127.0.0.1",
                        "--journal", "none", "--pb", "none", "--http", "none")


def test_startupErrorsAreOneLine(database):
    cluster = sharedCluster()
    line = refused(f"postgresql://logsvc@127.0.0.1:{cluster.port}:x/db")
    assert line.startswith("logatron: cannot open store postgresql"), line
    line = refused(cluster.uri(database.rsplit("/", 1)[1], password="wrong"))
    assert "password authentication failed" in line, line
    assert "wrong" not in line
    line = refused(f"postgres://logsvc:pw@127.0.0.1:{freePort()}/db")
    assert line.startswith("logatron: cannot open store postgresql://logsvc@127.0.0.1:"), line
    assert "refused" in line, line


def test_journalIdInStatusStaysWithTheDatabase(twistd, database):
    server = twistd(store=database, listeners=("port", "journal", "http"))
    first = status(server.ports["http"])["journal_id"]
    server.stop()
    server.start()
    assert status(server.ports["http"])["journal_id"] == first
    server.stop()
    other = twistd(store=sharedCluster().database(), listeners=("port", "journal", "http"))
    assert status(other.ports["http"])["journal_id"] != first


def test_serverStoppedMidWriteThenStarted(twistd):
    """Writes are refused while PostgreSQL is down, /health says 503, the line service
    keeps serving; once it is back the node recovers by itself and every acknowledged
    entry is there, at dense indices."""
    skipUnlessAvailable()
    cluster = Cluster().start()
    try:
        server = twistd("--no-journal-lines", store=cluster.database(),
                        listeners=("port", "journal", "http"))
        journal, http = server.ports["journal"], server.ports["http"]
        writers = startWriters(journal)
        cluster.stop("immediate")
        waitFor(lambda: refusedSoFar(writers) >= 40, "writes refused while down")
        body = waitForHealth(http, 503)
        assert body["store"] != "ok"
        lines = Client(server.ports["port"])
        lines.send(b"IAM during-fault", b"LOG still here")
        lines.socket.shutdown(1)
        assert lines.closedByServer()
        ackedDuringFault = acknowledgedSoFar(writers)
        cluster.start()
        waitForHealth(http, 200, timeout=60)
        waitFor(lambda: acknowledgedSoFar(writers) >= ackedDuringFault + 200,
                "writes after the server came back", timeout=60)
        stopWriters(writers)
        retrier = Client(journal)
        retried = retryRefused(retrier, writers)
        total = max([*retried, *[i for w in writers for i in w.acknowledged]])
        retrier.send({"from": 1})
        found = readUntil(retrier, total)[0]
        retrier.close()
        assert server.stop() == 0
    finally:
        cluster.destroy()
    stored = denseEntries(found, total)
    for writer in writers:
        assert all(stored[index] == entry for index, entry in writer.acknowledged.items())
    assert all(stored[index] == entry for index, entry in retried.items())
    written = [(e["w"], e["n"]) for e in stored.values()]
    assert len(written) == len(set(written))


def test_rewoundJournalIsRefused(twistd, database):
    server = twistd(store=database, listeners=("port", "journal", "http"))
    client = Client(server.ports["journal"])
    for n in range(10):
        client.write(f"w{n}", {"n": n})
    client.send({"from": 1})
    readUntil(client, 10)
    name = database.rsplit("/", 1)[1]
    sharedCluster().sql("DELETE FROM logsvc_chunks WHERE first > 5;"
                        " UPDATE logsvc_counter SET head = 5", name)
    body = waitForHealth(server.ports["http"], 503)
    assert "went backwards" in body["store"], body
    writer = Client(server.ports["journal"])
    writer.send({"id": "after", "entry": {"n": 11}})
    reply = writer.receive()
    assert "went backwards" in reply["error"], reply
    assert server.running()


def test_entryChangedAtAServedIndexIsRefused(twistd, database):
    server = twistd(store=database, listeners=("port", "journal", "http"))
    Client(server.ports["journal"]).write("a", {"n": 1})
    name = database.rsplit("/", 1)[1]
    sharedCluster().sql("UPDATE logsvc_chunks SET data = '{\"n\":2}',"
                        " digests = sha256('{\"n\":2}')", name)
    body = waitForHealth(server.ports["http"], 503)
    assert "differs from the one served" in body["store"], body


@pytest.fixture
def nodes(twistd, tmp_path, database):
    started = []
    for number in range(2):
        directory = tmp_path / f"node{number}"
        directory.mkdir()
        started.append(twistd("--no-journal-lines", directory=directory, store=database,
                              listeners=("port", "journal")))
    return started


def test_twoNodesShareOneJournal(nodes):
    """8 x 10,000 writes spread over both nodes, while a reader on each node follows:
    dense unique indices, and each reader gets every entry once, in order."""
    ports = [node.ports["journal"] for node in nodes]
    readers = [Client(port) for port in ports]
    for reader in readers:
        reader.send({"from": 1})
        assert reader.receive() == {"current": True}
    results: dict = {}

    def write(number):
        results[number] = concurrentWrites(ports[number], range(number * 4, number * 4 + 4),
                                           10_000)
    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    acknowledged = dict(results[0])
    assert not acknowledged.keys() & results[1].keys(), "an index given on both nodes"
    acknowledged.update(results[1])
    assert sorted(acknowledged) == list(range(1, 80_001))
    for reader in readers:
        found = readUntil(reader, 80_000)[0]
        assert [m["index"] for m in found] == list(range(1, 80_001))
        assert all(m["entry"] == acknowledged[m["index"]] for m in found)
        reader.close()


def test_retryOnAnotherNodeGetsTheOriginalIndex(nodes):
    first, second = (Client(node.ports["journal"]) for node in nodes)
    assert first.write("once", {"x": 1}) == 1
    assert second.write("other", {"x": 1}) == 2
    assert second.write("once", {"x": 1}) == 1
    assert first.write("once", {"x": 2}) == 3


@pytest.mark.parametrize("version", [4, 6])
def test_npmTcpLogClientReadsOneNodeWhileTheOtherWrites(nodes, version):
    writer = Client(nodes[0].ports["journal"])
    for n in range(12):
        writer.write(f"a.{n}", {"a": n})
    during = threading.Thread(target=lambda: [writer.write(f"b.{n}", {"b": n})
                                              for n in range(20)])
    during.start()
    result = nodeClient(version, nodes[1].ports["journal"], 30, 62)
    during.join(60)
    assert [e["index"] for e in result["read"]][:62] == list(range(1, 63))
    entries = [e["entry"] for e in result["read"]]
    assert entries[:12] == [{"a": n} for n in range(12)]
    assert [e["b"] for e in entries if "b" in e] == list(range(20))
    assert sorted(e["n"] for e in entries if "n" in e) == list(range(30))
