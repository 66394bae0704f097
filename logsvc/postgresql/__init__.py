"""
The PostgreSQL journal store, shared by every logsvc node pointed at one database:
L{PostgreSQLStore} (C{store}).
"""

from .store import PostgreSQLStore, isPostgreSQL

__all__ = ["PostgreSQLStore", "isPostgreSQL"]
