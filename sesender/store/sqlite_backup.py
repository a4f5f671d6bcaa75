"""``sesender backup PATH``: a consistent copy of a running service's SQLite database, verified.

Copying the ``.db`` file of a live database in WAL mode is not a backup: recent commits live in the
``-wal`` file and the two are not read at one instant. SQLite's online backup API, run in one step,
copies every page inside one read transaction, so the copy is the database as of one commit; in WAL
mode that read transaction blocks no writer, so the service keeps sending meanwhile.

The copy is written beside the target under a temporary name, switched to ``journal_mode =
DELETE`` (a self-contained single file, what a restore wants), verified (``PRAGMA quick_check``,
the schema version, every table the migrations create), flushed to disk and only then renamed to
``PATH``: a ``PATH`` that exists is always a verified backup. Last, ``last_backup_at`` is recorded
in the live database for the metrics and the dashboard.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sesender.store import sqlite_lifecycle as lifecycle
from sesender.store import sqlite_queries as queries
from sesender.store.schema import MIGRATIONS


class BackupError(Exception):
    """The backup could not be written or did not verify (the message says which)."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    size_bytes: int
    schema_version: int
    emails: int
    max_request_id: int
    seconds: float


def expected_tables() -> frozenset[str]:
    """Every table the migrations create (so a table added by a later migration is checked)."""
    return frozenset(re.findall(r"CREATE TABLE (\w+)", "\n".join(MIGRATIONS)))


def backup_database(
    source: Path, target: Path, *, busy_timeout: float, now_ms: int
) -> BackupReport:
    """Write a verified consistent copy of ``source`` to ``target`` (which must not exist)."""
    started = time.monotonic()
    if target.exists():
        raise BackupError(f"{target} exists; choose a new path (a backup never overwrites)")
    if not source.is_file():
        raise BackupError(f"{source} does not exist (check DATABASE_PATH)")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        live = queries.connect(str(source), busy_timeout=busy_timeout)
        try:
            version = queries.schema_version(live)
            copy = sqlite3.connect(str(partial), isolation_level=None)
            try:
                live.backup(copy)  # every page in one step: one read transaction, one instant
                copy.execute("PRAGMA journal_mode = DELETE").fetchall()
            finally:
                copy.close()
            report = verify_backup(partial, expected_version=version)
            with open(partial, "rb") as file:
                os.fsync(file.fileno())
            os.replace(partial, target)
            _fsync_directory(target.parent)
            lifecycle.record_backup(live, now_ms)
        finally:
            live.close()
    except sqlite3.Error as exc:
        raise BackupError(f"backup failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return BackupReport(
        path=target,
        size_bytes=target.stat().st_size,
        schema_version=report.schema_version,
        emails=report.emails,
        max_request_id=report.max_request_id,
        seconds=time.monotonic() - started,
    )


def verify_backup(path: Path, *, expected_version: int) -> BackupReport:
    """Open a backup read-only and check it: integrity, schema version, tables; count emails."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        check = connection.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise BackupError(f"the copy does not pass quick_check: {check[:5]}")
        version = queries.schema_version(connection)
        if version != expected_version:
            raise BackupError(f"the copy has schema version {version}, not {expected_version}")
        tables = {
            str(row[0])
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        missing = sorted(expected_tables() - tables)
        if missing:
            raise BackupError(f"the copy lacks tables: {', '.join(missing)}")
        emails, highest = connection.execute("SELECT COUNT(*), MAX(id) FROM requests").fetchone()
    finally:
        connection.close()
    return BackupReport(
        path=path,
        size_bytes=path.stat().st_size,
        schema_version=version,
        emails=int(emails),
        max_request_id=int(highest or 0),
        seconds=0.0,
    )


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
