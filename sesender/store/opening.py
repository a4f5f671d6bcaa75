"""Open the store the configuration names: SQLite (``DATABASE_PATH``, the default) or
PostgreSQL (``DATABASE_URL``, for several instances on one queue)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sesender.config import Config
from sesender.store.postgres import PostgresStore, open_postgres_store
from sesender.store.sqlite import SqliteStore, open_sqlite_store


@asynccontextmanager
async def open_store(config: Config) -> AsyncIterator[SqliteStore | PostgresStore]:
    database = config.database
    suppress = config.feedback.suppress_after_transient_bounces
    if database.url is not None:
        async with open_postgres_store(
            database.url,
            instance_id=database.instance_id,
            pool_size=database.pool_size,
            suppress_after_transient=suppress,
            lease_ms=int(database.lease * 1000),
            rate_settings=(config.pipeline.max_send_per_second, config.pipeline.burst),
        ) as postgres:
            yield postgres
    else:
        async with open_sqlite_store(
            database.path,
            busy_timeout=database.busy_timeout,
            suppress_after_transient=suppress,
        ) as sqlite:
            yield sqlite
