"""Persistence: the :class:`Store` interface and its SQLite implementation."""

from sesender.models import IdempotencyRecord
from sesender.store.base import StopResult, Store
from sesender.store.sqlite import SqliteStore, migrate, open_sqlite_store

__all__ = [
    "IdempotencyRecord",
    "SqliteStore",
    "StopResult",
    "Store",
    "migrate",
    "open_sqlite_store",
]
