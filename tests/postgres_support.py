"""PostgreSQL for the tests: one throwaway database per test run (and more on demand).

``SESENDER_TEST_DATABASE_URL`` names the server (default: the development and CI server at
127.0.0.1:5432, trust authentication). Each run creates its databases with a random name and
drops them at exit. When no server answers, the tests that need one *fail* (never skip):
``scripts/test`` starts a private server first on machines without one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("SESENDER_TEST_DATABASE_URL") or DEFAULT_SERVER_URL


def _with_database(url: str, name: str) -> str:
    """``url`` (a ``postgresql://`` URL) pointing at database ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(prefix: str = "sesender_test") -> str:
    """Create an empty database; return its URL."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    try:
        with psycopg.connect(server_url(), autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"no PostgreSQL at {server_url()} ({exc}); run scripts/test (it starts a private"
            " server) or set SESENDER_TEST_DATABASE_URL"
        ) from exc
    return _with_database(server_url(), name)


def drop_database(url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    assert isinstance(name, str)
    with psycopg.connect(server_url(), autocommit=True, connect_timeout=5) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def temporary_database(prefix: str = "sesender_test") -> Iterator[str]:
    url = create_database(prefix)
    try:
        yield url
    finally:
        drop_database(url)


def reset(url: str) -> None:
    """Empty every table but the migrations' record, identities back to 1 (between tests).

    ``DELETE`` rather than ``TRUNCATE``: on tables of a few rows it is several times faster (no
    new files), and the whole reset is one round trip."""
    with psycopg.connect(url, autocommit=True) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'schema_migrations'"
            )
        ]
        sequences = [
            row[0]
            for row in connection.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
            )
        ]
        # Children before parents (results and requests reference their parents).
        parents_last = {"results": 0, "email_link_clicks": 0, "requests": 1, "links": 1}
        order = sorted(tables, key=lambda t: parents_last.get(t, 2))
        statements = [sql.SQL("DELETE FROM {}").format(sql.Identifier(t)) for t in order]
        statements += [
            sql.SQL("ALTER SEQUENCE {} RESTART").format(sql.Identifier(s)) for s in sequences
        ]
        if statements:
            connection.execute(sql.SQL("; ").join(statements))
