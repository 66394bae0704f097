"""
logsvc on PostgreSQL, side by side with SQLite in one run: durable writes, the latency
from a write on node A to a live reader on node B, and line ingest with journaling on
one node and on two nodes sharing the database.  The server is a throwaway cluster
(tests/postgres.py) on this machine, with fsync and synchronous commit on: its settings
are printed with the figures.

Beside the writes, a floor: the same commits (batches of the size logsvc's commits had,
the same statements, pipelined the same way) made back to back by a bare psycopg loop,
without Twisted, sockets or JSON.  No server in front of this PostgreSQL can beat it
with commits of that size, so C{floor_ratio} says how much of it logsvc reaches; the
same floor for writes without ids shows what storing their ids costs each commit.
"""

import functools
import time
from hashlib import sha256

from bench import journal
from bench.common import BenchError, Generators, Logsvc, percentiles, report
from bench.lines import sendLines
from bench.wire import waitForIndex
from logsvc.postgresql import store as pgStore
from logsvc.postgresql.window import chunkRows
from tests.postgres import Cluster, available

SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
            "shared_buffers", "wal_buffers", "commit_delay", "max_wal_size")


def run(writers: int, inFlight: int, duration: float, rate: float, count: int,
        clients: int, lines: int, timeout: float) -> None:
    if not available():
        raise BenchError("PostgreSQL (initdb, pg_ctl) is not installed")
    cluster = Cluster().start()
    try:
        sqlite = journal.runWrites(journal.Setup(timeout=timeout), writers, inFlight, duration)
        postgresql = journal.runWrites(journal.Setup(store=cluster.database(),
                                                     timeout=timeout),
                                       writers, inFlight, duration)
        batch = round(postgresql["acked"] / postgresql["commits"])
        floor = floorWrites(cluster.database(), batch, duration)
        anonymous = floorWrites(cluster.database(), batch, duration, identified=False)
        report("writes-compared", "logsvc", {"writers": writers, "in_flight": inFlight},
               {"sqlite_writes_per_s": sqlite["writes_per_s"],
                "postgresql_writes_per_s": postgresql["writes_per_s"],
                "ratio": round(postgresql["writes_per_s"]
                               / sqlite["writes_per_s"], 3),
                "floor_batch": batch, "floor_writes_per_s": floor,
                "floor_ratio": round(postgresql["writes_per_s"] / floor, 3),
                "floor_anonymous_writes_per_s": anonymous,
                "server": dict(cluster.sql("SELECT name, setting FROM pg_settings WHERE"
                                           f" name IN {SETTINGS!r}"))})
        crossNodeLatency(cluster.database(), rate, count, timeout)
        for nodes in (1, 2):
            lineIngest(cluster.database(), nodes, clients, lines, timeout)
    finally:
        cluster.destroy()


def floorWrites(uri: str, batch: int, duration: float, identified: bool = True) -> int:
    """
    Commits of C{batch} 100-byte entries (with write ids, or none), as the PostgreSQL
    store makes them when no other node writes (one round trip each), back to back on
    one connection for C{duration} seconds: writes per second.
    """
    store = pgStore.PostgreSQLStore(None, uri)
    connection = store._connectWriter()
    connection.commit()
    try:
        written, started = 0, time.monotonic()
        (head,), = connection.execute("SELECT head FROM logsvc_counter").fetchall()
        connection.rollback()
        while time.monotonic() - started < duration:
            entries = [b'{"entry":{"n":%d,"text":"%s"},"id":"%d"}' % (written + n, b"x" * 60,
                                                                   written + n)
                       for n in range(batch)]
            digests = [sha256(entry).digest() for entry in entries]
            ids = ([(head + 1 + n, str(written + n)) for n in range(batch)]
                   if identified else [])
            with connection.pipeline():
                connection.execute(pgStore.STORE, {
                    **chunkRows(head + 1, entries, digests, ids),
                    "expected": head, "head": head + batch, "time": None,
                    "payload": f"{head + 1} {head + batch} floor"})
                connection.commit()
            head += batch
            written += batch
        return round(written / (time.monotonic() - started))
    finally:
        connection.close()


def _crossRole(ports: tuple, rate: float, count: int, roles: list, ready, go) -> list:
    """The reader follows node B; the writer writes to node A."""
    (role,) = roles
    if role == "reader":
        return [journal._liveReader(ports[1], count, True, ready, go)]
    return [journal._paceWriter(ports[0], rate, count, 100, ready, go)]


def crossNodeLatency(uri: str, rate: float, count: int, timeout: float) -> dict:
    nodes = [Logsvc("--no-journal-lines", store=uri, listeners=("port", "journal")).start()
             for _ in range(2)]
    try:
        work = functools.partial(_crossRole, tuple(n.journalPort for n in nodes), rate, count)
        with Generators(work, ["reader", "writer"], 1) as generators:
            generators.ready(timeout=30)
            generators.go()
            results, _ = generators.results(timeout)
        roles = dict(results)
        return report("latency-across-nodes", "logsvc",
                      {"rate": rate, "count": count, "store": "postgresql"},
                      {"delivered": len(roles["reader"]),
                       **percentiles(roles["reader"], 50, 99, 100),
                       **{f"ack_{k}": v for k, v in percentiles(roles["writer"], 50, 99).items()}})
    finally:
        for node in nodes:
            node.stop()


def lineIngest(uri: str, nodes: int, clients: int, lines: int, timeout: float) -> dict:
    """C{clients} line clients spread over C{nodes} nodes, every event journaled."""
    servers = [Logsvc("--journal-lines", store=uri, listeners=("port", "journal", "http")
                      ).start() for _ in range(nodes)]
    try:
        groups = []
        for at, server in enumerate(servers):
            share = list(range(at, clients, nodes))
            groups.append(Generators(functools.partial(sendLines, server.ports["port"],
                                                       lines, 100), share, 4))
        for group in groups:
            group.__enter__()
        try:
            for group in groups:
                group.ready(timeout=30)
            started = time.monotonic()
            for group in groups:
                group.go()
            for group in groups:
                group.results(timeout)
            waitForIndex(servers[0].journalPort, clients * (lines + 2), timeout)
            seconds = time.monotonic() - started
        finally:
            for group in groups:
                group.__exit__(None, None, None)
        return report("lines-journaled", "logsvc",
                      {"nodes": nodes, "clients": clients, "lines": lines, "size": 100,
                       "store": "postgresql"},
                      {"seconds": round(seconds, 3),
                       "lines_per_s": round(clients * lines / seconds)})
    finally:
        for server in servers:
            server.stop()
