"""The journal store a C{--store} description names."""

from .errors import StoreError
from .interfaces import IJournalStore
from .memorystore import MemoryStore
from .postgresql import PostgreSQLStore, isPostgreSQL
from .sqlite import SQLiteStore


def storeFromString(reactor, description: str, **options) -> IJournalStore:
    """
    C{memory:}, C{sqlite:PATH} or C{postgresql://...} (C{postgres://} too); raise
    L{StoreError} for anything else.
    """
    if isPostgreSQL(description):
        return PostgreSQLStore(reactor, description)
    kind, _, rest = description.partition(":")
    if kind == "memory" and not rest:
        return MemoryStore(reactor)
    if kind == "sqlite" and rest:
        return SQLiteStore(reactor, rest, **options)
    raise StoreError(f"unknown store {description!r}: use sqlite:PATH, memory: or "
                     "postgresql://USER:PASSWORD@HOST:PORT/DB")
