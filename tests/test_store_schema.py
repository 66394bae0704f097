"""
The SQLite store's recorded schema version and its upgrades: a new file is created at
the current version, a file of each older version (built here as that version's logsvc
wrote it) opens upgraded to the same layout with its entries readable, and a file from
a newer logsvc is refused.
"""

import sqlite3
import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from logsvc.errors import StoreError
from logsvc.retention import Retention
from logsvc.sqlite import SQLiteStore
from logsvc.sqlite.schema import SCHEMA_VERSION, UPGRADES, createOrUpgrade, recordedVersion
from logsvc.store import entryHash
from tests.stores import entry, temporaryPath

VERSION_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
CREATE TABLE chunks (
    first INTEGER PRIMARY KEY, count INTEGER NOT NULL,
    digests BLOB NOT NULL, data BLOB NOT NULL, ids TEXT);
CREATE INDEX identified ON chunks (first) WHERE ids IS NOT NULL;
CREATE TABLE hashes (hash BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
"""
"""The tables of version 1, which recorded no version."""


def layout(path: str) -> dict:
    """Every table's columns and every index's name, as SQLite describes them."""
    with sqlite3.connect(path) as connection:
        names = connection.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
        return {name: connection.execute(f"PRAGMA table_info({name})").fetchall()
                if kind == "table" else kind for kind, name in names}


class SchemaTests(unittest.TestCase):

    def setUp(self):
        self.path = temporaryPath(self)

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(connection.close)
        return connection

    def writeVersion1(self) -> None:
        """Entries 1..3 in two chunks, the third a copy of the first, deduplicated as
        version 1 did."""
        a, b = entry(1), entry(2)
        connection = self.connect()
        connection.executescript(VERSION_1)
        connection.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", [
            (1, 2, entryHash(a) + entryHash(b), a + b"\n" + b, '[[1, "w1"]]'),
            (3, 1, entryHash(a), b"=1", None)])
        connection.executemany("INSERT INTO hashes VALUES (?, ?)",
                               [(entryHash(a), 1), (entryHash(b), 2)])
        connection.execute("INSERT INTO meta VALUES ('indexed', 3)")

    def test_newFileIsCreatedAtTheCurrentVersion(self):
        connection = self.connect()
        self.assertEqual(recordedVersion(connection), 0)
        createOrUpgrade(connection, "test")
        self.assertEqual(recordedVersion(connection), SCHEMA_VERSION)
        self.assertIn("sweep", layout(self.path))

    def test_everyVersionHasAnUpgrade(self):
        self.assertEqual(sorted(UPGRADES), list(range(2, SCHEMA_VERSION + 1)))

    def test_versionOneIsRecognised(self):
        self.writeVersion1()
        self.assertEqual(recordedVersion(self.connect()), 1)

    def test_versionOneUpgradesToTheLayoutOfANewFile(self):
        self.writeVersion1()
        createOrUpgrade(self.connect(), "test")
        fresh = temporaryPath(self)
        connection = sqlite3.connect(fresh, isolation_level=None)
        createOrUpgrade(connection, "test")
        connection.close()
        self.assertEqual(layout(self.path), layout(fresh))
        with sqlite3.connect(self.path) as connection:
            self.assertEqual(connection.execute(
                "SELECT key, value FROM meta WHERE key IN ('schema', 'copies_before')"
                " ORDER BY key").fetchall(), [("copies_before", 3), ("schema", SCHEMA_VERSION)])

    @inlineCallbacks
    def test_versionOneFileOpensWithItsEntries(self):
        """Its entries, retry window and copies stay readable, also once retention
        deleted a copy's first entry."""
        self.writeVersion1()
        store = SQLiteStore(reactor, self.path)
        yield store.open()
        self.addCleanup(store.close)
        self.assertEqual((yield store.read(1, 5)), [(1, entry(1)), (2, entry(2)), (3, entry(1))])
        self.assertEqual((yield store.append([entry(1), entry(4)], ["w1", "w4"])), [1, 4])
        self.assertEqual((yield store.trim(Retention(entries=2), time.time())), (1, 3))
        self.assertEqual((yield store.read(3, 5)), [(3, entry(1)), (4, entry(4))])

    def test_interruptedCreationIsCompleted(self):
        """A file whose creation stopped before its version was recorded (its hashes
        already have C{last}) is upgraded without error."""
        connection = self.connect()
        connection.executescript(VERSION_1.replace(
            "idx INTEGER NOT NULL)", "idx INTEGER NOT NULL, last INTEGER)"))
        createOrUpgrade(connection, "test")
        self.assertEqual(recordedVersion(connection), SCHEMA_VERSION)

    def test_newerVersionIsRefused(self):
        connection = self.connect()
        createOrUpgrade(connection, "test")
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                           (SCHEMA_VERSION + 1,))
        store = SQLiteStore(reactor, self.path)
        error = self.failureResultOf(store.open(), StoreError).value
        self.assertEqual(str(error), f"cannot open store sqlite:{self.path}: schema version "
                         f"{SCHEMA_VERSION + 1} is newer than this logsvc's {SCHEMA_VERSION}")
