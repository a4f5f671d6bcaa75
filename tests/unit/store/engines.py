"""Helpers of the two-engine store suite: direct SQL on the test's database, either engine."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import psycopg

from sesender.store.postgres import PostgresStore
from sesender.store.sqlite import SqliteStore

AnyStore = SqliteStore | PostgresStore
OpenStore = Callable[..., AbstractAsyncContextManager[AnyStore]]
ENGINES = ("sqlite", "postgres")


def rows(store: AnyStore, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Run ``sql`` (``?`` placeholders) on the store's database beside the store."""
    if isinstance(store, SqliteStore):
        return Db("sqlite", str(store.path)).rows(sql, *args)
    return Db("postgres", store.url).rows(sql, *args)


@dataclass
class Db:
    """Direct SQL on the test's database, whichever the engine (``?`` placeholders)."""

    engine: str
    target: str  # the SQLite path or the PostgreSQL URL

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        if self.engine == "sqlite":
            connection = sqlite3.connect(self.target)
            try:
                result = connection.execute(sql, args).fetchall()
                connection.commit()
                return result
            finally:
                connection.close()
        with psycopg.connect(self.target, autocommit=True) as pg_connection:
            cursor = pg_connection.execute(sql.replace("?", "%s").encode(), args)
            return cursor.fetchall() if cursor.description else []

    def execute(self, sql: str, *args: object) -> None:
        self.rows(sql, *args)

    def refuse(self, table: str, event: str, condition: str) -> None:
        """A trigger that aborts ``event`` (``INSERT``, ``UPDATE OF col``) on ``table`` rows
        matching ``condition`` (over ``NEW``) with the message "poison"."""
        if self.engine == "sqlite":
            self.execute(
                f"CREATE TRIGGER refuse_poison BEFORE {event} ON {table} WHEN {condition}"
                " BEGIN SELECT RAISE(ABORT, 'poison'); END"
            )
            return
        self.execute(
            "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'poison'; END $$"
        )
        self.execute(
            f"CREATE TRIGGER refuse_poison BEFORE {event} ON {table} FOR EACH ROW"
            f" WHEN ({condition}) EXECUTE FUNCTION refuse_poison()"
        )

    def cleanup(self) -> None:
        if self.engine == "postgres":
            self.execute("DROP TRIGGER IF EXISTS refuse_poison ON requests")
