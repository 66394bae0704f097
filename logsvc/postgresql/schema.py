"""
The PostgreSQL journal's tables and the version recorded in them (C{logsvc_meta}
C{schema}): the first node to start creates or upgrades them, one node at a time.
"""

import json
import uuid

from ..errors import StoreError

SCHEMA_VERSION = 3
"""
1: meta, counter, chunks, writes (the retry window, a row per identified write) and
times.  2: content addressing (C{logsvc_hashes}, C{logsvc_indexed}: an older journal
is indexed from its start).  3: write ids in their chunk row, as on SQLite
(C{logsvc_chunks.ids}, and C{logsvc_retries} for those of deleted chunks), so a commit
writes a row per chunk rather than one per identified write; an older journal's
C{logsvc_writes} becomes rows of C{logsvc_retries}.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS logsvc_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS logsvc_counter (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    head bigint NOT NULL, first bigint NOT NULL);
CREATE TABLE IF NOT EXISTS logsvc_chunks (
    first bigint PRIMARY KEY, count integer NOT NULL,
    digests bytea NOT NULL, data bytea NOT NULL, ids text);
ALTER TABLE logsvc_chunks ADD COLUMN IF NOT EXISTS ids text;
CREATE TABLE IF NOT EXISTS logsvc_retries (
    first bigint PRIMARY KEY, count integer NOT NULL, digests bytea NOT NULL, ids text NOT NULL);
CREATE TABLE IF NOT EXISTS logsvc_times (idx bigint PRIMARY KEY, time float8 NOT NULL);
CREATE INDEX IF NOT EXISTS logsvc_times_time ON logsvc_times (time);
CREATE TABLE IF NOT EXISTS logsvc_hashes (
    digest bytea PRIMARY KEY, idx bigint NOT NULL, last bigint NOT NULL, data bytea);
CREATE TABLE IF NOT EXISTS logsvc_indexed (
    one boolean PRIMARY KEY DEFAULT true CHECK (one), indexed bigint NOT NULL);
INSERT INTO logsvc_counter (head, first) VALUES (0, 1) ON CONFLICT DO NOTHING;
INSERT INTO logsvc_indexed (indexed) VALUES (0) ON CONFLICT DO NOTHING;
"""

SCHEMA_LOCK = 0x6C6F6773
"""Advisory lock held while a node creates or upgrades the schema."""


def _moveWriteRows(connection) -> None:
    """The retry window of schema versions 1 and 2, a row per identified write, as
    rows of C{logsvc_retries}."""
    rows = connection.execute("SELECT idx, digest, id FROM logsvc_writes").fetchall()
    connection.execute(
        "INSERT INTO logsvc_retries SELECT * FROM unnest(%b::bigint[], %b::int[],"
        " %b::bytea[], %b::text[]) ON CONFLICT DO NOTHING",
        ([index for index, _, _ in rows], [1] * len(rows),
         [bytes(digest) for _, digest, _ in rows],
         [json.dumps([[index, bytes(writeId).decode("utf-8", "surrogatepass")]])
          for index, _, writeId in rows]))
    connection.execute("DROP TABLE logsvc_writes")


def createOrUpgrade(connection) -> tuple[int, str]:
    """
    Under an advisory lock, so nodes starting together create it once.  Returns the
    version found (L{SCHEMA_VERSION} for a new journal) and the journal id.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        (exists,), = connection.execute("SELECT to_regclass('logsvc_meta') IS NOT NULL")
        version = SCHEMA_VERSION
        if exists:
            (version,), = connection.execute(
                "SELECT value::int FROM logsvc_meta WHERE key = 'schema'")
        if version > SCHEMA_VERSION:
            raise StoreError(f"schema version {version} is newer than this "
                             f"logsvc's {SCHEMA_VERSION}")
        connection.execute(SCHEMA)      # what is new in this version is created here
        if version < 3:
            _moveWriteRows(connection)
        connection.execute("INSERT INTO logsvc_meta VALUES ('schema', %s),"
                           " ('journal_id', %s) ON CONFLICT (key) DO UPDATE"
                           " SET value = excluded.value WHERE logsvc_meta.key = 'schema'",
                           (str(SCHEMA_VERSION), str(uuid.uuid4())))
        meta = dict(connection.execute("SELECT key, value FROM logsvc_meta"))
    return version, meta["journal_id"]
