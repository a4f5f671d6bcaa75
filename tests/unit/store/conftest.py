"""One store test suite over both engines: every test taking ``store`` (or ``db``, or
``open_store``) runs once on SQLite and once on PostgreSQL.

PostgreSQL tests share one database per test run (created here, dropped at the end), emptied
before each test; a test that needs a database of its own uses ``tests.postgres_support``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from sesender.store.postgres import migrate, open_postgres_store
from sesender.store.sqlite import SqliteStore, open_sqlite_store
from tests import postgres_support
from tests.unit.store.engines import ENGINES, AnyStore, Db, OpenStore


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """This run's PostgreSQL database, migrated (fails, never skips, without a server)."""
    with postgres_support.temporary_database() as url:
        migrate(url)
        yield url


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Db]:
    if engine == "sqlite":
        yield Db(engine, str(tmp_path / "test.db"))
        return
    url = request.getfixturevalue("pg_url")
    postgres_support.reset(url)
    handle = Db(engine, url)
    yield handle
    handle.cleanup()


@pytest.fixture
def open_store(db: Db) -> OpenStore:
    """Open (again) a store on the test's database; keyword arguments go to the opener."""

    @asynccontextmanager
    async def opener(**options: Any) -> AsyncIterator[AnyStore]:
        if db.engine == "sqlite":
            async with open_sqlite_store(Path(db.target), **options) as sqlite_store:
                yield sqlite_store
        else:
            async with open_postgres_store(db.target, pool_size=4, **options) as pg_store:
                yield pg_store

    return opener


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[AnyStore]:
    async with open_store() as opened:
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """For the tests of what only SQLite has (PRAGMAs, a read-only writer connection)."""
    async with open_sqlite_store(tmp_path / "test.db") as opened:
        yield opened
