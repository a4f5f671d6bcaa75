"""The store's ``service_secrets``: kept across reopening, created once, replaced on demand."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from sesender.store.postgres import PostgresStore
from sesender.store.postgres import replace_service_secret_now as pg_replace_now
from sesender.store.schema import MIGRATIONS
from sesender.store.service_secrets import API_KEY_SHA256, TRACKING_SECRET, ServiceSecretsStore
from sesender.store.sqlite import SqliteStore, replace_service_secret_now
from tests.unit.store.engines import AnyStore, Db, OpenStore

NOW = 1_768_471_200_000


def test_the_sqlite_store_is_a_service_secrets_store(tmp_path: Path) -> None:
    """Checked by mypy: the annotation fails type checking if SqliteStore lacks a method."""
    store: ServiceSecretsStore = SqliteStore(tmp_path / "typed.db", busy_timeout=1)
    assert store is not None
    other: ServiceSecretsStore = PostgresStore("postgresql://nowhere", instance_id="typed")
    assert other is not None


async def test_ensure_keeps_the_first_value_and_returns_it(store: AnyStore) -> None:
    assert await store.service_secret(TRACKING_SECRET) is None
    first = await store.ensure_service_secret(TRACKING_SECRET, b"a" * 32, now_ms=NOW)
    assert first == b"a" * 32
    again = await store.ensure_service_secret(TRACKING_SECRET, b"b" * 32, now_ms=NOW + 1)
    assert again == b"a" * 32
    assert await store.service_secret(TRACKING_SECRET) == b"a" * 32
    assert await store.service_secret(API_KEY_SHA256) is None  # names are separate


async def test_values_survive_reopening_and_replace_overwrites(
    open_store: OpenStore, db: Db
) -> None:
    async with open_store() as store:
        await store.ensure_service_secret(TRACKING_SECRET, b"\x00\xff" * 16, now_ms=NOW)
        await store.ensure_service_secret(API_KEY_SHA256, b"digest-1", now_ms=NOW)
    async with open_store() as store:
        assert await store.service_secret(TRACKING_SECRET) == b"\x00\xff" * 16
        await store.replace_service_secret(API_KEY_SHA256, b"digest-2", now_ms=NOW + 5)
        assert await store.service_secret(API_KEY_SHA256) == b"digest-2"
    if db.engine == "sqlite":
        replace_service_secret_now(Path(db.target), API_KEY_SHA256, b"digest-3", now_ms=NOW + 9)
    else:
        pg_replace_now(db.target, API_KEY_SHA256, b"digest-3", now_ms=NOW + 9)
    async with open_store() as store:
        assert await store.service_secret(API_KEY_SHA256) == b"digest-3"
        assert await store.service_secret(TRACKING_SECRET) == b"\x00\xff" * 16


def test_replace_now_creates_and_migrates_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "new.db"
    replace_service_secret_now(path, API_KEY_SHA256, b"digest", now_ms=NOW)
    connection = sqlite3.connect(path)
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        rows = connection.execute("SELECT name, value, created_at FROM service_secrets").fetchall()
    finally:
        connection.close()
    assert version == len(MIGRATIONS)
    assert rows == [(API_KEY_SHA256, b"digest", NOW)]


async def test_two_stores_racing_on_one_database_agree(open_store: OpenStore) -> None:
    """Two processes starting at once: each offers its own candidate, both keep the same one."""
    async with open_store() as first, open_store() as second:
        kept: list[bytes] = []

        async def ensure(store: AnyStore, candidate: bytes) -> None:
            kept.append(await store.ensure_service_secret(TRACKING_SECRET, candidate, now_ms=NOW))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ensure, first, b"1" * 32)
            nursery.start_soon(ensure, second, b"2" * 32)
    assert len(kept) == 2
    assert kept[0] == kept[1]
    assert kept[0] in {b"1" * 32, b"2" * 32}
