"""``sesender migrate-store``: copy a SQLite database into an empty PostgreSQL one.

For the move from one instance on SQLite to several on PostgreSQL (docs/operations.md, section
12). Every table both schemas have is copied whole, in one PostgreSQL transaction (all or
nothing), with ``COPY``: queued and historical emails with their contents, results, topics,
counters, cancellations, suppressions, bounce counts, idempotency keys, SNS message ids, the
service secrets (so the API key and every link already sent keep working) and the webhook
endpoints (with their secrets), subscriptions, queued events and attempts.

It refuses to run while a service holds the SQLite file (it takes SQLite's exclusive lock, which
any open connection of a live service prevents in WAL mode), and into a PostgreSQL database that
already holds emails. Emails a crashed service left ``Processed`` are copied as ``Created``: the
new instances send them (at-least-once, as after any crash).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from sesender.models import Status
from sesender.store import pg_queries
from sesender.store.postgres import connect

#: Parents first (foreign keys); ``topic_result_counts`` is rebuilt by the results trigger.
ORDER = ("contents", "requests", "results")
DERIVED = frozenset({"topic_result_counts"})
SKIPPED = frozenset({"schema_migrations", "instances", "rate_buckets"})


class MigrateStoreError(Exception):
    """The copy was refused or failed; nothing was written."""


@dataclass(frozen=True, slots=True)
class CopyReport:
    rows: dict[str, int]


def parse_source(source: str) -> Path:
    if not source.startswith("sqlite:"):
        raise MigrateStoreError("--from must be sqlite:PATH")
    path = Path(source.removeprefix("sqlite:"))
    if not path.is_file():
        raise MigrateStoreError(f"no SQLite database at {path}")
    return path


def migrate_store(source: Path, target: str) -> CopyReport:
    if not target.startswith(("postgresql://", "postgres://")):
        raise MigrateStoreError("--to must be a postgresql:// URL")
    lite = sqlite3.connect(source, timeout=0, isolation_level=None)
    try:
        lite.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            lite.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise MigrateStoreError(
                f"{source} is in use (a running sesender?): stop it first ({exc})"
            ) from exc
        with connect(target) as pg:
            pg_queries.apply_migrations(pg)
            return _copy(lite, pg)
    finally:
        lite.close()


def _columns_sqlite(lite: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in lite.execute(f'PRAGMA table_info("{table}")')]


def _copy(lite: sqlite3.Connection, pg: pg_queries.Connection) -> CopyReport:
    lite_tables = {
        row[0]
        for row in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not row[0].startswith("sqlite_")
    }
    pg_tables = {
        row[0] for row in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    tables = sorted(
        (lite_tables & pg_tables) - DERIVED - SKIPPED,
        key=lambda t: (ORDER.index(t) if t in ORDER else len(ORDER), t),
    )
    copied: dict[str, int] = {}
    with pg.transaction():
        row = pg.execute("SELECT EXISTS (SELECT 1 FROM requests)").fetchone()
        if row and row[0]:
            raise MigrateStoreError("the PostgreSQL database already holds emails")
        for table in tables:
            pg_columns = {
                r[0]
                for r in pg.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                    (table,),
                )
            }
            columns = [c for c in _columns_sqlite(lite, table) if c in pg_columns]
            pg.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
            )
            quoted = ", ".join('"' + column + '"' for column in columns)
            select = f'SELECT {quoted} FROM "{table}"'
            count = 0
            with pg.cursor().copy(statement) as copy:
                for values in lite.execute(select):
                    copy.write_row(values)
                    count += 1
            copied[table] = count
        # Emails a crashed service left claimed go back to the queue (nobody holds them now).
        pg.execute(
            f"UPDATE requests SET status = {Status.CREATED.value}, claimed_by = NULL"
            f" WHERE status = {Status.PROCESSED.value}"
        )
        for table in (
            "contents",
            "requests",
            "results",
            "api_keys",
            "webhook_events",
            "webhook_attempts",
        ):
            pg.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({}, 'id'),"
                    " (SELECT COALESCE(MAX(id), 0) + 1 FROM {}), false)"
                ).format(sql.Literal(table), sql.Identifier(table))
            )
    return CopyReport(rows=copied)
