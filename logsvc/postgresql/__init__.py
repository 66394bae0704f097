"""
The PostgreSQL journal store, shared by every logsvc node pointed at one database:
L{PostgreSQLStore} (C{store}: the writer thread and its commits, the listening thread,
reads) ties together the schema and its upgrades (C{schema}), this node's copy of the
shared retry window and a commit's chunk rows (C{window}), the deduplicating indexer
(C{indexer}) and retention's deletions (C{trimmer}).
"""

from .store import PostgreSQLStore, isPostgreSQL

__all__ = ["PostgreSQLStore", "isPostgreSQL"]
