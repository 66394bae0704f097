"""
The client registry kept in the journal's database (SQLite file or PostgreSQL), so a
restart loses nothing a query showed: every client's ring, last state, counters and
offline record come back; only C{online} has changed.

Changes are written in batches, not per line: once per tick (a second), each client
changed since the last one is written whole, in one transaction, on a thread of its own.
What changed in the last tick before a crash (kill -9) is lost; a clean stop writes
everything.
"""

import json
import sqlite3

from twisted.internet.defer import succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from .errors import StoreError

TICK = 1.0
"""Seconds between writes of changed client records."""


class SQLiteClients:
    """The C{clients} table of the journal's SQLite file, on a connection of its own."""

    def __init__(self, path: str):
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def open(self) -> list:
        try:
            self._connection = sqlite3.connect(self.path, isolation_level=None,
                                               check_same_thread=False)
            self._connection.execute("PRAGMA busy_timeout=10000")
            self._connection.execute("CREATE TABLE IF NOT EXISTS clients"
                                     " (name TEXT PRIMARY KEY, record TEXT NOT NULL)")
            return self._connection.execute("SELECT name, record FROM clients").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open clients in sqlite:{self.path}: {e}") from None

    def save(self, rows: list, gone: list) -> None:
        connection = self._connection
        assert connection is not None, "save before open"
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany("INSERT OR REPLACE INTO clients VALUES (?, ?)",
                                   [(name, record) for name, record, _ in rows])
            connection.executemany("DELETE FROM clients WHERE name = ?",
                                   [(name,) for name in gone])
            connection.execute("COMMIT")
        except sqlite3.Error:
            connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


CLIENTS_LOCK = 0x6C6F6763
"""Advisory lock (per transaction) that orders every change of C{logsvc_clients}, so
versions are in commit order and a node reading after version V misses nothing."""

CHANGES_CHANNEL = "logsvc_clients"
"""Notified after each save, with the saving node's id."""

CLIENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS logsvc_clients (name text PRIMARY KEY, record text NOT NULL);
ALTER TABLE logsvc_clients ADD COLUMN IF NOT EXISTS node text,
    ADD COLUMN IF NOT EXISTS writer text,
    ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
CREATE SEQUENCE IF NOT EXISTS logsvc_clients_version;
CREATE INDEX IF NOT EXISTS logsvc_clients_by_version ON logsvc_clients (version);
CREATE TABLE IF NOT EXISTS logsvc_nodes (
    node text PRIMARY KEY, name text NOT NULL, key integer NOT NULL,
    heartbeat timestamptz NOT NULL, swept boolean NOT NULL DEFAULT false);
ALTER TABLE logsvc_nodes ADD COLUMN IF NOT EXISTS subscribed double precision;
"""
"""
C{logsvc_clients}: C{node} is the node a client is online on (NULL: offline),
C{writer} the node that saved the row last (NULL: a sweep), C{version} its place in
the order of changes.  C{logsvc_nodes}: the nodes of the cluster, their heartbeats,
whether their clients were marked offline since they died, and since when (the node's
clock) they have subscribers to other nodes' events (NULL: none).
"""

SAVE = """
INSERT INTO logsvc_clients (name, record, node, writer, version)
SELECT n, r, CASE WHEN o THEN %(node)s END, %(node)s, nextval('logsvc_clients_version')
FROM unnest(%(names)s::text[], %(records)s::text[], %(online)s::boolean[]) AS t(n, r, o)
ON CONFLICT (name) DO UPDATE SET record = excluded.record, node = excluded.node,
    writer = excluded.writer, version = excluded.version
WHERE excluded.node IS NOT NULL OR logsvc_clients.node IS NULL
    OR logsvc_clients.node = %(node)s
"""
"""A node's save: online rows are its own (it holds their names); an offline row does
not overwrite a client that went online on another node in the meantime."""


class PostgreSQLClients:
    """
    The C{logsvc_clients} table, on a connection of its own (reconnected on need),
    shared by every node of the cluster; C{node} is this node's id.
    """

    def __init__(self, uri: str, node: str):
        self._uri = uri
        self.node = node
        self._connection = None
        self.others: list = []      # at open: (name, record, True) of other nodes' clients
        self.version = 0            # at open: the last change read

    def _connect(self):
        from .postgresql.store import connect
        if self._connection is None or self._connection.closed:
            self._connection = connect(self._uri)
        return self._connection

    def open(self) -> list:
        """The offline records; those online on other nodes go to C{others}."""
        import psycopg
        try:
            connection = self._connect()
            createClients(connection)
            rows = connection.execute("SELECT name, record, node, version"
                                      " FROM logsvc_clients").fetchall()
            connection.rollback()
        except (psycopg.Error, StoreError) as e:
            raise StoreError(f"cannot open clients in postgresql: {' '.join(str(e).split())}"
                             ) from None
        self.version = max((row[3] for row in rows), default=0)
        self.others = [(name, record, True) for name, record, node, _ in rows
                       if node is not None]
        return [(name, record) for name, record, node, _ in rows if node is None]

    def save(self, rows: list, gone: list) -> None:
        connection = self._connect()
        try:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (CLIENTS_LOCK,))
                if rows:
                    connection.execute(SAVE, {
                        "node": self.node, "names": [row[0] for row in rows],
                        "records": [row[1] for row in rows],
                        "online": [row[2] for row in rows]})
                if gone:
                    connection.execute("DELETE FROM logsvc_clients WHERE name = ANY(%s)"
                                       " AND (node IS NULL OR node = %s)", (gone, self.node))
                connection.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, self.node))
        except Exception:
            if connection.broken:
                connection.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def createClients(connection) -> None:
    """The tables of the shared registry, created or upgraded (one node at a time)."""
    from .postgresql.schema import SCHEMA_LOCK
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        connection.execute(CLIENTS_SCHEMA)


class RegistryPersistence:
    """
    Restores the registry at start-up and writes its changed records once per tick.
    C{run(f, *args)} runs the backend's blocking calls off the reactor (a thread of
    its own unless given: tests run them in place).
    """

    log = Logger()

    def __init__(self, registry, backend, clock, run=None):
        self._registry = registry
        self._backend = backend
        self._clock = clock
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="logsvc-clients")
        self._run = run or (lambda f, *args: deferToThreadPool(clock, self._pool, f, *args))
        self._loop = LoopingCall(self.flush)
        self._loop.clock = clock
        self._saving = None
        self._failed = False
        self._closing = None

    def open(self) -> None:
        """Synchronously (start-up runs before the reactor): load every record."""
        for name, record in self._backend.open():
            self._registry.restore(name, json.loads(record))
        self._pool.start()
        self._loop.start(TICK, now=False)

    def flush(self):
        """Write what changed since the last flush; Deferred firing once written."""
        if self._saving is not None:
            return self._saving
        changed, gone = self._registry.takeChanges()
        if not changed and not gone:
            return succeed(None)
        rows = [(name, json.dumps(state), state["online"]) for name, state in changed]
        self._saving = self._run(self._backend.save, rows, gone)
        self._saving.addCallbacks(self._saved, self._notSaved,
                                  errbackArgs=(changed, gone))
        return self._saving

    def _saved(self, _) -> None:
        self._saving = None
        if self._failed:
            self._failed = False
            self.log.info("client records are saved again")

    def _notSaved(self, failure, changed: list, gone: list) -> None:
        self._saving = None
        self._registry.unsaved([name for name, _ in changed], gone)
        if not self._failed:
            self._failed = True
            self.log.error("client records not saved (kept for the next tick): {error}",
                           error=failure.getErrorMessage())

    def close(self):
        """Write everything left, then release the backend (once)."""
        if self._closing is not None:
            return self._closing
        if self._loop.running:
            self._loop.stop()
        saving = self._saving or succeed(None)
        saving.addBoth(lambda _: self.flush())
        saving.addBoth(self._finish)
        self._closing = saving
        return saving

    def _finish(self, result):
        self._pool.stop()
        self._backend.close()
        return None
