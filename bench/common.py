"""What every benchmark shares: the machine description, tables, JSON results, service set-up.

Every benchmark prints its figures as a Markdown table (so they paste into
``docs/performance.md`` as they are) and writes the same figures, with the machine description
and the arguments, to ``bench/results/<name>.json`` (``--results-dir`` to put them elsewhere).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sesender.models import NewMessage, Submission
from sesender.store.base import Store

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DOCS_DIR = REPO_DIR / "docs"

#: One representative newsletter: a few hundred bytes of HTML with a closing body tag.
SUBJECT = "January newsletter"
BODY = (
    "<html><body><h1>Hello!</h1>"
    + "<p>This month: what we shipped, what we learned, and what comes next.</p>" * 4
    + '<p><a href="https://example.com/read">Read more</a></p></body></html>'
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the figures depend on: cores, CPU, Python, SQLite, and when they were measured."""
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        # The machine is shared: how busy it was when the result was written.
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="where to write <name>.json (default: bench/results)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, for the CI smoke test: proves the benchmark runs, measures nothing",
    )


def format_number(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    cells = [list(headers), *([format_number(value) for value in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(cells[0]), separator, *(line(row) for row in cells[1:])])


def write_result(
    name: str, results_dir: Path, arguments: argparse.Namespace, figures: Mapping[str, Any]
) -> Path:
    """Write ``<results_dir>/<name>.json``: machine, arguments and figures."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    payload = {
        "benchmark": name,
        "machine": machine_info(),
        "arguments": {key: str(value) for key, value in vars(arguments).items()},
        "figures": figures,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def quiet_logging() -> None:
    """Only warnings and errors from the service while it is being measured."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


class ErrorCounter(logging.Handler):
    """Counts the service's ERROR log records while installed (``with ErrorCounter() as c``)
    and keeps the first few messages: a benchmark run that logs errors is not a clean run."""

    def __init__(self, keep: int = 3) -> None:
        super().__init__(level=logging.ERROR)
        self.count = 0
        self.samples: list[str] = []
        self._keep = keep

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.samples) < self._keep:
            self.samples.append(f"{record.name}: {record.getMessage()}")

    def __enter__(self) -> ErrorCounter:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger().removeHandler(self)

    def as_dict(self) -> dict[str, Any]:
        return {"errors_logged": self.count, "error_samples": self.samples}


@dataclass(frozen=True, slots=True)
class ThreadTimes:
    """Where the calling thread's time went: on a CPU, or runnable but waiting for one.

    ``waiting`` comes from ``/proc/thread-self/schedstat`` (0 where it is missing): on a shared
    machine it is the time other processes took from us. Subtract two snapshots.
    """

    wall: float
    on_cpu: float
    waiting: float

    @classmethod
    def now(cls) -> ThreadTimes:
        try:
            fields = Path("/proc/thread-self/schedstat").read_text().split()
            waiting = int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            waiting = 0.0
        return cls(wall=time.perf_counter(), on_cpu=time.thread_time(), waiting=waiting)

    def since(self, earlier: ThreadTimes) -> dict[str, float]:
        wall = self.wall - earlier.wall
        on_cpu = self.on_cpu - earlier.on_cpu
        waiting = self.waiting - earlier.waiting
        return {
            "thread_on_cpu_seconds": on_cpu,
            "thread_waiting_for_cpu_seconds": waiting,
            "thread_on_cpu_share": on_cpu / wall if wall else 0.0,
            "thread_waiting_for_cpu_share": waiting / wall if wall else 0.0,
        }


def service_values(database: Path, **settings: str) -> dict[str, str]:
    """The environment ``load_config`` reads for an in-process service on a free port."""
    values = {
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": "0",
        "API_KEY": "bench",
        "DATABASE_PATH": str(database),
        "LOG_LEVEL": "warning",
    }
    values.update(settings)
    return values


def make_emails(count: int, *, start: int = 0, domain: str = "example.com") -> tuple[str, ...]:
    return tuple(f"user{index}@{domain}" for index in range(start, start + count))


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def submit_emails(
    store: Store, topic: str, emails: Sequence[str], *, per_submission: int = 10_000
) -> int:
    """Store ``emails`` as immediate submissions of at most ``per_submission`` recipients each
    (the API's limit per request), one transaction each; return the number stored."""
    stored = 0
    for start in range(0, len(emails), per_submission):
        now = wall_ms()
        message = NewMessage(
            topic_id=topic,
            subject=SUBJECT,
            body=BODY,
            emails=tuple(emails[start : start + per_submission]),
        )
        receipt = await store.submit(
            Submission(messages=(message,), due_at_ms=now, created_at_ms=now)
        )
        stored += receipt.stored
    return stored


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"
