"""Store ingest: how fast sesender stores recipients, against plain sqlite3 on the same schema.

What it measures, in one run, on one machine, with the same rows:

* **sesender**: ``--recipients`` recipients (default 1,000,000) stored through the store's public
  API as ``--recipients / --per-submission`` submissions (default 100 of 10,000, the API's maximum
  per request): ``open_sqlite_store(path)`` then ``await store.submit(Submission(...))`` with one
  ``NewMessage`` per submission, each submission one transaction. The clock runs from the first
  ``submit`` to the return of the last one, so it includes everything a ``POST /v1/messages`` pays
  in the store: the hop into the writer thread lane, the content upsert (deduplicated: every
  submission carries the same newsletter), building the rows, the inserts, the per-topic counter.
  Opening, migrating and closing the database are outside the clock.
* **baseline**: a fresh database created by ``sesender.store.migrate(path)`` (same schema, same
  indexes), one row inserted into ``contents`` up front, then plain ``sqlite3`` ``executemany``
  of the same ``requests`` rows, in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per ``--per-submission``
  rows, on one connection with the store's own PRAGMAs (WAL, ``synchronous=NORMAL``, cache, mmap),
  called directly from the main thread. The rows are built before the clock starts: this is the
  floor of what SQLite needs for these inserts from Python.

Both write to fresh files in ``--directory`` (default: a temporary directory). The two are run
``--repeats`` times, interleaved (and alternating which goes first) because the machine is shared
and noisy; each pair gives a ratio sesender / baseline (rows/s), and the headline is the median
ratio. Both databases are checked to hold exactly ``--recipients`` rows afterwards.

    python -m bench.store_ingest                      # 1,000,000 as 100 x 10,000, 3 repeats
    python -m bench.store_ingest --repeats 5
    python -m bench.store_ingest --quick              # tiny, for the CI smoke test
    python -m bench.store_ingest --merge-fields       # templates: three data fields per row

With ``--merge-fields`` every recipient carries merge-field values (three short fields, as a
template's ``data``): sesender stores them through the same ``submit``; the baseline's rows get the
same values as JSON text in the ``data`` column, serialised before its clock starts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from bench.common import (
    BODY,
    SUBJECT,
    add_output_arguments,
    format_table,
    make_emails,
    quiet_logging,
    verdict,
    write_result,
)
from sesender.models import NewMessage, Submission
from sesender.store import migrate, open_sqlite_store
from sesender.store.schema import CONNECTION_PRAGMAS

NAME = "store_ingest"
AIM = 0.6
TOPIC = "bench_ingest"
INSERT_SQL = (
    "INSERT INTO requests (topic_id, content_id, email, status, attempts, due_at,"
    " created_at, updated_at) VALUES (?, ?, ?, 0, 0, ?, ?, ?)"
)
INSERT_DATA_SQL = (
    "INSERT INTO requests (topic_id, content_id, email, status, attempts, due_at,"
    " created_at, updated_at, data) VALUES (?, ?, ?, 0, 0, ?, ?, ?, ?)"
)


def merge_data(email: str) -> dict[str, str]:
    """The merge-field values ``--merge-fields`` gives each recipient."""
    return {"first_name": email.split("@")[0], "plan": "pro", "credits": str(len(email))}


def batches(emails: Sequence[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(emails[start : start + size]) for start in range(0, len(emails), size)]


def count_rows(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    finally:
        connection.close()


async def ingest_with_store(
    path: Path, email_batches: Sequence[tuple[str, ...]], merge_fields: bool = False
) -> float:
    """Seconds to store every batch through ``SqliteStore.submit``, one submission per batch."""
    now = time.time_ns() // 1_000_000
    submissions = [
        Submission(
            messages=(
                NewMessage(
                    topic_id=TOPIC,
                    subject=SUBJECT,
                    body=BODY,
                    emails=emails,
                    data=tuple(merge_data(email) for email in emails) if merge_fields else None,
                ),
            ),
            due_at_ms=now,
            created_at_ms=now,
        )
        for emails in email_batches
    ]
    async with open_sqlite_store(path) as store:
        started = time.perf_counter()
        for submission in submissions:
            await store.submit(submission)
        return time.perf_counter() - started


def ingest_plain(
    path: Path, email_batches: Sequence[tuple[str, ...]], merge_fields: bool = False
) -> float:
    """Seconds for plain ``executemany`` of the same rows, one transaction per batch."""
    migrate(path)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in CONNECTION_PRAGMAS:
            connection.execute(pragma)
        now = time.time_ns() // 1_000_000
        content_id = connection.execute(
            "INSERT INTO contents (digest, subject, body, created_at) VALUES (?, ?, ?, ?)"
            " RETURNING id",
            (b"baseline-digest", SUBJECT, BODY, now),
        ).fetchone()[0]
        row_batches: list[list[tuple[object, ...]]] = [
            [
                (TOPIC, content_id, email, now, now, now, json.dumps(merge_data(email)))
                if merge_fields
                else (TOPIC, content_id, email, now, now, now)
                for email in emails
            ]
            for emails in email_batches
        ]
        sql = INSERT_DATA_SQL if merge_fields else INSERT_SQL
        started = time.perf_counter()
        for rows in row_batches:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(sql, rows)
            connection.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        connection.close()


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    total = arguments.recipients
    email_batches = batches(make_emails(total), arguments.per_submission)
    directory = Path(tempfile.mkdtemp(prefix="sesender-ingest-", dir=arguments.directory))
    pairs: list[dict[str, float]] = []
    try:
        for repeat in range(arguments.repeats):
            ours_path = directory / f"store-{repeat}.db"
            plain_path = directory / f"plain-{repeat}.db"
            timings: dict[str, float] = {}
            order = ("store", "plain") if repeat % 2 == 0 else ("plain", "store")
            for which in order:
                if which == "store":
                    timings["store"] = trio.run(
                        ingest_with_store, ours_path, email_batches, arguments.merge_fields
                    )
                else:
                    timings["plain"] = ingest_plain(
                        plain_path, email_batches, arguments.merge_fields
                    )
            for path in (ours_path, plain_path):
                rows = count_rows(path)
                if rows != total:
                    raise RuntimeError(f"{path.name} holds {rows} rows, expected {total}")
            pair = {
                "store_seconds": timings["store"],
                "plain_seconds": timings["plain"],
                "store_rows_per_second": total / timings["store"],
                "plain_rows_per_second": total / timings["plain"],
            }
            pair["ratio"] = pair["store_rows_per_second"] / pair["plain_rows_per_second"]
            pairs.append(pair)
            for path in directory.iterdir():
                path.unlink()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    median_ratio = statistics.median(pair["ratio"] for pair in pairs)
    return {
        "recipients": total,
        "merge_fields": arguments.merge_fields,
        "per_submission": arguments.per_submission,
        "submissions": len(email_batches),
        "repeats": pairs,
        "store_rows_per_second_median": statistics.median(
            pair["store_rows_per_second"] for pair in pairs
        ),
        "plain_rows_per_second_median": statistics.median(
            pair["plain_rows_per_second"] for pair in pairs
        ),
        "ratio_median": median_ratio,
        "aim": AIM,
        "passed": median_ratio >= AIM,
    }


def report(figures: dict[str, Any]) -> str:
    rows: list[tuple[object, ...]] = [
        (
            index + 1,
            pair["store_rows_per_second"],
            pair["plain_rows_per_second"],
            pair["ratio"],
        )
        for index, pair in enumerate(figures["repeats"])
    ]
    rows.append(
        (
            "median",
            figures["store_rows_per_second_median"],
            figures["plain_rows_per_second_median"],
            figures["ratio_median"],
        )
    )
    table = format_table(
        ("repeat", "sesender store (rows/s)", "plain sqlite3 (rows/s)", "ratio"), rows
    )
    summary = (
        f"{figures['recipients']:,} recipients"
        f"{' with merge-field data' if figures.get('merge_fields') else ''} as"
        f" {figures['submissions']} submissions of {figures['per_submission']:,};"
        f" aim: ratio >= {AIM}: {verdict(figures['passed'])} ({figures['ratio_median']:.2f})"
    )
    return f"{table}\n\n{summary}"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store_ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--per-submission", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--merge-fields", action="store_true", help="each recipient with three data fields"
    )
    parser.add_argument(
        "--directory", type=Path, default=None, help="where the database files go (temporary)"
    )
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.recipients = 2_000
        arguments.per_submission = 500
        arguments.repeats = 1
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    quiet_logging()
    figures = run(arguments)
    print(report(figures))
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
