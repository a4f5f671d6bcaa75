"""What the webhook triggers cost the bulk outcome path (the post-processor's ``record_outcomes``).

Three SQLite databases in a temporary directory, each with ``--emails`` claimed emails, get their
``Sent`` outcomes recorded in batches of ``--batch`` (one transaction each, the bulk
``UPDATE ... FROM json_each``): the schema **without** the three webhook triggers (the baseline,
dropped after migrating), the schema **as migrated with no endpoint** (the triggers' condition
finds no subscriber: what every deployment without webhooks pays), and **one endpoint subscribed
to** ``email.sent`` (one event row written per email, in the same statement). The figure is the
CPU time of this thread per outcome, best and median of ``--repeats`` interleaved runs.

Aim: with no subscriber, within 10 % of the baseline (best against best).

    python -m bench.webhook_triggers
    python -m bench.webhook_triggers --quick
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import add_output_arguments, format_table, verdict, write_result
from sesender.models import NewMessage, Sent, Submission
from sesender.store import sqlite_queries as queries
from sesender.store import sqlite_webhooks as webhooks
from sesender.webhooks.models import NewEndpoint

NAME = "webhook_triggers"
AIM = 1.10
TRIGGERS = ("webhook_on_status", "webhook_result_inserted", "webhook_result_repeated")
MODES = ("no triggers (baseline)", "triggers, no subscriber", "one subscriber")


def prepare(path: Path, mode: str, emails: int) -> tuple[sqlite3.Connection, list[int]]:
    connection = queries.connect(str(path), busy_timeout=5)
    queries.apply_migrations(connection)
    if mode == MODES[0]:
        for trigger in TRIGGERS:
            connection.execute(f"DROP TRIGGER {trigger}")
    if mode == MODES[2]:
        endpoint = NewEndpoint("ep", "https://hooks.example.com/", ("email.sent",), "", "whsec_x")
        webhooks.create_endpoint(connection, endpoint, 0)
    message = NewMessage(
        topic_id="t",
        subject="s",
        body="b",
        emails=tuple(f"user{i}@example.com" for i in range(emails)),
    )
    queries.submit(
        connection, Submission(messages=(message,), due_at_ms=0, created_at_ms=0), None, 0
    )
    claimed = queries.claim_due(connection, 1, emails)
    return connection, [email.request_id for email in claimed.emails]


def measure(directory: Path, mode: str, emails: int, batch: int) -> dict[str, float]:
    path = directory / f"{MODES.index(mode)}.db"
    connection, ids = prepare(path, mode, emails)
    try:
        started = time.thread_time()
        for start in range(0, len(ids), batch):
            outcomes = [Sent(i, f"ses-{i}", 1, 5) for i in ids[start : start + batch]]
            queries.record_outcomes(connection, outcomes, 5)
        cpu = time.thread_time() - started
        events = connection.execute("SELECT COUNT(*) FROM webhook_events").fetchone()[0]
    finally:
        connection.close()
        path.unlink()
    return {"cpu_us_per_outcome": cpu * 1e6 / len(ids), "event_rows": events}


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-webhook-triggers-"))
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        for _ in range(arguments.repeats):
            for mode in MODES:
                runs[mode].append(measure(directory, mode, arguments.emails, arguments.batch))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    best = {mode: min(r["cpu_us_per_outcome"] for r in runs[mode]) for mode in MODES}
    median = {
        mode: statistics.median(r["cpu_us_per_outcome"] for r in runs[mode]) for mode in MODES
    }
    ratio = best[MODES[1]] / best[MODES[0]]
    return {
        "emails": arguments.emails,
        "batch": arguments.batch,
        "runs": runs,
        "best_cpu_us_per_outcome": best,
        "median_cpu_us_per_outcome": median,
        "event_rows": {mode: runs[mode][0]["event_rows"] for mode in MODES},
        "no_subscriber_ratio": ratio,
        "aim": AIM,
        "passed": ratio <= AIM,
    }


def report(figures: dict[str, Any]) -> str:
    table = format_table(
        ["schema", "best CPU µs per outcome", "median", "event rows written"],
        [
            (
                mode,
                figures["best_cpu_us_per_outcome"][mode],
                figures["median_cpu_us_per_outcome"][mode],
                figures["event_rows"][mode],
            )
            for mode in MODES
        ],
    )
    return (
        f"{table}\n\nno subscriber / no triggers (best): {figures['no_subscriber_ratio']:.3f}"
        f" (aim <= {AIM}): {verdict(figures['passed'])}"
    )


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook_triggers", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--emails", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100, help="outcomes per transaction")
    parser.add_argument("--repeats", type=int, default=5)
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.emails = 300
        arguments.repeats = 1
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    figures = run(arguments)
    print(report(figures))
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
