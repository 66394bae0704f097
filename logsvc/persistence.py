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
            connection.executemany("INSERT OR REPLACE INTO clients VALUES (?, ?)", rows)
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


class PostgreSQLClients:
    """The C{logsvc_clients} table, on a connection of its own (reconnected on need)."""

    def __init__(self, uri: str):
        self._uri = uri
        self._connection = None

    def _connect(self):
        from .pgstore import _connect
        if self._connection is None or self._connection.closed:
            self._connection = _connect(self._uri)
        return self._connection

    def open(self) -> list:
        import psycopg
        try:
            connection = self._connect()
            with connection.transaction():
                connection.execute("CREATE TABLE IF NOT EXISTS logsvc_clients"
                                   " (name text PRIMARY KEY, record text NOT NULL)")
            rows = connection.execute("SELECT name, record FROM logsvc_clients").fetchall()
            connection.rollback()
            return rows
        except (psycopg.Error, StoreError) as e:
            raise StoreError(f"cannot open clients in postgresql: {' '.join(str(e).split())}"
                             ) from None

    def save(self, rows: list, gone: list) -> None:
        connection = self._connect()
        try:
            with connection.transaction():
                if rows:
                    connection.execute(
                        "INSERT INTO logsvc_clients SELECT * FROM unnest(%s::text[], %s::text[])"
                        " ON CONFLICT (name) DO UPDATE SET record = excluded.record",
                        ([name for name, _ in rows], [record for _, record in rows]))
                if gone:
                    connection.execute("DELETE FROM logsvc_clients WHERE name = ANY(%s)",
                                       (gone,))
        except Exception:
            if connection.broken:
                connection.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def backendFor(description: str):
    """Where a C{--store} keeps client records; None for C{memory:}."""
    from .pgstore import isPostgreSQL
    if isPostgreSQL(description):
        return PostgreSQLClients(description)
    if description.startswith("sqlite:"):
        return SQLiteClients(description[len("sqlite:"):])
    return None


class RegistryPersistence:
    """Restores the registry at start-up and writes its changed records once per tick."""

    log = Logger()

    def __init__(self, registry, backend, clock):
        self._registry = registry
        self._backend = backend
        self._clock = clock
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="logsvc-clients")
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
        rows = [(name, json.dumps(state)) for name, state in changed]
        self._saving = deferToThreadPool(self._clock, self._pool, self._backend.save,
                                         rows, gone)
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
