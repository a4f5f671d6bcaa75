"""The reputation guard's cost: its counters on the send path, and one evaluation of its window.

Two measurements, each against a baseline taken in the same run on the same machine:

1. **Recording sends.** ``--emails`` emails (default 20,000, in topics of 1,000) are claimed and
   recorded ``Sent`` in batches of 100, as the post-processor does (``claim_due`` then
   ``record_outcomes``, the store's own functions on one connection, in this thread), into two
   fresh databases: one with the schema as shipped (migration 7's trigger adds every sent row to
   the guard's account and topic buckets) and one where that trigger was dropped (the baseline:
   sesender before the guard). Only ``record_outcomes`` is timed: wall time and this thread's CPU
   time per email. The two alternate ``--repeats`` times; the headline is the median ratio
   guard / baseline of CPU per email.
2. **One evaluation.** A database with ``--history`` sent emails (default 100,000) in 100 topics,
   their send times spread over the 24-hour window, every tenth with a permanent bounce recorded
   through ``record_feedback`` (so the triggers fill the counters as in production). Timed: the
   guard's ``reputation_counts`` (sums over the window's buckets), against the same figures
   computed from the emails and results themselves (what the counters avoid: a scan of the
   window's rows of ``requests`` joined to ``results``). Both are checked to agree.

    python -m bench.guard_counters                 # 20,000 emails x 3 repeats; 100,000 history
    python -m bench.guard_counters --quick         # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    BODY,
    SUBJECT,
    add_output_arguments,
    format_table,
    write_result,
)
from sesender.models import (
    FeedbackItem,
    GuardCounts,
    NewMessage,
    ResultEvent,
    Sent,
    Submission,
)
from sesender.store import sqlite_queries as queries
from sesender.store import sqlite_reputation as reputation

NOW = 1_768_471_200_000
TOPIC_SIZE = 1000
BATCH = 100
DAY_MS = 86_400_000


def fresh(path: Path, *, guard: bool) -> sqlite3.Connection:
    connection = queries.connect(str(path), busy_timeout=30)
    queries.apply_migrations(connection)
    if not guard:
        connection.execute("DROP TRIGGER requests_guard_sends")
    return connection


def store_emails(connection: sqlite3.Connection, count: int, *, at: int) -> None:
    for start in range(0, count, TOPIC_SIZE):
        emails = tuple(f"user{i}@example.com" for i in range(start, min(count, start + TOPIC_SIZE)))
        message = NewMessage(topic_id=f"topic-{start // TOPIC_SIZE}", subject=SUBJECT, body=BODY,
                             emails=emails)  # fmt: skip
        queries.submit(connection, Submission((message,), due_at_ms=at, created_at_ms=at), None, 0)


def record_sends(connection: sqlite3.Connection, count: int) -> dict[str, float]:
    """Claim and record ``count`` emails Sent in batches; time only ``record_outcomes``."""
    wall = cpu = 0.0
    done = 0
    while done < count:
        batch = queries.claim_due(connection, NOW, BATCH)
        outcomes = [
            Sent(e.request_id, f"ses-{e.request_id}", attempts=1, sent_at_ms=NOW)
            for e in batch.emails
        ]
        started_wall, started_cpu = time.perf_counter(), time.thread_time()
        queries.record_outcomes(connection, outcomes, NOW)
        wall += time.perf_counter() - started_wall
        cpu += time.thread_time() - started_cpu
        done += len(outcomes)
    return {"wall_us_per_email": wall / count * 1e6, "cpu_us_per_email": cpu / count * 1e6}


def measure_sends(directory: Path, emails: int, repeats: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for repeat in range(repeats):
        figures: dict[str, dict[str, float]] = {}
        order = (True, False) if repeat % 2 == 0 else (False, True)
        for guard in order:
            path = directory / f"sends-{repeat}-{'guard' if guard else 'baseline'}.db"
            connection = fresh(path, guard=guard)
            try:
                store_emails(connection, emails, at=NOW)
                figures["guard" if guard else "baseline"] = record_sends(connection, emails)
                sent = connection.execute(
                    "SELECT COUNT(*) FROM requests WHERE status = 2"
                ).fetchone()[0]
                assert sent == emails, sent
                if guard:
                    counted = reputation.reputation_counts(connection, NOW - DAY_MS)
                    assert counted.account.sends == emails, counted.account
            finally:
                connection.close()
        rows.append(
            {
                "repeat": repeat + 1,
                "guard_cpu_us": figures["guard"]["cpu_us_per_email"],
                "baseline_cpu_us": figures["baseline"]["cpu_us_per_email"],
                "guard_wall_us": figures["guard"]["wall_us_per_email"],
                "baseline_wall_us": figures["baseline"]["wall_us_per_email"],
                "cpu_ratio": figures["guard"]["cpu_us_per_email"]
                / figures["baseline"]["cpu_us_per_email"],
            }
        )
    return {"rows": rows, "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rows)}


def build_history(path: Path, count: int) -> sqlite3.Connection:
    """``count`` emails sent over the last day (in topics of 1,000), every tenth bounced."""
    connection = fresh(path, guard=True)
    store_emails(connection, count, at=NOW - DAY_MS)
    step = (DAY_MS - 120_000) / count  # one send every ~0.86 s at 100,000 a day
    done = 0
    while done < count:
        batch = queries.claim_due(connection, NOW, 1000)
        sent_at = {
            e.request_id: NOW - DAY_MS + 60_000 + int((done + k) * step)
            for k, e in enumerate(batch.emails)
        }
        queries.record_outcomes(
            connection,
            [
                Sent(e.request_id, f"ses-{e.request_id}", 1, sent_at[e.request_id])
                for e in batch.emails
            ],
            NOW,
        )
        bounces = [
            FeedbackItem(
                events=(
                    ResultEvent(
                        "Bounce",
                        sent_at[e.request_id] + 1000,
                        message_id=f"ses-{e.request_id}",
                        detail=json.dumps({"bounce_type": "Permanent"}),
                    ),
                ),
                source_id=f"sns-{e.request_id}",
            )
            for e in batch.emails
            if e.request_id % 10 == 0
        ]
        queries.record_feedback(connection, bounces, 0, NOW)
        done += len(batch.emails)
    return connection


def scan_counts(connection: sqlite3.Connection, since_ms: int) -> tuple[GuardCounts, int]:
    """The account-wide figures from the emails themselves (no counters): what the guard avoids.
    Returns the counts and how many topics have a bounce."""
    rows = connection.execute(
        "SELECT r.topic_id, COUNT(*), SUM(EXISTS (SELECT 1 FROM results AS x"
        " WHERE x.request_id = r.id AND x.event_type = 'Bounce'"
        " AND json_extract(x.detail, '$.bounce_type') = 'Permanent'))"
        " FROM requests AS r WHERE r.sent_at >= ? AND r.status = 2 GROUP BY r.topic_id",
        (since_ms,),
    ).fetchall()
    sends = sum(int(row[1]) for row in rows)
    bounces = sum(int(row[2]) for row in rows)
    return GuardCounts(sends=sends, bounces=bounces), sum(1 for row in rows if row[2])


def timed(function: Any, *args: Any, runs: int) -> tuple[float, float, Any]:
    """Median wall and CPU milliseconds of ``runs`` calls, and the last result."""
    walls, cpus = [], []
    result = None
    for _ in range(runs):
        started_wall, started_cpu = time.perf_counter(), time.thread_time()
        result = function(*args)
        walls.append((time.perf_counter() - started_wall) * 1000)
        cpus.append((time.thread_time() - started_cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus), result


def measure_evaluation(directory: Path, history: int, runs: int) -> dict[str, Any]:
    connection = build_history(directory / "history.db", history)
    try:
        since = NOW - DAY_MS
        guard_wall, guard_cpu, counts = timed(
            reputation.reputation_counts, connection, since, runs=runs
        )
        scan_wall, scan_cpu, (scanned, bounced_topics) = timed(
            scan_counts, connection, since, runs=runs
        )
        assert counts.account.sends == scanned.sends == history, (counts.account, scanned)
        assert counts.account.bounces == scanned.bounces, (counts.account, scanned)
        assert len(counts.topics) == bounced_topics
        counter_rows = connection.execute("SELECT COUNT(*) FROM guard_topic_counts").fetchone()[0]
    finally:
        connection.close()
    return {
        "history_emails": history,
        "counter_rows": counter_rows,
        "guard_wall_ms": guard_wall,
        "guard_cpu_ms": guard_cpu,
        "scan_wall_ms": scan_wall,
        "scan_cpu_ms": scan_cpu,
        "speedup": scan_cpu / guard_cpu if guard_cpu else float("inf"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.guard_counters", description=__doc__)
    parser.add_argument("--emails", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5, help="timed evaluations (median)")
    parser.add_argument("--directory", type=Path, default=None)
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.emails, arguments.repeats, arguments.history, arguments.runs = 500, 1, 2000, 1
    with tempfile.TemporaryDirectory(dir=arguments.directory) as temporary:
        directory = Path(temporary)
        sends = measure_sends(directory, arguments.emails, arguments.repeats)
        evaluation = measure_evaluation(directory, arguments.history, arguments.runs)
    print(f"Recording sends: {arguments.emails:,} emails, batches of {BATCH}")
    print(
        format_table(
            [
                "repeat",
                "guard CPU µs/email",
                "baseline CPU µs/email",
                "guard wall µs/email",
                "baseline wall µs/email",
                "CPU ratio",
            ],
            [
                (
                    r["repeat"],
                    r["guard_cpu_us"],
                    r["baseline_cpu_us"],
                    r["guard_wall_us"],
                    r["baseline_wall_us"],
                    r["cpu_ratio"],
                )
                for r in sends["rows"]
            ],
        )
    )
    print(f"median CPU ratio guard / baseline: {sends['median_cpu_ratio']:.3f}")
    print()
    print(
        f"One evaluation over 24 h: {evaluation['history_emails']:,} sent emails,"
        f" {evaluation['counter_rows']:,} topic counter rows"
    )
    print(
        format_table(
            ["", "wall ms", "CPU ms"],
            [
                ("guard (counters)", evaluation["guard_wall_ms"], evaluation["guard_cpu_ms"]),
                (
                    "scan of requests + results",
                    evaluation["scan_wall_ms"],
                    evaluation["scan_cpu_ms"],
                ),
            ],
        )
    )
    print(f"the counters are {evaluation['speedup']:.0f}x cheaper in CPU")
    write_result(
        "guard_counters",
        arguments.results_dir,
        arguments,
        {"sends": sends, "evaluation": evaluation},
    )


if __name__ == "__main__":
    main()
