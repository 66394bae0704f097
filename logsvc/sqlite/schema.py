"""
The SQLite journal's tables and the version recorded in the file (meta C{schema}).

A file is brought to L{SCHEMA_VERSION} when it is opened: a new one is created at it,
an older one goes through one upgrade function per version in L{UPGRADES}, each in a
transaction of its own that also records the version it reached.
"""

import sqlite3

from twisted.logger import Logger

from ..errors import StoreError

SCHEMA_VERSION = 2
"""
1: chunks and hashes.  2 (retention): C{hashes.last}, the highest index of a copy;
C{referenced}, the first copies that have later copies; C{blobs}, entries whose first
copy was deleted while later copies are kept; C{sweep}, the hashes of deleted entries
still to be removed from C{hashes}; C{times}, the sparse record of commit times;
C{retries}, the write ids of deleted chunks; and meta C{first}.  A version-1 file is
upgraded without rewriting it: its copies' C{last} is taken as the index deduplicated
at the upgrade (meta C{copies_before}).

Pages retention frees go to SQLite's free list and take later writes, so the file
stops growing without shrinking: auto-vacuum, which would give them back, keeps
pointer-map pages up to date in every commit, which slowed commits.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS chunks (
    first INTEGER PRIMARY KEY, count INTEGER NOT NULL,
    digests BLOB NOT NULL, data BLOB NOT NULL, ids TEXT);
CREATE INDEX IF NOT EXISTS identified ON chunks (first) WHERE ids IS NOT NULL;
CREATE TABLE IF NOT EXISTS hashes (
    hash BLOB PRIMARY KEY, idx INTEGER NOT NULL, last INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (hash BLOB PRIMARY KEY, last INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS blobs_last ON blobs (last);
CREATE TABLE IF NOT EXISTS times (idx INTEGER PRIMARY KEY, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS times_time ON times (time);
CREATE TABLE IF NOT EXISTS retries (
    first INTEGER PRIMARY KEY, count INTEGER NOT NULL, digests BLOB NOT NULL, ids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS referenced (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sweep (
    first INTEGER PRIMARY KEY, count INTEGER NOT NULL, digests BLOB NOT NULL);
"""
"""Every table of L{SCHEMA_VERSION}, as a new file gets them."""

# The rows of chunks holding indices ?1 to ?2: the chunk that starts at or before ?1,
# and every later one up to ?2.
CHUNKS_FROM = """
SELECT first, count, digests, data FROM chunks
WHERE first >= coalesce((SELECT max(first) FROM chunks WHERE first <= ?1), 0) AND first <= ?2
ORDER BY first
"""

_log = Logger()


def meta(connection: sqlite3.Connection, key: str, default: int) -> int:
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


def recordedVersion(connection: sqlite3.Connection) -> int:
    """
    The file's schema version; 0 for a new file.  Version 1 recorded none: a file
    with C{hashes} and no version is one.
    """
    tables = {name for (name,) in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" in tables:
        version = meta(connection, "schema", 0)
        if version:
            return version
    return 1 if "hashes" in tables else 0


def upgradeTo2(connection: sqlite3.Connection) -> None:
    """
    Retention's tables and C{hashes.last}.  A file whose creation was interrupted
    before its version was recorded has some of them already.
    """
    columns = [row[1] for row in connection.execute("PRAGMA table_info(hashes)")]
    if "last" not in columns:
        connection.execute("ALTER TABLE hashes ADD COLUMN last INTEGER")
    for statement in (
            "CREATE TABLE IF NOT EXISTS blobs (hash BLOB PRIMARY KEY, last INTEGER NOT NULL,"
            " data BLOB NOT NULL)",
            "CREATE INDEX IF NOT EXISTS blobs_last ON blobs (last)",
            "CREATE TABLE IF NOT EXISTS times (idx INTEGER PRIMARY KEY, time REAL NOT NULL)",
            "CREATE INDEX IF NOT EXISTS times_time ON times (time)",
            "CREATE TABLE IF NOT EXISTS retries (first INTEGER PRIMARY KEY,"
            " count INTEGER NOT NULL, digests BLOB NOT NULL, ids TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS referenced (idx INTEGER PRIMARY KEY,"
            " hash BLOB NOT NULL)",
            "CREATE TABLE IF NOT EXISTS sweep (first INTEGER PRIMARY KEY,"
            " count INTEGER NOT NULL, digests BLOB NOT NULL)"):
        connection.execute(statement)
    connection.execute("INSERT OR REPLACE INTO meta VALUES ('copies_before', ?)",
                       (meta(connection, "indexed", 0),))


UPGRADES = {2: upgradeTo2}
"""The function that brings a file of the version before to each version."""


def createOrUpgrade(connection: sqlite3.Connection, store: str) -> None:
    """
    Bring the file open on C{connection} (autocommit, the file's only writer) to
    L{SCHEMA_VERSION}; raise L{StoreError} for a file from a newer logsvc.  C{store}
    names it in messages.
    """
    version = recordedVersion(connection)
    if version > SCHEMA_VERSION:
        raise StoreError(f"cannot open store {store}: schema version {version} is newer "
                         f"than this logsvc's {SCHEMA_VERSION}")
    if version == 0:
        connection.executescript(f"BEGIN IMMEDIATE; {SCHEMA} INSERT OR REPLACE INTO meta"
                                 f" VALUES ('schema', {SCHEMA_VERSION}); COMMIT;")
        return
    while version < SCHEMA_VERSION:
        version += 1
        # An error leaves the transaction open: closing the connection rolls it back.
        connection.execute("BEGIN IMMEDIATE")
        UPGRADES[version](connection)
        connection.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (version,))
        connection.execute("COMMIT")
        _log.info("{store}: schema upgraded to version {version}", store=store,
                  version=version)
