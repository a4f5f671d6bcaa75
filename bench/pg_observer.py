"""What PostgreSQL itself does for one benchmark database: its backends' CPU, its transactions,
and what its sessions wait for, sampled while a benchmark runs.

The PostgreSQL server of the development machine is shared (other test runs use it at the same
time), so nothing here reads server-wide figures: the backends are those connected to the
benchmark's own database (``pg_stat_activity.datname``), their CPU is read from ``/proc/<pid>/stat``
(user + system time; the server runs on the same machine), and the transaction counts come from
that database's row of ``pg_stat_database``. The connections are in autocommit mode, so one
committed transaction is one statement, i.e. one round trip, except where the service groups
several statements in a transaction (a lower bound on round trips, then).

Wait events are sampled every ``interval`` seconds: each sample counts the database's sessions
by state (``active``, ``idle``, ...) and, for active ones, by ``wait_event_type:wait_event``
(``Lock:tuple`` or ``Lock:transactionid`` are row-lock waits, ``LWLock:*`` internal locks,
``Client:ClientRead`` a session waiting for its client, ``CPU`` an active session waiting for
nothing, i.e. running or runnable).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class PostgresActivity:
    """What one observed stretch cost PostgreSQL (see the module docstring)."""

    cpu_seconds: float = 0.0
    transactions: int = 0
    rows_updated: int = 0
    rows_inserted: int = 0
    samples: int = 0
    #: per sample, how many sessions were active (the mean is the database's concurrency).
    active_sessions: int = 0
    waits: Counter[str] = field(default_factory=Counter)
    backends: int = 0

    def per_thousand(self, emails: int) -> dict[str, Any]:
        scale = 1000 / emails if emails else 0.0
        return {
            "pg_cpu_seconds_per_1000": self.cpu_seconds * scale,
            "pg_transactions_per_1000": self.transactions * scale,
            "pg_rows_updated_per_email": self.rows_updated / emails if emails else 0.0,
            "pg_rows_inserted_per_email": self.rows_inserted / emails if emails else 0.0,
            "pg_backends": self.backends,
            "pg_mean_active_sessions": self.active_sessions / self.samples if self.samples else 0,
            # share of the active-session samples spent on each wait (or on CPU)
            "pg_waits": {
                name: round(count / max(1, self.active_sessions), 3)
                for name, count in self.waits.most_common(8)
            },
        }


class PostgresObserver:
    """Samples the database at ``url`` from a thread of its own between ``start`` and ``stop``
    (or as a context manager); ``stop`` returns the :class:`PostgresActivity` of the stretch."""

    def __init__(self, url: str, *, interval: float = 0.025) -> None:
        self._url = url
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._activity = PostgresActivity()
        self._connection = psycopg.connect(url, autocommit=True)
        self._own_pid = self._connection.info.backend_pid
        self._counters_before = self._counters()

    def _counters(self) -> tuple[int, int, int]:
        # A fresh snapshot each time: the statistics of one transaction are otherwise cached.
        self._connection.execute("SELECT pg_stat_clear_snapshot()")
        row = self._connection.execute(
            "SELECT xact_commit + xact_rollback, tup_updated, tup_inserted"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def _sample(self) -> None:
        rows = self._connection.execute(
            "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> %s AND backend_type = 'client backend'",
            (self._own_pid,),
        ).fetchall()
        self._activity.samples += 1
        for pid, state, wait_type, wait in rows:
            cpu = process_cpu_seconds(pid)
            if cpu is not None:
                self._cpu_first.setdefault(pid, cpu)
                self._cpu_last[pid] = cpu
            if state == "active":
                self._activity.active_sessions += 1
                self._activity.waits[f"{wait_type}:{wait}" if wait_type else "CPU"] += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def start(self) -> PostgresObserver:
        self._sample()  # the backends already open: their CPU counts from here
        self._thread = threading.Thread(target=self._run, name="pg-observer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> PostgresActivity:
        """Stop sampling; call while the service processes still run (their backends' CPU is
        read one last time here)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        activity = self._activity
        activity.cpu_seconds = sum(
            self._cpu_last[pid] - first for pid, first in self._cpu_first.items()
        )
        activity.backends = len(self._cpu_first)
        return activity

    def finish_counters(self, *, settle: float = 1.5) -> None:
        """Add the transaction and row counts; call after the service processes are gone (a
        backend reports its statistics at the latest when it exits, or within a second)."""
        time.sleep(settle)
        after = self._counters()
        before = self._counters_before
        self._activity.transactions = after[0] - before[0]
        self._activity.rows_updated = after[1] - before[1]
        self._activity.rows_inserted = after[2] - before[2]
        self._connection.close()

    def __enter__(self) -> PostgresObserver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._stop.is_set():
            self.stop()
