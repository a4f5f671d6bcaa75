"""API benchmarks: a 10,000-recipient submission, the open pixel under load, statistics on a
database of 1,000,000 emails.

What it measures, in one run, on one machine, against the real service run as a process (the
``sesender`` console script, memory backend, JSON logs, ``API_KEY=bench``):

1. **Submit.** ``--submit-runs`` (default 20) ``POST /v1/messages`` of ``--recipients`` (default
   10,000) distinct addresses over five domains, one message each (a few hundred bytes of HTML),
   with ``scheduled_at`` in 2099, so that nothing is sent during the measurement (the pipeline
   stays idle: the scheduler never finds a due email and no submission wakes it). The bodies are
   serialised before the clock starts; each run posts a fresh set of addresses. Reported: the
   server's own ``duration_ms`` (from the handler's start to the commit: JSON parsing, address
   validation, the idempotency digest, the store's transaction) and the client's round trip
   (upload of the ~270 KB body, the same, the answer), median and p90. Each run is interleaved
   with a POST of the very same body to the bare app below (which only reads it): the round trip
   of that upload through this HTTP stack, for scale. Aim: median ``duration_ms`` < 100 ms.
2. **Open pixel.** ``--repeats`` (default 5) x (``--open-warmup`` + ``--opens``, default 200 +
   5,000) emails are stored in one topic (scheduled in 2099 as above: an open is recorded by
   request id whatever the email's status), and one ``GET /v1/events/open?request_id=<token>`` is
   prepared per email with a valid token (``TokenSigner(derive_secret(API_KEY)).sign("open",
   id)``). The load generator runs in this benchmark's process, apart from both servers (httpx
   on trio, ``--concurrency`` requests in flight, default 32, kept-alive connections on
   127.0.0.1); every answer must be 200 with the service's PNG. The **baseline** is a bare
   quart-trio app served by hypercorn on trio in its own process, answering the same path with
   the same 1x1 PNG and headers, fetched the very same URLs by the same load generator. The two
   alternate ``--repeats`` times (each sesender repeat opens fresh ids, so every open is a new
   ``results`` row); the headline is the best rate of each and the ratio sesender / baseline
   (aim >= 0.7). The CPU time each server process spent per request over the timed part is also
   reported, with the **CPU ratio** bare / sesender: httpx costs the client more CPU per request
   than either server here, so the client caps both rates and squeezes their ratio towards 1,
   while the CPU ratio says what the servers alone would reach. The pixel answers before the
   open is committed (the result writer group-commits behind it), so afterwards the topic's
   ``result_counts`` must reach ``Open`` = every id opened, and a sample of
   ``GET /v1/messages/{id}`` must show exactly one ``Open``.
3. **Statistics.** A database of ``--emails`` emails (default 1,000,000): a topic of
   ``--big-topic`` (default 500,000) and topics of 10,000 for the rest, stored through the store
   API (``open_sqlite_store`` + ``submit`` of 10,000 per submission, scheduled in 2099), then
   marked by direct SQL in the same transaction style the service uses (``UPDATE ... SET status``,
   so the status triggers keep ``topic_counts`` and ``sent_minutes`` exact): 94 % ``Sent`` with
   ``sent_at`` spread evenly over the last 26 hours (so 24 h covers 92 % of them and the window's
   partial first minute holds real rows), 2 % ``Failed``, 4 % left ``Created`` (due in 2099);
   ``Delivery`` results for half the sent ones and ``Open`` for a fifth (the results trigger keeps
   ``topic_result_counts``). The counters are checked against ``GROUP BY`` counts. The database
   is cached in ``--database-dir`` (default ``bench/results``, gitignored) with a JSON sidecar; a
   later run shifts every timestamp forward by whole minutes instead of rebuilding (``--rebuild``
   to force). The service is started on it and ``--stats-requests`` (default 50, after
   ``--stats-warmup``) of each of ``GET /v1/topics/<the big topic>``, ``GET /v1/topics/<a
   10,000-email topic>``, ``GET /v1/events/counts/sent?hours=24`` and ``GET /health`` (the floor:
   the same HTTP path with no database work) are timed one at a time from this process over a
   kept-alive connection, interleaved in rotating order. Aim: median < 50 ms for the topic and
   the sent count. The answers are checked against the database.

The machine is shared: the services, the baseline and this process (the client) share its cores,
so everything that is compared is measured in the same run, interleaved, and repeated. Every
server starts at once (start-up is mostly imports) and is stopped at once at the end.

    python -m bench.api                         # all three parts, default sizes
    python -m bench.api --part pixel --repeats 7
    python -m bench.api --quick                 # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    BODY,
    SUBJECT,
    add_output_arguments,
    format_table,
    verdict,
    wall_ms,
    write_result,
)
from bench.webhook import Process, console_script, process_cpu_seconds, progress

NAME = "api"
API_KEY = "bench"
PARTS = ("submit", "pixel", "stats")
SUBMIT_AIM_MS = 100.0
PIXEL_AIM = 0.7
STATS_AIM_MS = 50.0
OPEN_PATH = "/v1/events/open"
SUBMIT_PATH = "/v1/messages"
SUBMIT_TOPIC = "bench_api_submit"
OPENS_TOPIC = "bench_api_opens"
BIG_TOPIC = "bench_api_big"
DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.example")
#: Scheduled far ahead: stored, never due while the benchmark runs.
FAR_FUTURE = "2099-01-01T00:00:00+00:00"
FAR_FUTURE_MS = 4_070_908_800_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
#: The statistics database: sent_at spread over this many hours before it was built.
SENT_SPREAD_HOURS = 26
#: Bump when the database layout changes: the cached database is then rebuilt.
LAYOUT = 2
SAMPLE_DETAILS = 20


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (``fraction`` 0.9 is the p90)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values) if values else float("nan"),
        "p90": percentile(values, 0.9),
        "min": min(values, default=float("nan")),
        "max": max(values, default=float("nan")),
        "count": len(values),
    }


def recipients(count: int, prefix: str) -> list[str]:
    return [f"{prefix}.user{index}@{DOMAINS[index % len(DOMAINS)]}" for index in range(count)]


#: With ``--merge-fields``: the same newsletter as a template, and each recipient's data.
MERGE_SUBJECT = SUBJECT + " for {{ first_name }}"
MERGE_BODY = BODY.replace("<body>", "<body><p>Dear {{first_name}} ({{plan}}, {{credits}})</p>", 1)


def submission_body(topic: str, emails: Sequence[str], *, merge_fields: bool = False) -> bytes:
    message: dict[str, Any] = {
        "topic_id": topic,
        "emails": list(emails),
        "subject": SUBJECT,
        "content": BODY,
    }
    if merge_fields:
        message["subject"], message["content"] = MERGE_SUBJECT, MERGE_BODY
        message["data"] = {"plan": "free"}
        message["emails"] = [
            {"email": email, "data": {"first_name": f"Name {n}", "credits": n, "plan": "pro"}}
            for n, email in enumerate(emails)
        ]
    return json.dumps({"scheduled_at": FAR_FUTURE, "messages": [message]}).encode("utf-8")


# --- processes -------------------------------------------------------------------------------


def service_command(database: Path, max_recipients: int) -> tuple[list[str], dict[str, str]]:
    """The ``sesender`` command and its environment: memory backend, the benchmark's key, the
    tracking secret derived from it (so tokens signed here verify there)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            (
                "AWS_",
                "SENTRY_",
                "SES_",
                "SNS_",
                "TRACKING_",
                "MAX_",
                "SEND_",
                "POST_",
                "SCHEDULER_",
                "MEMORY_",
                "SERVER_",
                "DATABASE_",
                "METRICS_",
                "LOG_",
            )
        )
    }
    env.update(
        SERVER_HOST="127.0.0.1",
        SERVER_PORT="0",
        API_KEY=API_KEY,
        DATABASE_PATH=str(database),
        SENDER_BACKEND="memory",
        MAX_RECIPIENTS_PER_REQUEST=str(max(10_000, max_recipients)),
        LOG_FORMAT="json",
        LOG_LEVEL="info",
    )
    return console_script(), env


def errors_logged(process: Process) -> list[str]:
    """The service's error (and critical) log lines so far."""
    found = []
    for line in list(process.lines):
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict) and document.get("level") in ("error", "critical"):
            found.append(line[:300])
    return found


def api_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-KEY": API_KEY}, timeout=120)


# --- 1. submit -------------------------------------------------------------------------------


def measure_submit(
    service_url: str, baseline_url: str, arguments: argparse.Namespace, directory: Path
) -> dict[str, Any]:
    count = arguments.recipients
    total_runs = arguments.submit_warmup + arguments.submit_runs
    bodies = [
        submission_body(
            SUBMIT_TOPIC, recipients(count, f"s{run}"), merge_fields=arguments.merge_fields
        )
        for run in range(total_runs)
    ]
    headers = {"Content-Type": "application/json"}
    if arguments.named_key:
        with api_client(service_url) as admin:
            created = admin.post("/v1/api-keys", json={"name": "bench", "scopes": ["send"]})
            created.raise_for_status()
            headers["X-API-KEY"] = created.json()["key"]
    server_ms: list[float] = []
    round_trip_ms: list[float] = []
    baseline_ms: list[float] = []
    with api_client(service_url) as client, httpx.Client(base_url=baseline_url) as bare:
        for run, body in enumerate(bodies):
            timed = run >= arguments.submit_warmup
            order = ("sesender", "baseline") if run % 2 == 0 else ("baseline", "sesender")
            for side in order:
                if side == "sesender":
                    started = time.perf_counter()
                    response = client.post(SUBMIT_PATH, content=body, headers=headers)
                    elapsed = 1000 * (time.perf_counter() - started)
                    response.raise_for_status()
                    answer = response.json()
                    if answer["success"] != count or answer["errors"] or not answer["scheduled"]:
                        raise RuntimeError(f"unexpected submission answer: {answer}")
                    if timed:
                        server_ms.append(float(answer["duration_ms"]))
                        round_trip_ms.append(elapsed)
                else:
                    started = time.perf_counter()
                    response = bare.post(SUBMIT_PATH, content=body, headers=headers)
                    elapsed = 1000 * (time.perf_counter() - started)
                    response.raise_for_status()
                    if timed:
                        baseline_ms.append(elapsed)
            if timed:
                progress(
                    f"submit {run - arguments.submit_warmup + 1}/{arguments.submit_runs}:"
                    f" server {server_ms[-1]:.0f} ms, round trip {round_trip_ms[-1]:.0f} ms"
                )
        stats = client.get(f"/v1/topics/{SUBMIT_TOPIC}").json()
    stored = stats["request_counts"].get("Created", 0)
    if stored != count * total_runs:
        raise RuntimeError(f"{stored} emails stored, expected {count * total_runs}")
    breakdown = submit_breakdown(bodies[arguments.submit_warmup :], directory)
    median = statistics.median(server_ms)
    return {
        "recipients": count,
        "merge_fields": arguments.merge_fields,
        "named_key": arguments.named_key,
        "runs": arguments.submit_runs,
        "body_bytes": len(bodies[0]),
        "scheduled_at": FAR_FUTURE,
        "server_duration_ms": summary(server_ms),
        "round_trip_ms": summary(round_trip_ms),
        "baseline_round_trip_ms": summary(baseline_ms),
        "server_duration_ms_all": server_ms,
        "round_trip_ms_all": round_trip_ms,
        "breakdown_ms": breakdown,
        "aim_ms": SUBMIT_AIM_MS,
        "passed": median < SUBMIT_AIM_MS,
    }


INSERT_ROWS_SQL = (
    "INSERT INTO requests (topic_id, content_id, email, status, attempts, due_at, created_at,"
    " updated_at) VALUES (?, ?, ?, 0, 0, ?, ?, ?)"
)
INSERT_JSON_SQL = (
    "INSERT INTO requests (topic_id, content_id, email, status, attempts, due_at, created_at,"
    " updated_at) SELECT ?, ?, value, 0, 0, ?, ?, ? FROM json_each(?)"
)


def plain_database(path: Path) -> sqlite3.Connection:
    """A fresh database with sesender's schema and PRAGMAs and one content row."""
    from sesender.store import migrate

    migrate(path)
    connection = _connect(path)
    connection.execute(
        "INSERT INTO contents (id, digest, subject, body, created_at) VALUES (1, x'00', ?, ?, 0)",
        (SUBJECT, BODY),
    )
    return connection


def submit_breakdown(bodies: Sequence[bytes], directory: Path) -> dict[str, Any]:
    """Where ``duration_ms`` goes, measured in this process on the same bodies, body by body in
    turn: the handler's pure-Python part (``parse_json`` + ``body_digest`` +
    ``parse_submission``), ``store.submit`` of the result (a scratch database), and, on two more
    scratch databases with the same schema, the same rows inserted by plain ``sqlite3``: with
    ``executemany`` (what the store does) and with one ``INSERT ... SELECT FROM json_each(?)``."""
    from zoneinfo import ZoneInfo

    import trio

    from sesender.http.submission import body_digest, parse_json, parse_submission
    from sesender.models import Submission
    from sesender.store import open_sqlite_store

    timings: dict[str, list[float]] = {
        "parse": [],
        "store_submit": [],
        "plain_executemany": [],
        "plain_json_each": [],
    }
    plain = plain_database(directory / "breakdown-executemany.db")
    json_each = plain_database(directory / "breakdown-json-each.db")

    def timed(name: str, started: float) -> None:
        timings[name].append(1000 * (time.perf_counter() - started))

    async def measure() -> None:
        async with open_sqlite_store(directory / "breakdown-store.db") as store:
            for body in bodies:
                started = time.perf_counter()
                payload = parse_json(body)
                body_digest(payload)
                parsed = parse_submission(payload, max_recipients=10**9, timezone=ZoneInfo("UTC"))
                timed("parse", started)
                now = wall_ms()
                started = time.perf_counter()
                await store.submit(
                    Submission(messages=parsed.messages, due_at_ms=FAR_FUTURE_MS, created_at_ms=now)
                )
                timed("store_submit", started)
                (message,) = parsed.messages
                started = time.perf_counter()
                plain.execute("BEGIN IMMEDIATE")
                plain.executemany(
                    INSERT_ROWS_SQL,
                    [
                        (message.topic_id, 1, email, FAR_FUTURE_MS, now, now)
                        for email in message.emails
                    ],
                )
                plain.execute("COMMIT")
                timed("plain_executemany", started)
                started = time.perf_counter()
                json_each.execute("BEGIN IMMEDIATE")
                json_each.execute(
                    INSERT_JSON_SQL,
                    (
                        message.topic_id,
                        1,
                        FAR_FUTURE_MS,
                        now,
                        now,
                        json.dumps(message.emails, ensure_ascii=False),
                    ),
                )
                json_each.execute("COMMIT")
                timed("plain_json_each", started)

    try:
        trio.run(measure)
    finally:
        plain.close()
        json_each.close()
    return {name: summary(values) for name, values in timings.items()}


# --- 2. the open pixel -----------------------------------------------------------------------


def store_open_emails(service_url: str, total: int) -> list[int]:
    """Store ``total`` emails (scheduled in 2099) in the opens topic; their request ids."""
    ids: list[int] = []
    with api_client(service_url) as client:
        for start in range(0, total, 10_000):
            count = min(10_000, total - start)
            response = client.post(
                SUBMIT_PATH,
                content=submission_body(OPENS_TOPIC, recipients(count, f"o{start}")),
                headers={"Content-Type": "application/json"},
            )
            response.raise_for_status()
            first = response.json()["first_request_id"]
            ids.extend(range(first, first + count))
    return ids


def open_paths(ids: Sequence[int]) -> list[str]:
    from sesender.tracking import TokenSigner, derive_secret

    signer = TokenSigner(derive_secret(API_KEY))
    return [f"{OPEN_PATH}?request_id={signer.sign('open', request_id)}" for request_id in ids]


def wait_for_opens(service_url: str, expected: int, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the topic until its ``Open`` count reaches ``expected``; what it showed, and when."""
    started = time.perf_counter()
    deadline = started + timeout
    with api_client(service_url) as client:
        while True:
            counts = client.get(f"/v1/topics/{OPENS_TOPIC}").json()["result_counts"]
            opens = int(counts.get("Open", 0))
            if opens >= expected or time.perf_counter() > deadline:
                return {
                    "open_count": opens,
                    "expected": expected,
                    "seconds_to_persist": time.perf_counter() - started,
                }
            time.sleep(0.05)


def sample_details(service_url: str, ids: Sequence[int]) -> dict[str, Any]:
    """``GET /v1/messages/{id}`` for a spread of ids: how many show exactly one Open."""
    step = max(1, len(ids) // SAMPLE_DETAILS)
    sample = [*ids[::step][:SAMPLE_DETAILS], ids[-1]]
    with_open = 0
    with api_client(service_url) as client:
        for request_id in sample:
            events = client.get(f"/v1/messages/{request_id}").json()["events"]
            opens = [event for event in events if event["type"] == "Open"]
            with_open += len(opens) == 1 and opens[0]["count"] == 1
    return {"sampled": len(sample), "with_one_open": with_open}


def cpu_ratio(baseline_ms: float, service_ms: float) -> float:
    """Bare server CPU per request / sesender's: the throughput ratio the two servers would
    reach if each had a core to itself and a client that cost nothing."""
    return baseline_ms / service_ms if service_ms else float("nan")


def measure_pixel(
    service: Process,
    service_url: str,
    bare: Process,
    baseline_url: str,
    arguments: argparse.Namespace,
) -> dict[str, Any]:
    per_repeat = arguments.open_warmup + arguments.opens
    ids = store_open_emails(service_url, per_repeat * arguments.repeats)
    paths = open_paths(ids)
    progress(f"{len(ids):,} emails stored and tokens signed for the pixel")
    runs: list[dict[str, Any]] = []
    for repeat in range(arguments.repeats):
        targets = [
            ("sesender", service_url, service.process.pid),
            ("baseline", baseline_url, bare.process.pid),
        ]
        if repeat % 2:
            targets.reverse()
        pair = generate_load(
            paths[repeat * per_repeat : (repeat + 1) * per_repeat],
            arguments.concurrency,
            arguments.open_warmup,
            targets,
        )
        for side, _, _ in targets:
            progress(f"pixel repeat {repeat + 1} {side}: {pair[side]['rate']:,.0f}/s")
        for side in ("sesender", "baseline"):
            report = pair[side]
            if report["statuses"] != {"200": arguments.opens} or report["wrong_bodies"]:
                raise RuntimeError(f"{side} did not answer every pixel with the PNG: {report}")
        pair["ratio"] = pair["sesender"]["rate"] / pair["baseline"]["rate"]
        pair["cpu_ratio"] = cpu_ratio(
            pair["baseline"]["server_cpu_ms_per_request"],
            pair["sesender"]["server_cpu_ms_per_request"],
        )
        runs.append(pair)
    persisted = wait_for_opens(service_url, len(ids))
    details = sample_details(service_url, ids)
    best_service = max(pair["sesender"]["rate"] for pair in runs)
    best_baseline = max(pair["baseline"]["rate"] for pair in runs)
    ratio = best_service / best_baseline
    all_persisted = (
        persisted["open_count"] == len(ids) and details["with_one_open"] == details["sampled"]
    )
    service_cpu = min(pair["sesender"]["server_cpu_ms_per_request"] for pair in runs)
    baseline_cpu = min(pair["baseline"]["server_cpu_ms_per_request"] for pair in runs)
    return {
        "opens_per_run": arguments.opens,
        "warmup": arguments.open_warmup,
        "concurrency": arguments.concurrency,
        "repeats": arguments.repeats,
        "distinct_ids_opened": len(ids),
        "runs": runs,
        "sesender_rate_best": best_service,
        "baseline_rate_best": best_baseline,
        "ratio": ratio,
        "sesender_server_cpu_ms_per_request_best": service_cpu,
        "baseline_server_cpu_ms_per_request_best": baseline_cpu,
        "cpu_ratio": cpu_ratio(baseline_cpu, service_cpu),
        # Each pair ran back to back: the median of their ratios is the steadier figure.
        "ratio_median_of_pairs": statistics.median(pair["ratio"] for pair in runs),
        "cpu_ratio_median_of_pairs": statistics.median(pair["cpu_ratio"] for pair in runs),
        "client_cpu_ms_per_request_median": statistics.median(
            pair[side]["client_cpu_ms_per_request"]
            for pair in runs
            for side in ("sesender", "baseline")
        ),
        "persisted": persisted,
        "details": details,
        "all_persisted": all_persisted,
        "aim": PIXEL_AIM,
        "passed": ratio >= PIXEL_AIM and all_persisted,
    }


# --- 3. statistics on a large database ---------------------------------------------------------


def database_paths(directory: Path, emails: int, big: int) -> tuple[Path, Path]:
    stem = f"api-stats-{emails}-{big}"
    return directory / f"{stem}.db", directory / f"{stem}.json"


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def topic_layout(emails: int, big: int) -> list[tuple[str, int]]:
    """(topic, emails) in submission order: the big topic, then topics of 10,000."""
    layout = [(BIG_TOPIC, big)]
    rest = emails - big
    for index, start in enumerate(range(0, rest, 10_000)):
        layout.append((f"bench_api_t{index:03d}", min(10_000, rest - start)))
    return layout


async def _submit_layout(path: Path, layout: Sequence[tuple[str, int]], created_ms: int) -> None:
    from sesender.models import NewMessage, Submission
    from sesender.store import open_sqlite_store

    async with open_sqlite_store(path) as store:
        for topic, count in layout:
            for start in range(0, count, 10_000):
                emails = tuple(
                    f"{topic}.user{index}@{DOMAINS[index % len(DOMAINS)]}"
                    for index in range(start, min(count, start + 10_000))
                )
                message = NewMessage(topic_id=topic, subject=SUBJECT, body=BODY, emails=emails)
                await store.submit(
                    Submission(
                        messages=(message,), due_at_ms=FAR_FUTURE_MS, created_at_ms=created_ms
                    )
                )


def _connect(path: Path) -> sqlite3.Connection:
    from sesender.store.schema import CONNECTION_PRAGMAS

    connection = sqlite3.connect(path, isolation_level=None)
    for pragma in CONNECTION_PRAGMAS:
        connection.execute(pragma)
    return connection


def _mark(connection: sqlite3.Connection, built_ms: int) -> None:
    """Sent (94 %, sent_at spread over the last 26 h), Failed (2 %), Created (4 %); results.

    Only ``UPDATE ... SET status``: the triggers keep ``topic_counts`` and ``sent_minutes``;
    inserts into ``results`` fire the trigger that keeps ``topic_result_counts``.
    """
    first, last = connection.execute("SELECT MIN(id), MAX(id) FROM requests").fetchone()
    total = last - first + 1
    start_ms = built_ms - SENT_SPREAD_HOURS * HOUR_MS
    span_ms = SENT_SPREAD_HOURS * HOUR_MS - MINUTE_MS
    sent_at = f"({start_ms} + (id - {first}) * {span_ms} / {total})"
    for low in range(first, last + 1, 100_000):
        high = min(last, low + 99_999)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            f"UPDATE requests SET status = 2, attempts = 1, message_id = printf('bench-%d', id),"
            f" sent_at = {sent_at}, updated_at = {sent_at}"
            " WHERE id BETWEEN ? AND ? AND id % 50 >= 3",
            (low, high),
        )
        connection.execute(
            "UPDATE requests SET status = 3, attempts = 1, error = 'bench: rejected',"
            " failure_kind = 'permanent', updated_at = ? WHERE id BETWEEN ? AND ? AND id % 50 = 0",
            (start_ms, low, high),
        )
        for event_type, delay_ms, condition in (
            ("Delivery", 3_000, "id % 2 = 1"),
            ("Open", 600_000, "id % 5 = 3"),
        ):
            connection.execute(
                "INSERT INTO results (request_id, topic_id, event_type, count, first_at, last_at)"
                f" SELECT id, topic_id, ?, 1, sent_at + {delay_ms}, sent_at + {delay_ms}"
                f" FROM requests WHERE id BETWEEN ? AND ? AND status = 2 AND {condition}",
                (event_type, low, high),
            )
        connection.execute("COMMIT")


def _check_counters(connection: sqlite3.Connection) -> None:
    """The trigger-kept counters equal what a full ``GROUP BY`` counts."""
    counted = set(
        connection.execute("SELECT topic_id, status, COUNT(*) FROM requests GROUP BY 1, 2")
    )
    kept = set(connection.execute("SELECT topic_id, status, count FROM topic_counts WHERE count"))
    if counted != kept:
        raise RuntimeError(f"topic_counts disagree with requests: {sorted(counted ^ kept)[:5]}")
    counted = set(
        connection.execute("SELECT topic_id, event_type, COUNT(*) FROM results GROUP BY 1, 2")
    )
    kept = set(connection.execute("SELECT topic_id, event_type, count FROM topic_result_counts"))
    if counted != kept:
        raise RuntimeError(f"topic_result_counts disagree with results: {sorted(counted ^ kept)}")
    sent = connection.execute("SELECT COUNT(*) FROM requests WHERE status = 2").fetchone()[0]
    bucketed = connection.execute("SELECT SUM(count) FROM sent_minutes").fetchone()[0]
    if sent != bucketed:
        raise RuntimeError(f"sent_minutes hold {bucketed} sends, requests {sent}")


def _expected_stats(connection: sqlite3.Connection, topic: str) -> dict[str, dict[str, int]]:
    from sesender.models import Status

    requests = {
        Status(status).label: count
        for status, count in connection.execute(
            "SELECT status, count FROM topic_counts WHERE topic_id = ? AND count", (topic,)
        )
    }
    results = dict(
        connection.execute(
            "SELECT event_type, count FROM topic_result_counts WHERE topic_id = ?", (topic,)
        ).fetchall()
    )
    return {"request_counts": requests, "result_counts": results}


def build_database(path: Path, emails: int, big: int) -> dict[str, Any]:
    import trio

    remove_database(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = topic_layout(emails, big)
    built_ms = wall_ms() // MINUTE_MS * MINUTE_MS
    started = time.perf_counter()
    trio.run(_submit_layout, path, layout, built_ms - (SENT_SPREAD_HOURS + 1) * HOUR_MS)
    submitted = time.perf_counter()
    progress(f"statistics database: {emails:,} emails submitted in {submitted - started:.1f}s")
    connection = _connect(path)
    try:
        _mark(connection, built_ms)
        marked = time.perf_counter()
        progress(f"statistics database: marked sent/failed in {marked - submitted:.1f}s")
        _check_counters(connection)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        small, small_emails = layout[1] if len(layout) > 1 else layout[0]
        meta = {
            "layout": LAYOUT,
            "emails": emails,
            "big_topic": big,
            "topics": len(layout),
            "small_topic": small,
            "small_topic_emails": small_emails,
            "built_ms": built_ms,
            "lead_ms": built_ms - last_sent_ms(connection),
            "build_seconds": {
                "submit": submitted - started,
                "mark": marked - submitted,
                "total": time.perf_counter() - started,
            },
            "expected": {
                BIG_TOPIC: _expected_stats(connection, BIG_TOPIC),
                small: _expected_stats(connection, small),
            },
            "bytes": path.stat().st_size,
        }
    finally:
        connection.close()
    return meta


def last_sent_ms(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT MAX(sent_at) FROM requests").fetchone()[0])


def shift_database(path: Path, meta: dict[str, Any]) -> float:
    """Move every timestamp forward by whole minutes to now, as if it had just been built
    (``sent_minutes`` buckets move with them); the seconds it took (0 when under 5 minutes).
    When it was built is read from the database itself (its last ``sent_at``), so an interrupted
    run never shifts it twice."""
    started = time.perf_counter()
    connection = _connect(path)
    try:
        meta["built_ms"] = last_sent_ms(connection) + meta["lead_ms"]
        minutes = (wall_ms() - meta["built_ms"]) // MINUTE_MS
        if minutes < 5:
            return 0.0
        delta = minutes * MINUTE_MS
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "UPDATE requests SET created_at = created_at + ?1, updated_at = updated_at + ?1,"
            " sent_at = sent_at + ?1",
            (delta,),
        )
        connection.execute(
            "UPDATE results SET first_at = first_at + ?1, last_at = last_at + ?1", (delta,)
        )
        connection.execute(
            "UPDATE topics SET created_at = created_at + ?1, updated_at = updated_at + ?1",
            (delta,),
        )
        connection.execute("CREATE TEMP TABLE shifted AS SELECT minute, count FROM sent_minutes")
        connection.execute("DELETE FROM sent_minutes")
        connection.execute(
            "INSERT INTO sent_minutes (minute, count) SELECT minute + ?, count FROM shifted",
            (minutes,),
        )
        connection.execute("DROP TABLE shifted")
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    meta["built_ms"] += delta
    return time.perf_counter() - started


def statistics_database(arguments: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The cached database for part 3, built or brought up to date; its description."""
    directory = arguments.database_dir or arguments.results_dir
    path, meta_path = database_paths(directory, arguments.emails, arguments.big_topic)
    meta: dict[str, Any] | None = None
    if not arguments.rebuild and path.exists() and meta_path.exists():
        candidate = json.loads(meta_path.read_text("utf-8"))
        if candidate.get("layout") == LAYOUT:
            meta = candidate
    if meta is None:
        meta = build_database(path, arguments.emails, arguments.big_topic)
        meta["cached"] = False
        meta["shift_seconds"] = 0.0
    else:
        meta["cached"] = True
        meta["shift_seconds"] = shift_database(path, meta)
        progress(
            f"statistics database: cached {path.name}, timestamps shifted in"
            f" {meta['shift_seconds']:.1f}s"
        )
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", "utf-8")
    return path, meta


def sent_since(path: Path, since_ms: int) -> int:
    """Ground truth for the sent count: a full count over the database (read only)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(
            connection.execute(
                "SELECT COUNT(*) FROM requests WHERE status = 2 AND sent_at >= ?", (since_ms,)
            ).fetchone()[0]
        )
    finally:
        connection.close()


def check_stats_answer(answer: dict[str, Any], expected: dict[str, dict[str, int]]) -> None:
    for key in ("request_counts", "result_counts"):
        shown = {name: count for name, count in answer[key].items() if count}
        if shown != expected[key]:
            raise RuntimeError(f"{key}: the API says {shown}, the database {expected[key]}")


def measure_stats(
    service_url: str, path: Path, meta: dict[str, Any], arguments: argparse.Namespace
) -> dict[str, Any]:
    small = meta["small_topic"]
    endpoints = {
        f"GET /v1/topics/{{id}}, {meta['big_topic']:,} emails": f"/v1/topics/{BIG_TOPIC}",
        f"GET /v1/topics/{{id}}, {meta['small_topic_emails']:,} emails (small)": (
            f"/v1/topics/{small}"
        ),
        "GET /v1/events/counts/sent?hours=24": "/v1/events/counts/sent?hours=24",
        "GET /health (floor)": "/health",
    }
    names = list(endpoints)
    timings: dict[str, list[float]] = {name: [] for name in names}
    with api_client(service_url) as client:
        # The answers first, against the database (outside the clock).
        check_stats_answer(client.get(endpoints[names[0]]).json(), meta["expected"][BIG_TOPIC])
        check_stats_answer(client.get(endpoints[names[1]]).json(), meta["expected"][small])
        before = wall_ms()
        count = client.get(endpoints[names[2]]).json()["count"]
        after = wall_ms()
        truth = (sent_since(path, after - 24 * HOUR_MS), sent_since(path, before - 24 * HOUR_MS))
        if not truth[0] <= count <= truth[1]:
            raise RuntimeError(f"sent count {count}, the database says {truth}")
        total = arguments.stats_warmup + arguments.stats_requests
        for index in range(total):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                response = client.get(endpoints[name])
                elapsed = 1000 * (time.perf_counter() - started)
                response.raise_for_status()
                if index >= arguments.stats_warmup:
                    timings[name].append(elapsed)
    results = {name: summary(values) for name, values in timings.items()}
    measured = names[:3]
    return {
        "emails": meta["emails"],
        "big_topic": meta["big_topic"],
        "topics": meta["topics"],
        "database_bytes": meta["bytes"],
        "cached": meta["cached"],
        "build_seconds": meta["build_seconds"],
        "shift_seconds": meta["shift_seconds"],
        "sent_last_24h": count,
        "requests": arguments.stats_requests,
        "endpoints": results,
        "aim_ms": STATS_AIM_MS,
        "passed": all(results[name]["median"] < STATS_AIM_MS for name in measured),
    }


# --- the load generator and the baseline server (child processes) ------------------------------


def generate_load(
    everything: Sequence[str],
    concurrency: int,
    warmup: int,
    targets: Sequence[tuple[str, str, int]],
) -> dict[str, Any]:
    """The load generator (run in this process, apart from both servers): for each (side, URL,
    server pid) of ``targets`` in turn, GET every path from that server, ``concurrency`` at a
    time over kept-alive connections (httpx on trio); a report by side.

    The first ``warmup`` paths go first, untimed and uncounted (connections opened); the clock
    runs over the rest. Every answer's body is compared with the service's PNG. Each report
    includes the CPU time of this thread and of the server process over the timed part, per
    request: when the client's share is large, the client limits both rates alike.
    """
    import trio

    from sesender.http.events import PIXEL

    warmup_paths, paths = everything[:warmup], everything[warmup:]

    async def fetch_all(url: str, server_pid: int) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        wrong_bodies = 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

            async def warm(path: str) -> None:
                (await client.get(path)).raise_for_status()

            async with trio.open_nursery() as nursery:
                for path in warmup_paths:
                    nursery.start_soon(warm, path)
            iterator = iter(paths)

            async def worker() -> None:
                nonlocal wrong_bodies
                for path in iterator:
                    response = await client.get(path)
                    key = str(response.status_code)
                    statuses[key] = statuses.get(key, 0) + 1
                    if (
                        response.content != PIXEL
                        or response.headers.get("content-type") != "image/png"
                    ):
                        wrong_bodies += 1

            server_cpu = process_cpu_seconds(server_pid)
            client_cpu = time.thread_time()
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            seconds = time.perf_counter() - started
            server_cpu = process_cpu_seconds(server_pid) - server_cpu
            client_cpu = time.thread_time() - client_cpu
        count = max(1, len(paths))
        return {
            "requests": len(paths),
            "seconds": seconds,
            "rate": len(paths) / seconds if seconds else 0.0,
            "server_cpu_ms_per_request": 1000 * server_cpu / count,
            "client_cpu_ms_per_request": 1000 * client_cpu / count,
            "statuses": statuses,
            "wrong_bodies": wrong_bodies,
        }

    async def main() -> dict[str, Any]:
        return {side: await fetch_all(url, pid) for side, url, pid in targets}

    return trio.run(main)


def baseline_app(pixel: bytes) -> Any:
    """The bare app: the pixel route answering the same PNG (``pixel``, handed over by the
    parent from ``sesender.http.events``) with the same headers, and a POST route for the
    submission body that reads it and answers ``{"status": "ok"}``."""
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("baseline")

    @app.get(OPEN_PATH)
    async def open_pixel() -> Response:
        return Response(
            pixel,
            status=200,
            content_type="image/png",
            headers={
                "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
                "Pragma": "no-cache",
            },
        )

    @app.post(SUBMIT_PATH)
    async def submit() -> dict[str, str]:
        await request.get_data(cache=False, as_text=False, parse_form_data=False)
        return {"status": "ok"}

    return app


def serve_baseline(pixel: str) -> None:
    """Serve :func:`baseline_app` with hypercorn on trio on a free port; print the URL."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(
                    baseline_app(base64.b64decode(pixel)), config, task_status=task_status
                )
            )
            print(json.dumps({"baseline_url": binds[0]}), flush=True)

    trio.run(main)


# --- the run ---------------------------------------------------------------------------------


def stop_all(processes: Sequence[Process]) -> None:
    """Ask every process to stop at once, then wait for each (graceful drains overlap)."""
    for process in processes:
        if process.process.poll() is None:
            process.process.terminate()
    for process in processes:
        process.stop()


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    parts = arguments.part or list(PARTS)
    figures: dict[str, Any] = {"parts": parts}
    directory = Path(tempfile.mkdtemp(prefix="bench-api-"))
    processes: list[Process] = []
    service = bare = stats = None
    try:
        stats_path: Path | None = None
        meta: dict[str, Any] = {}
        if "stats" in parts:
            stats_path, meta = statistics_database(arguments)
        # Every server starts at once (start-up is mostly imports); each is waited for below.
        if "submit" in parts or "pixel" in parts:
            service = Process(*service_command(directory / "sesender.db", arguments.recipients))
            processes.append(service)
        if stats_path is not None:
            stats = Process(*service_command(stats_path, 0))
            processes.append(stats)
        if service is not None:
            from sesender.http.events import PIXEL  # imported while the services start

            pixel = base64.b64encode(PIXEL).decode("ascii")
            bare = Process([sys.executable, "-m", "bench.api", "--serve-baseline", pixel])
            processes.append(bare)
        if service is not None and bare is not None:
            service_url = service.wait_for_json("event", "listening")["urls"][0]
            baseline_url = bare.wait_for_json("baseline_url")["baseline_url"]
            progress(f"sesender at {service_url}, baseline at {baseline_url}")
            if "submit" in parts:
                figures["submit"] = measure_submit(service_url, baseline_url, arguments, directory)
            if "pixel" in parts:
                figures["pixel"] = measure_pixel(
                    service, service_url, bare, baseline_url, arguments
                )
            figures["service_errors"] = errors_logged(service)
        if stats is not None and stats_path is not None:
            stats_url = stats.wait_for_json("event", "listening")["urls"][0]
            progress(f"sesender on the statistics database at {stats_url}")
            figures["stats"] = measure_stats(stats_url, stats_path, meta, arguments)
            figures["stats_service_errors"] = errors_logged(stats)
    finally:
        stop_all(processes)
        shutil.rmtree(directory, ignore_errors=True)
    figures["load_average_after"] = os.getloadavg()
    figures["passed"] = all(figures[part]["passed"] for part in parts) and not (
        figures.get("service_errors") or figures.get("stats_service_errors")
    )
    return figures


# --- the report ------------------------------------------------------------------------------


def report(figures: dict[str, Any]) -> str:
    sections: list[str] = []
    if "submit" in figures:
        submit = figures["submit"]
        rows = [
            (label, data["median"], data["p90"], data["min"], data["max"])
            for label, data in (
                ("sesender duration_ms (server)", submit["server_duration_ms"]),
                ("sesender round trip (client)", submit["round_trip_ms"]),
                ("bare app round trip, same body", submit["baseline_round_trip_ms"]),
            )
        ]
        table = format_table(("POST /v1/messages", "median ms", "p90 ms", "min ms", "max ms"), rows)
        median = submit["server_duration_ms"]["median"]
        breakdown = submit["breakdown_ms"]
        parts_table = format_table(
            ("in this process, same bodies", "median ms", "p90 ms", "min ms", "max ms"),
            [
                (label, data["median"], data["p90"], data["min"], data["max"])
                for label, data in (
                    ("parse_json + body_digest + parse_submission", breakdown["parse"]),
                    ("store.submit (scratch database)", breakdown["store_submit"]),
                    ("same rows, plain sqlite3 executemany", breakdown["plain_executemany"]),
                    (
                        "same rows, INSERT ... SELECT FROM json_each(?)",
                        breakdown["plain_json_each"],
                    ),
                )
            ],
        )
        sections.append(
            f"{table}\n\n{submit['runs']} runs of {submit['recipients']:,} recipients"
            f"{' with merge-field data' if submit.get('merge_fields') else ''}"
            f" ({submit['body_bytes']:,}-byte body, scheduled_at {submit['scheduled_at']}: nothing"
            f" sent).\naim: median duration_ms < {SUBMIT_AIM_MS:.0f} ms:"
            f" {verdict(submit['passed'])} ({median:.0f} ms)\n\n{parts_table}"
        )
    if "pixel" in figures:
        pixel = figures["pixel"]
        pixel_rows: list[tuple[object, ...]] = [
            (
                index + 1,
                pair["sesender"]["rate"],
                pair["baseline"]["rate"],
                pair["ratio"],
                pair["sesender"]["server_cpu_ms_per_request"],
                pair["baseline"]["server_cpu_ms_per_request"],
                pair["cpu_ratio"],
            )
            for index, pair in enumerate(pixel["runs"])
        ]
        pixel_rows.append(
            (
                "best",
                pixel["sesender_rate_best"],
                pixel["baseline_rate_best"],
                pixel["ratio"],
                pixel["sesender_server_cpu_ms_per_request_best"],
                pixel["baseline_server_cpu_ms_per_request_best"],
                pixel["cpu_ratio"],
            )
        )
        table = format_table(
            (
                "repeat",
                "sesender pixel (req/s)",
                "bare hypercorn + quart-trio (req/s)",
                "ratio",
                "sesender CPU ms/req",
                "bare CPU ms/req",
                "CPU ratio",
            ),
            pixel_rows,
        )
        persisted = pixel["persisted"]
        details = pixel["details"]
        client_bound = (
            ", more than either server: the client limits both rates, and the CPU ratio"
            f" ({pixel['cpu_ratio']:.2f}) is the fairer comparison of the servers"
            if pixel["client_cpu_ms_per_request_median"]
            > max(
                pixel["sesender_server_cpu_ms_per_request_best"],
                pixel["baseline_server_cpu_ms_per_request_best"],
            )
            else ""
        )
        sections.append(
            f"{table}\n\n{pixel['opens_per_run']:,} opens per run (distinct ids), concurrency"
            f" {pixel['concurrency']}; the load generator spent"
            f" {pixel['client_cpu_ms_per_request_median']:.2f} ms CPU per request (median)"
            f"{client_bound}.\n"
            f"median of the repeats' ratios: {pixel['ratio_median_of_pairs']:.2f} (rate),"
            f" {pixel['cpu_ratio_median_of_pairs']:.2f} (CPU).\n"
            f"persisted: topic result_counts Open = {persisted['open_count']:,} of"
            f" {persisted['expected']:,} ids opened ({persisted['seconds_to_persist']:.2f} s after"
            f" the last run); {details['with_one_open']} of {details['sampled']} sampled"
            f" GET /v1/messages/{{id}} show one Open.\n"
            f"aim: ratio >= {PIXEL_AIM} and every open persisted: {verdict(pixel['passed'])}"
            f" ({pixel['ratio']:.2f})"
        )
    if "stats" in figures:
        stats = figures["stats"]
        rows = [
            (name, data["median"], data["p90"], data["min"], data["max"])
            for name, data in stats["endpoints"].items()
        ]
        table = format_table(("endpoint", "median ms", "p90 ms", "min ms", "max ms"), rows)
        build = stats["build_seconds"]
        origin = (
            f"cached (timestamps shifted in {stats['shift_seconds']:.1f} s; built in"
            f" {build['total']:.0f} s)"
            if stats["cached"]
            else f"built in {build['total']:.0f} s (submit {build['submit']:.0f} s, mark"
            f" {build['mark']:.0f} s)"
        )
        sections.append(
            f"{table}\n\n{stats['requests']} requests of each, interleaved, on"
            f" {stats['emails']:,} emails in {stats['topics']} topics"
            f" ({stats['database_bytes'] / 1e6:,.0f} MB, {origin}); {stats['sent_last_24h']:,}"
            f" sent in the last 24 h.\naim: median < {STATS_AIM_MS:.0f} ms for the topic and the"
            f" sent count: {verdict(stats['passed'])}"
        )
    errors = figures.get("service_errors", []) + figures.get("stats_service_errors", [])
    load = ", ".join(f"{value:.1f}" for value in figures["load_average_after"])
    sections.append(f"service errors logged: {len(errors)}; load average after the run: {load}")
    return "\n\n".join(sections)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--part", action="append", choices=PARTS, help="run only this part (repeatable)"
    )
    parser.add_argument("--recipients", type=int, default=10_000, help="per submission")
    parser.add_argument("--submit-runs", type=int, default=20)
    parser.add_argument(
        "--merge-fields",
        action="store_true",
        help="submit templates: each recipient an object with three fields of data",
    )
    parser.add_argument(
        "--named-key",
        action="store_true",
        help="submit with a named API key of scope send (created through the API first) instead"
        " of API_KEY: the key ring's path rather than the configured key's",
    )
    parser.add_argument("--submit-warmup", type=int, default=2)
    parser.add_argument("--opens", type=int, default=5_000, help="pixel requests per timed run")
    parser.add_argument("--open-warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="pixel runs of each side")
    parser.add_argument("--emails", type=int, default=1_000_000, help="statistics database")
    parser.add_argument("--big-topic", type=int, default=500_000)
    parser.add_argument("--stats-requests", type=int, default=50, help="of each endpoint")
    parser.add_argument("--stats-warmup", type=int, default=5)
    parser.add_argument(
        "--database-dir", type=Path, default=None, help="where the statistics database is cached"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.recipients = 200
        arguments.submit_runs = 2
        arguments.submit_warmup = 1
        arguments.opens = 40
        arguments.open_warmup = 8
        arguments.concurrency = 4
        arguments.repeats = 1
        arguments.emails = 10_000
        arguments.big_topic = 8_000
        arguments.stats_requests = 3
        arguments.stats_warmup = 1
    if not 0 < arguments.big_topic <= arguments.emails:
        parser.error("--big-topic must be between 1 and --emails")
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve-baseline"]:
        serve_baseline(args[1])
        return None
    arguments = parse_arguments(args)
    figures = run(arguments)
    print(report(figures))
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
