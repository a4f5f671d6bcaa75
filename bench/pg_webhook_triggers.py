"""What the PostgreSQL webhook triggers cost the bulk outcome path, and that it stays linear.

For each mode, a fresh PostgreSQL database (one per mode and repeat, interleaved) gets
``--emails`` claimed emails whose ``Sent`` outcomes are recorded through
``pg_queries.record_outcomes`` in batches of ``--batch`` (one statement each): the schema
**without** the statement-level ``webhook_on_status`` trigger (the baseline, dropped after
migrating), **as migrated with no endpoint**, and **one endpoint subscribed to** ``email.sent``
(one event row per email, written by the trigger in the same statement). The figure is the CPU
time of the PostgreSQL backend (read from ``/proc``, the server runs on this machine) plus this
thread's, per outcome, best and median of ``--repeats``; wall time beside it. The subscriber mode
also runs with batches ten times larger: the per-outcome cost must not grow with the batch (the
trigger groups the transition tables, it never joins them).

Aims: no subscriber within 10 % of the baseline; one subscriber, 10x batch / 1x batch <= 1.5.

    python -m bench.pg_webhook_triggers
    python -m bench.pg_webhook_triggers --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from bench.common import add_output_arguments, format_table, verdict, write_result
from sesender.models import NewMessage, Sent, Submission
from sesender.store import pg_queries
from sesender.store import pg_webhooks as webhooks
from sesender.webhooks.models import NewEndpoint
from tests import postgres_support

NAME = "pg_webhook_triggers"
AIM = 1.10
LINEAR_AIM = 1.5
MODES = (
    "no trigger (baseline)",
    "trigger, no subscriber",
    "one subscriber",
    "one subscriber, 10x batch",
)


def backend_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(mode: str, emails: int, batch: int) -> dict[str, float]:
    if mode == MODES[3]:
        batch *= 10
    with (
        postgres_support.temporary_database("sesender_bench_hooks") as url,
        psycopg.connect(url, autocommit=True) as connection,
    ):
        pg_queries.apply_migrations(connection)
        if mode == MODES[0]:
            connection.execute("DROP TRIGGER webhook_on_status ON requests")
        if mode in MODES[2:]:
            endpoint = NewEndpoint("ep", "https://hooks.example.com/", ("email.sent",), "", "x")
            webhooks.create_endpoint(connection, endpoint, 0)
        message = NewMessage("t", "s", "b", tuple(f"user{i}@example.com" for i in range(emails)))
        pg_queries.submit(
            connection, Submission((message,), due_at_ms=0, created_at_ms=0), None, 0, False
        )
        claimed = pg_queries.claim_due(connection, 1, emails, "bench", {})
        ids = [email.request_id for email in claimed.emails]
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(row[0])
        server_before = backend_cpu_seconds(backend)
        client_before = time.thread_time()
        wall_before = time.perf_counter()
        for start in range(0, len(ids), batch):
            outcomes = [Sent(i, f"ses-{i}", 1, 5) for i in ids[start : start + batch]]
            pg_queries.record_outcomes(connection, outcomes, 5)
        wall = time.perf_counter() - wall_before
        cpu = time.thread_time() - client_before + backend_cpu_seconds(backend) - server_before
        count = connection.execute("SELECT COUNT(*) FROM webhook_events").fetchone()
        assert count is not None
    return {
        "cpu_us_per_outcome": cpu * 1e6 / len(ids),
        "wall_us_per_outcome": wall * 1e6 / len(ids),
        "event_rows": int(count[0]),
    }


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(arguments.repeats):
        for mode in MODES:
            runs[mode].append(measure(mode, arguments.emails, arguments.batch))
    best = {mode: min(r["cpu_us_per_outcome"] for r in runs[mode]) for mode in MODES}
    median = {
        mode: statistics.median(r["cpu_us_per_outcome"] for r in runs[mode]) for mode in MODES
    }
    wall = {mode: min(r["wall_us_per_outcome"] for r in runs[mode]) for mode in MODES}
    ratio = best[MODES[1]] / best[MODES[0]]
    linear = best[MODES[3]] / best[MODES[2]]
    return {
        "emails": arguments.emails,
        "batch": arguments.batch,
        "runs": runs,
        "best_cpu_us_per_outcome": best,
        "median_cpu_us_per_outcome": median,
        "best_wall_us_per_outcome": wall,
        "event_rows": {mode: runs[mode][0]["event_rows"] for mode in MODES},
        "no_subscriber_ratio": ratio,
        "batch_growth_ratio": linear,
        "aim": AIM,
        "linear_aim": LINEAR_AIM,
        "passed": ratio <= AIM and linear <= LINEAR_AIM,
    }


def report(figures: dict[str, Any]) -> str:
    table = format_table(
        ["schema", "best CPU µs per outcome", "median", "best wall µs", "event rows written"],
        [
            (
                mode,
                figures["best_cpu_us_per_outcome"][mode],
                figures["median_cpu_us_per_outcome"][mode],
                figures["best_wall_us_per_outcome"][mode],
                figures["event_rows"][mode],
            )
            for mode in MODES
        ],
    )
    return (
        f"{table}\n\nno subscriber / no trigger (best): {figures['no_subscriber_ratio']:.3f}"
        f" (aim <= {AIM}); 10x batch / 1x batch with a subscriber:"
        f" {figures['batch_growth_ratio']:.3f} (aim <= {LINEAR_AIM}): {verdict(figures['passed'])}"
    )


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pg_webhook_triggers", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--emails", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100, help="outcomes per statement")
    parser.add_argument("--repeats", type=int, default=3)
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.emails = 300
        arguments.batch = 10
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
