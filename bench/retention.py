"""Retention benchmark: prune 1,000,000 old emails while sending at R = 1000/s.

What it measures, against the real service run as a process (the ``sesender`` console script,
memory backend, JSON logs):

1. **Bytes per email.** A database of ``--emails`` (default 1,000,000) old emails is built by direct
   SQL in the shape the service leaves behind: campaigns of 10,000 emails sharing one content (a
   few hundred bytes of HTML), every email ``Sent`` with an SES-length message id, a ``Delivery``
   result for each and an ``Open`` for one in five, the counters (``topic_counts``,
   ``topic_result_counts``, ``sent_minutes``, ``contents.refs``) filled as the triggers and the
   store would have. Its used pages (page count minus free pages, times the page size) divided by
   the emails is the figure. The same is done for ``--schema-emails`` (default 100,000) emails at
   schema version 6 (before retention) and at the latest version, to show what the retention
   schema costs per email.
2. **Pruning while sending.** Two runs on two copies of that database, one after the other, each
   sending ``R`` emails/s (``--rate``, default 1000) from emails submitted through the API (30 s
   worth at the start, then 10 s worth every 10 s from a thread), while a probe thread times API
   calls one at a time (``GET /v1/topics/{id}``, ``GET /v1/messages/{id}``, a one-recipient
   ``POST /v1/messages`` scheduled far ahead: a write) every ``--probe-interval`` seconds:

   - **prune**: ``RETENTION_DAYS=30``, ``HOUSEKEEPING_INTERVAL_SECONDS=--start-after``: the first
     housekeeping run deletes every old email (all older than 30 days), batch by batch, then
     gives the pages back. Its window is taken from its ``emails_pruned`` log line (end time and
     duration). The run goes on ``--tail`` seconds after it.
   - **baseline**: the same with ``RETENTION_DAYS=0`` (nothing pruned), as long as the prune run.

   Reported for the pruning window (and the same seconds of the baseline run): the mean send rate
   from ``/v1/stats/send-rate`` (per-second counts of successful sends) over R, the API probe's p50,
   p99 and max, and the service's CPU seconds (``/proc``) over the window; the CPU cost per pruned
   email is the difference of the two runs' CPU over the window divided by the emails pruned. Aims:
   rate within 2 % of R during pruning, API p99 < 100 ms. The database file's size before and
   after each run is reported too (after: the file shrank by the vacuumed pages).

    python -m bench.retention                    # 1,000,000 emails at 1000/s
    python -m bench.retention --quick            # tiny, for the smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.api import percentile
from bench.common import BODY, SUBJECT, add_output_arguments, format_table, verdict, write_result
from bench.webhook import Process, console_script, process_cpu_seconds, progress
from sesender.models import Status
from sesender.store.schema import LATEST_VERSION, MIGRATIONS

NAME = "retention"
API_KEY = "bench"
DAY_MS = 86_400_000
CAMPAIGN = 10_000
RATE_TOLERANCE = 0.02
P99_AIM_MS = 100.0
LOAD_TOPIC = "bench_retention_load"
FAR_FUTURE = "2099-01-01T00:00:00+00:00"


# --- the database --------------------------------------------------------------------------


def build_database(path: Path, emails: int, *, version: int = LATEST_VERSION) -> dict[str, Any]:
    """``emails`` old sent emails at schema ``version``, counters filled; returns size figures."""
    if path.exists():
        path.unlink()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    connection.execute("PRAGMA journal_mode = WAL")
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        connection.executescript(f"BEGIN;{script}PRAGMA user_version = {number};COMMIT;")
    # 100 to 110 days ago, one email every few seconds: sent_minutes gets real buckets.
    oldest = time.time_ns() // 1_000_000 - 110 * DAY_MS
    step = max(1, (10 * DAY_MS) // max(1, emails))
    campaigns = -(-emails // CAMPAIGN)
    sent = Status.SENT.value
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO contents (id, digest, subject, body, created_at) VALUES (?, ?, ?, ?, ?)",
        (
            (n + 1, n.to_bytes(32, "big"), SUBJECT, f"{BODY}<!-- {n} -->", oldest)
            for n in range(campaigns)
        ),
    )
    connection.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " INSERT INTO requests (id, topic_id, content_id, email, status, attempts, due_at,"
        " message_id, created_at, updated_at, sent_at)"
        " SELECT i, 'old-' || ((i - 1) / ?), 1 + (i - 1) / ?, 'reader' || i || '@example.com',"
        f" {sent}, 1, ? + i * ?,"
        " printf('0100018c%08x-1a2b3c4d-5e6f-7a8b-9c0d-%012d-000000', i, i),"
        " ? + i * ?, ? + i * ? + 900, ? + i * ? + 800 FROM n",
        (emails, CAMPAIGN, CAMPAIGN, oldest, step, oldest, step, oldest, step, oldest, step),
    )
    for event, every in (("Delivery", 1), ("Open", 5)):
        connection.execute(
            "INSERT INTO results (request_id, topic_id, event_type, count, first_at, last_at)"
            " SELECT id, topic_id, ?, 1, sent_at + 5000, sent_at + 5000 FROM requests"
            " WHERE id % ? = 0",
            (event, every),
        )
    connection.execute(
        f"INSERT INTO topic_counts (topic_id, status, count) SELECT topic_id, {sent}, COUNT(*)"
        " FROM requests GROUP BY topic_id"
    )
    # topic_result_counts: filled by the results trigger above.
    connection.execute(
        "INSERT INTO sent_minutes (minute, count) SELECT sent_at / 60000, COUNT(*) FROM requests"
        " GROUP BY sent_at / 60000"
    )
    connection.execute(
        "INSERT INTO topics (topic_id, created_at, updated_at)"
        " SELECT topic_id, MIN(created_at), MAX(created_at) FROM requests GROUP BY topic_id"
    )
    if any(column[1] == "refs" for column in connection.execute("PRAGMA table_info(contents)")):
        connection.execute(
            "UPDATE contents SET refs = used.n FROM (SELECT content_id, COUNT(*) AS n"
            " FROM requests GROUP BY content_id) AS used WHERE contents.id = used.content_id"
        )
    connection.execute("COMMIT")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    figures = used_bytes(connection, emails)
    connection.close()
    figures["file_bytes"] = path.stat().st_size
    return figures


def used_bytes(connection: sqlite3.Connection, emails: int) -> dict[str, Any]:
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    free = connection.execute("PRAGMA freelist_count").fetchone()[0]
    used = (pages - free) * page_size
    return {"emails": emails, "used_bytes": used, "bytes_per_email": used / max(1, emails)}


# --- one run -------------------------------------------------------------------------------


def service_env(
    database: Path, *, rate: float, retention_days: str, start_after: float
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "SENTRY_", "SES_", "SNS_", "RETENTION_", "HOUSEKEEPING_"))
    }
    env.update(
        SERVER_HOST="127.0.0.1",
        SERVER_PORT="0",
        API_KEY=API_KEY,
        DATABASE_PATH=str(database),
        SENDER_BACKEND="memory",
        MAX_SEND_PER_SECOND=f"{rate:g}",
        SCHEDULER_INTERVAL_SECONDS="1",
        RETENTION_DAYS=retention_days,
        HOUSEKEEPING_INTERVAL_SECONDS=f"{start_after:g}",
        DISK_FREE_WARNING_MB="0",
        LOG_FORMAT="json",
        LOG_LEVEL="info",
    )
    return env


class Probe:
    """Times API calls one at a time from a thread: reads and a small write, in turn."""

    def __init__(self, url: str, interval: float, request_ids: Sequence[int]) -> None:
        self.samples: list[tuple[float, str, float, int]] = []  # (wall time, kind, ms, status)
        self._url = url
        self._interval = interval
        self._ids = request_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        body = {
            "scheduled_at": FAR_FUTURE,
            "messages": [
                {
                    "topic_id": "probe",
                    "emails": ["probe@example.com"],
                    "subject": "s",
                    "content": "c",
                }
            ],
        }
        with httpx.Client(base_url=self._url, headers={"X-API-KEY": API_KEY}, timeout=60) as client:
            turn = 0
            while not self._stop.is_set():
                kind = ("topic", "message", "submit")[turn % 3]
                started = time.perf_counter()
                if kind == "topic":
                    response = client.get(f"/v1/topics/{LOAD_TOPIC}")
                elif kind == "message":
                    response = client.get(f"/v1/messages/{self._ids[turn % len(self._ids)]}")
                else:
                    response = client.post("/v1/messages", json=body)
                elapsed = 1000 * (time.perf_counter() - started)
                self.samples.append((time.time(), kind, elapsed, response.status_code))
                turn += 1
                self._stop.wait(self._interval)


def submit_load(url: str, total: int, *, prefix: str) -> list[int]:
    """Submit ``total`` immediate emails in requests of 10,000; their request ids."""
    ids: list[int] = []
    with httpx.Client(base_url=url, headers={"X-API-KEY": API_KEY}, timeout=120) as client:
        for start in range(0, total, 10_000):
            count = min(10_000, total - start)
            emails = [f"{prefix}-{start + n}@example.org" for n in range(count)]
            response = client.post(
                "/v1/messages",
                json={
                    "messages": [
                        {
                            "topic_id": LOAD_TOPIC,
                            "emails": emails,
                            "subject": SUBJECT,
                            "content": BODY,
                        }
                    ]
                },
            )
            response.raise_for_status()
            first = response.json()["first_request_id"]
            ids.extend(range(first, first + count))
    return ids


def arguments_budget(start_after: float) -> float:
    """How long the prune run may take before the benchmark gives up."""
    return start_after + 1500.0


def merge_history(client: httpx.Client, per_second: dict[int, int]) -> None:
    """Add the last two minutes of per-second sends (complete seconds only) to ``per_second``."""
    history = client.get("/v1/stats/send-rate", params={"seconds": 120}).json()
    for point in history["per_second"]:
        per_second[int(point["t"])] = int(point["sent"])


class Loader:
    """Submits R x 10 s of emails every 10 s from a thread, up to ``seconds`` worth in all."""

    def __init__(self, url: str, rate: float, seconds: float) -> None:
        self._url, self._rate, self._seconds = url, rate, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Loader:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        sent = min(self._seconds, 30)
        while sent < self._seconds and not self._stop.wait(10):
            submit_load(self._url, int(self._rate * 10), prefix=f"load{sent:g}")
            sent += 10


def pruned_line(process: Process) -> dict[str, Any] | None:
    for line in list(process.lines):
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict) and document.get("event") == "emails_pruned":
            return document
    return None


def run_once(
    database: Path,
    *,
    rate: float,
    retention_days: str,
    start_after: float,
    duration: float | None,
    tail: float,
    probe_interval: float,
    load_seconds: float,
) -> dict[str, Any]:
    """One service run; ``duration`` None: until the pruning line, plus ``tail``."""
    size_before = database.stat().st_size
    env = service_env(database, rate=rate, retention_days=retention_days, start_after=start_after)
    process = Process(console_script(), env)
    try:
        listening = process.wait_for_json("event", "listening")
        url = listening["urls"][0].replace("0.0.0.0", "127.0.0.1")
        started = time.time()
        cpu = [(started, process_cpu_seconds(process.process.pid))]
        budget = duration if duration is not None else arguments_budget(start_after)
        # A head start, then R x 10 s every 10 s from a thread (writes during pruning, as in
        # real life); the send-rate history (600 s long) is read every minute and merged.
        ids = submit_load(url, int(rate * min(load_seconds, 30)), prefix="head")
        per_second: dict[int, int] = {}
        line = None
        client = httpx.Client(base_url=url, headers={"X-API-KEY": API_KEY}, timeout=120)
        with (
            client,
            Loader(url, rate, load_seconds),
            Probe(url, probe_interval, ids[:: max(1, len(ids) // 500)]) as probe,
        ):
            last_history = time.time()
            while True:
                time.sleep(0.25)
                now = time.time()
                cpu.append((now, process_cpu_seconds(process.process.pid)))
                if now - last_history >= 60:
                    merge_history(client, per_second)
                    last_history = now
                if duration is None:
                    line = line or pruned_line(process)
                    if line is not None and now > parse_time(line["time"]) + tail:
                        break
                    if now - started > budget:
                        raise RuntimeError("pruning did not finish in time")
                elif now - started >= duration:
                    break
            merge_history(client, per_second)
            storage = client.get("/v1/stats/storage").json()
    finally:
        process.stop()
    return {
        "started": started,
        "ended": time.time(),
        "pruned_line": line,
        "per_second": sorted(per_second.items()),
        "probe": probe.samples,
        "cpu": cpu,
        "storage": storage,
        "file_bytes_before": size_before,
        "file_bytes_after": database.stat().st_size,
    }


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def window_figures(run: dict[str, Any], begin: float, end: float, rate: float) -> dict[str, Any]:
    """Rate, API latency and CPU over the wall-clock window [begin, end) of one run."""
    first, last = math.floor(begin), math.ceil(end)  # the whole seconds the window touches
    seconds = [sent for second, sent in run["per_second"] if first <= second < last]
    latencies = [ms for at, _, ms, _ in run["probe"] if begin <= at < end]
    statuses = sorted({status for at, _, _, status in run["probe"] if begin <= at < end})
    cpu_points = [(at, cpu) for at, cpu in run["cpu"] if begin <= at <= end]
    cpu = cpu_points[-1][1] - cpu_points[0][1] if len(cpu_points) > 1 else float("nan")
    mean = sum(seconds) / len(seconds) if seconds else float("nan")
    return {
        "seconds": len(seconds),
        "mean_rate": mean,
        "rate_ratio": mean / rate,
        "min_second": min(seconds, default=0),
        "api_calls": len(latencies),
        "api_statuses": statuses,
        "api_p50_ms": percentile(latencies, 0.5),
        "api_p99_ms": percentile(latencies, 0.99),
        "api_max_ms": max(latencies, default=float("nan")),
        "cpu_seconds": cpu,
    }


# --- the whole benchmark ----------------------------------------------------------------------


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-retention-", dir=arguments.directory))
    try:
        progress(f"schema comparison: {arguments.schema_emails:,} emails at versions 6 and 7")
        schema = {
            f"v{version}": build_database(
                directory / f"schema-v{version}.db", arguments.schema_emails, version=version
            )
            for version in (6, LATEST_VERSION)
        }
        source = arguments.old_database or directory / "old.db"
        if arguments.old_database is not None and source.exists():
            progress(f"reusing {source}")
            connection = sqlite3.connect(source)
            database = used_bytes(connection, arguments.emails)
            connection.close()
            database["file_bytes"] = source.stat().st_size
        else:
            progress(f"building {arguments.emails:,} old emails")
            built = time.perf_counter()
            database = build_database(source, arguments.emails)
            database["build_seconds"] = time.perf_counter() - built
        runs: dict[str, Any] = {}
        for side in ("prune", "baseline"):
            copy = directory / f"{side}.db"
            shutil.copy(source, copy)
            progress(f"{side} run at {arguments.rate:g}/s")
            runs[side] = run_once(
                copy,
                rate=arguments.rate,
                retention_days="30" if side == "prune" else "0",
                start_after=arguments.start_after,
                duration=None
                if side == "prune"
                else runs["prune"]["ended"] - runs["prune"]["started"],
                tail=arguments.tail,
                probe_interval=arguments.probe_interval,
                load_seconds=arguments.load_seconds,
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    prune, baseline = runs["prune"], runs["baseline"]
    line = prune["pruned_line"]
    end = parse_time(line["time"])
    begin = end - float(line["seconds"])
    offset = baseline["started"] - prune["started"]
    during = window_figures(prune, begin, end, arguments.rate)
    same_seconds = window_figures(baseline, begin + offset, end + offset, arguments.rate)
    pruned = int(line["emails"])
    extra_cpu = during["cpu_seconds"] - same_seconds["cpu_seconds"]
    return {
        "rate": arguments.rate,
        "schema": schema,
        "database": database,
        "pruned": {
            key: line[key]
            for key in ("emails", "results", "contents", "batches", "pages_freed", "seconds")
        },
        "prune_rate_per_second": pruned / float(line["seconds"]),
        "during_pruning": during,
        "baseline_same_seconds": same_seconds,
        "extra_cpu_seconds": extra_cpu,
        "extra_cpu_us_per_pruned_email": 1e6 * extra_cpu / max(1, pruned),
        "file_bytes": {
            "prune_before": prune["file_bytes_before"],
            "prune_after": prune["file_bytes_after"],
            "baseline_after": baseline["file_bytes_after"],
        },
        "storage_after_prune": prune["storage"],
        "rate_ok": abs(during["rate_ratio"] - 1) <= RATE_TOLERANCE,
        "p99_ok": during["api_p99_ms"] < P99_AIM_MS,
        "api_all_ok": during["api_statuses"] == [200],
    }


def report(figures: dict[str, Any]) -> str:
    schema = figures["schema"]
    rows = [
        [name, data["emails"], data["used_bytes"], round(data["bytes_per_email"], 1)]
        for name, data in schema.items()
    ]
    database = figures["database"]
    rows.append(
        [
            "latest (benchmark database)",
            database["emails"],
            database["used_bytes"],
            round(database["bytes_per_email"], 1),
        ]
    )
    lines = [
        "Database bytes per email (used pages / emails):",
        "",
        format_table(["schema", "emails", "used bytes", "bytes per email"], rows),
        "",
    ]
    pruned = figures["pruned"]
    lines += [
        f"Pruned {pruned['emails']:,} emails, {pruned['results']:,} results and"
        f" {pruned['contents']:,} contents in {pruned['batches']:,} batches and"
        f" {float(pruned['seconds']):.1f} s ({figures['prune_rate_per_second']:,.0f} emails/s),"
        f" freeing {pruned['pages_freed']:,} pages.",
        "",
    ]
    during, baseline = figures["during_pruning"], figures["baseline_same_seconds"]
    keys = (
        "seconds",
        "mean_rate",
        "rate_ratio",
        "min_second",
        "api_calls",
        "api_p50_ms",
        "api_p99_ms",
        "api_max_ms",
        "cpu_seconds",
    )
    lines.append(
        format_table(
            ["", *keys],
            [
                ["while pruning", *(during[key] for key in keys)],
                ["baseline, same seconds", *(baseline[key] for key in keys)],
            ],
        )
    )
    files = figures["file_bytes"]
    lines += [
        "",
        f"Extra service CPU while pruning: {figures['extra_cpu_seconds']:.2f} s"
        f" ({figures['extra_cpu_us_per_pruned_email']:.1f} us per pruned email).",
        f"Database file: {files['prune_before']:,} bytes before,"
        f" {files['prune_after']:,} after pruning"
        f" (baseline run: {files['baseline_after']:,}).",
        f"Rate within {RATE_TOLERANCE:.0%} of R while pruning: {verdict(figures['rate_ok'])};"
        f" API p99 < {P99_AIM_MS:g} ms: {verdict(figures['p99_ok'])};"
        f" every API answer 200: {verdict(figures['api_all_ok'])}.",
    ]
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retention", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--emails", type=int, default=1_000_000, help="old emails to prune")
    parser.add_argument("--schema-emails", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="R: emails/s sent meanwhile")
    parser.add_argument(
        "--start-after",
        type=float,
        default=40.0,
        help="seconds before pruning starts (the load is submitted meanwhile)",
    )
    parser.add_argument("--tail", type=float, default=5.0, help="seconds measured after pruning")
    parser.add_argument("--probe-interval", type=float, default=0.05)
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=1800.0,
        help="emails submitted: R times this in all (30 s worth at the start, then 10 s worth"
        " every 10 s; pruning must end before they run out)",
    )
    parser.add_argument(
        "--directory",
        type=Path,
        default=None,
        help="where the databases go (default: a temporary directory)",
    )
    parser.add_argument(
        "--old-database",
        type=Path,
        default=None,
        help="keep the built database of old emails here and reuse it when it exists (it is"
        " copied for each run, never changed)",
    )
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.emails, arguments.schema_emails, arguments.rate = 3_000, 1_000, 200.0
        arguments.start_after, arguments.tail, arguments.load_seconds = 1.0, 0.5, 30.0
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    figures = run(arguments)
    print(report(figures))
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    progress(f"wrote {path}")
    return figures


if __name__ == "__main__":
    main()
