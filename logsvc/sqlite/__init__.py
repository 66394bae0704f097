"""
The SQLite journal store: L{SQLiteStore} (C{store}) ties together the schema and its
upgrades (C{schema}), the writer thread and group commit (C{writer}), retention's
deletions (C{trimmer}) and the deduplicating indexer (C{indexer}).
"""

from .store import SQLiteStore

__all__ = ["SQLiteStore"]
