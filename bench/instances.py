"""Several instances on PostgreSQL, against one instance on SQLite, measured in one run.

Three parts:

**(a) end-to-end throughput**, once with the memory backend (``--part memory``) and once with
the SES backend in bulk mode against ``bench.fake_ses`` (``--part ses``; one fake process for
the part, not recording). ``N`` real ``sesender`` processes (``N`` = 1, 2, 3) on one fresh
PostgreSQL database, and, as the baseline, one process on a fresh SQLite file;
``MAX_SEND_PER_SECOND`` and ``SEND_BURST`` at their largest (the rate never binds). The clock
starts before ``--emails`` (default 60,000) are posted, split evenly over the instances in
requests of 10,000 (``/v1/messages``): with ``--posting parallel`` (the default) one client
thread per instance posts that instance's share, as clients spread by a load balancer would (a
single client posting every request in turn, ``--posting sequential``, measured its own speed
more than the instances': the others sent while it posted), and stops when
``GET /v1/topics/{id}`` counts every one ``Sent``. Reported per configuration, per 1,000 emails:
the CPU time of the service processes (with the SES backend's boto3 child), PostgreSQL's own CPU
(its backends serving the benchmark's database, from ``/proc``), its transactions (one per
round trip in autocommit) and, sampled every 25 ms from ``pg_stat_activity``, what its active
sessions waited for (:mod:`bench.pg_observer`). The configurations are interleaved over
``--repeats`` rounds; the best of each is kept (noise on a shared machine only slows a run
down). Aims, printed PASS/FAIL per backend: one PostgreSQL instance >= 0.5 of SQLite; three
instances above one.

**(b) the claim path's round trips.** One connection traced at the protocol level
(``PGconn.trace``) runs the queue's database work for ``--claim-emails`` (default 10,000): claims of
1,000 and ``Sent`` outcomes in batches of 100, as the scheduler and post-processor do. Every
``Query`` and ``Sync`` the client sends ends one round trip; reported per 1,000 emails.

**(c) shared-rate accuracy.** Three processes on one database, SES backend (bulk) against
``bench.fake_ses`` (which records each message's arrival time), ``MAX_SEND_PER_SECOND`` R = 200
and 2,000 (burst R/10): the busiest one-second window at the fake against R + burst, and the
achieved rate over the run.

    python -m bench.instances                   # all three parts
    python -m bench.instances --part memory     # (a) with the memory backend only
    python -m bench.instances --part ses        # (a) with the SES fake only
    python -m bench.instances --part claim      # (b) only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from bench.ceiling import FakeSes, run_fake_ses
from bench.common import add_output_arguments, format_table, machine_info, write_result
from bench.pg_observer import PostgresObserver, process_cpu_seconds
from sesender.models import Sent
from sesender.store import pg_queries
from tests import postgres_support
from tests.e2e.fake_ses_support import running_fake_ses
from tests.e2e.harness import ServiceProcess, base_env
from tests.e2e.test_multi_instance import max_in_any_second


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its living descendants (the SES backend's boto3 child)."""
    total = process_cpu_seconds(pid) or 0.0
    for child in child_pids(pid):
        total += tree_cpu_seconds(child)
    return total


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listing:
                children.extend(int(child) for child in listing.read().split())
        except OSError:
            continue
    return children


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"X-API-KEY": "test-key", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        result: dict[str, Any] = json.load(reply)
        return result


def sent(url: str, topic: str) -> int:
    request = urllib.request.Request(f"{url}/v1/topics/{topic}", headers={"X-API-KEY": "test-key"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return int(json.load(reply)["request_counts"].get("Sent", 0))


def start(workdir: Path, **settings: str) -> ServiceProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    env = base_env(workdir, **settings)
    return ServiceProcess(workdir, env).start()


UNBOUND_RATE = {"MAX_SEND_PER_SECOND": "100000", "SEND_BURST": "1000000"}


def backend_settings(backend: str, fake: FakeSes | None) -> dict[str, str]:
    """The service settings of one backend kind, the rate never binding."""
    if backend == "memory":
        return {"SENDER_BACKEND": "memory", **UNBOUND_RATE}
    assert fake is not None
    return {
        "SENDER_BACKEND": "ses",
        "SES_SEND_MODE": "bulk",
        "AWS_ENDPOINT_URL_SESV2": fake.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_SES_FROM_EMAIL": "news@example.com",
        "SERVER_URL": "https://sesender.example.test",
        **UNBOUND_RATE,
    }


def post_all(processes: list[ServiceProcess], emails: int, *, parallel: bool) -> None:
    """Post ``emails`` recipients of topic ``bench`` in requests of 10,000, spread evenly over
    the instances: with ``parallel``, one client thread per instance posts that instance's share
    (clients spread by a load balancer), else one client posts every request in turn."""
    per_request = 10_000
    requests = [
        (processes[index % len(processes)].url, range(first, min(emails, first + per_request)))
        for index, first in enumerate(range(0, emails, per_request))
    ]

    def post_one(url: str, numbers: range) -> None:
        post(
            f"{url}/v1/messages",
            {
                "messages": [
                    {
                        "topic_id": "bench",
                        "emails": [f"u{n}@example.com" for n in numbers],
                        "subject": "Hello",
                        "content": "<p>Hello</p>",
                    }
                ]
            },
        )

    if not parallel:
        for url, numbers in requests:
            post_one(url, numbers)
        return

    def post_share(url: str) -> None:
        for target, numbers in requests:
            if target == url:
                post_one(target, numbers)

    with ThreadPoolExecutor(len(processes)) as pool:
        for future in [pool.submit(post_share, process.url) for process in processes]:
            future.result()


def run_throughput(
    instances: int,
    emails: int,
    directory: Path,
    backend: str,
    fake: FakeSes | None,
    *,
    parallel: bool = True,
) -> dict[str, Any]:
    """One measurement: ``instances`` = 0 means one instance on SQLite."""
    settings = backend_settings(backend, fake)
    with postgres_support.temporary_database("sesender_bench") as url:
        processes: list[ServiceProcess] = []
        observer: PostgresObserver | None = None
        try:
            if instances == 0:
                processes.append(start(directory / "sqlite", **settings))
            else:
                for number in range(instances):
                    processes.append(start(directory / f"pg{number}", DATABASE_URL=url, **settings))
                observer = PostgresObserver(url)
            pids = [p.process.pid for p in processes if p.process]
            fake_cpu_before = fake.cpu_seconds() if fake else 0.0
            cpu_before = sum(tree_cpu_seconds(pid) for pid in pids)
            if observer is not None:
                observer.start()
            started = time.monotonic()
            post_all(processes, emails, parallel=parallel)
            posted = time.monotonic() - started
            while sent(processes[0].url, "bench") < emails:
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            cpu = sum(tree_cpu_seconds(pid) for pid in pids)
            fake_cpu = (fake.cpu_seconds() - fake_cpu_before) if fake else 0.0
            activity = observer.stop() if observer is not None else None
            shares = claims_per_instance(url) if instances > 1 else {}
        finally:
            for process in processes:
                process.kill()
        if observer is not None:
            observer.finish_counters()
    figures: dict[str, Any] = {
        "emails_per_second": emails / elapsed,
        "seconds": elapsed,
        "post_seconds": posted,
        "service_cpu_seconds_per_1000": (cpu - cpu_before) / emails * 1000,
        "fake_ses_cpu_seconds_per_1000": fake_cpu / emails * 1000,
        "claimed_by": shares,
    }
    if activity is not None:
        figures.update(activity.per_thousand(emails))
    return figures


def claims_per_instance(url: str) -> dict[str, int]:
    """How many of the emails each instance sent (``claimed_by`` stays on a sent email)."""
    with psycopg.connect(url, autocommit=True) as connection:
        return {
            str(instance): int(count)
            for instance, count in connection.execute(
                "SELECT claimed_by, COUNT(*) FROM requests GROUP BY 1 ORDER BY 1"
            )
        }


CONFIGURATIONS = {"sqlite x1": 0, "postgresql x1": 1, "postgresql x2": 2, "postgresql x3": 3}


def part_throughput(arguments: argparse.Namespace, directory: Path, backend: str) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGURATIONS}
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(run_fake_ses()) if backend == "ses" else None
        for round_number in range(arguments.repeats):
            order = list(CONFIGURATIONS.items())
            if round_number % 2:
                order.reverse()
            for name, instances in order:
                runs[name].append(
                    run_throughput(
                        instances,
                        arguments.emails,
                        directory / f"{backend}-{name}-{round_number}",
                        backend,
                        fake,
                        parallel=arguments.posting == "parallel",
                    )
                )
    best = {name: max(r, key=lambda m: m["emails_per_second"]) for name, r in runs.items()}
    sqlite = best["sqlite x1"]["emails_per_second"]
    x1_over_sqlite = best["postgresql x1"]["emails_per_second"] / sqlite
    x3_over_x1 = (
        best["postgresql x3"]["emails_per_second"] / best["postgresql x1"]["emails_per_second"]
    )
    return {
        "backend": backend,
        "best": best,
        "all": runs,
        "postgresql_x1_over_sqlite": x1_over_sqlite,
        "postgresql_x3_over_x1": x3_over_x1,
        "aim_x1_over_sqlite_pass": x1_over_sqlite >= 0.5,
        "aim_x3_over_x1_pass": x3_over_x1 > 1.0,
    }


def part_claim(arguments: argparse.Namespace) -> dict[str, Any]:
    from sesender.models import NewMessage, Submission

    count = arguments.claim_emails
    with (
        postgres_support.temporary_database("sesender_claim") as url,
        psycopg.connect(url, autocommit=True) as connection,
    ):
        pg_queries.apply_migrations(connection)
        now = int(time.time() * 1000)
        message = NewMessage("t", "s", "<p>b</p>", tuple(f"u{i}@x.com" for i in range(count)))
        pg_queries.submit(
            connection, Submission((message,), due_at_ms=now, created_at_ms=now), None, 0, True
        )
        with tempfile.TemporaryFile("w+") as trace:
            connection.pgconn.trace(trace.fileno())
            cache: dict[int, Any] = {}
            claims = 0
            while True:
                batch = pg_queries.claim_due(connection, now, 1000, "bench", cache)
                claims += 1
                if not batch.emails:
                    break
                for first in range(0, len(batch.emails), 100):
                    pg_queries.record_outcomes(
                        connection,
                        [
                            Sent(e.request_id, f"m{e.request_id}", 1, now)
                            for e in batch.emails[first : first + 100]
                        ],
                        now,
                    )
            connection.pgconn.untrace()
            trace.seek(0)
            round_trips = sum(
                1 for line in trace if "\tF\t" in line and ("\tSync" in line or "\tQuery\t" in line)
            )
    return {
        "emails": count,
        "claims": claims,
        "round_trips": round_trips,
        "round_trips_per_1000": round_trips / count * 1000,
    }


def part_rate(arguments: argparse.Namespace, directory: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for rate in (200, 2000):
        burst = rate // 10
        emails = rate * arguments.rate_seconds
        with (
            running_fake_ses() as fake,
            postgres_support.temporary_database("sesender_rate") as url,
        ):
            processes: list[ServiceProcess] = []
            try:
                for number in range(3):
                    workdir = directory / f"rate{rate}-{number}"
                    workdir.mkdir(parents=True, exist_ok=True)
                    env = base_env(workdir) | fake.service_env(
                        DATABASE_URL=url,
                        MAX_SEND_PER_SECOND=str(rate),
                        SEND_BURST=str(burst),
                    )
                    processes.append(ServiceProcess(workdir, env).start())
                # All emails posted to one instance: the others must still take their share.
                for first in range(0, emails, 10_000):
                    post(
                        f"{processes[0].url}/v1/messages",
                        {
                            "messages": [
                                {
                                    "topic_id": "rate",
                                    "emails": [
                                        f"u{n}@example.com"
                                        for n in range(first, min(emails, first + 10_000))
                                    ],
                                    "subject": "s",
                                    "content": "<p>x</p>",
                                }
                            ]
                        },
                    )
                while fake.get("/_bench/stats")["bulk_entries"] < emails:
                    time.sleep(0.2)
                times = [message["at"] for message in fake.messages()]
            finally:
                for process in processes:
                    process.kill()
        busiest = max_in_any_second(times)
        span = max(times) - min(times)
        results[str(rate)] = {
            "emails": emails,
            "burst": burst,
            "busiest_second": busiest,
            "limit_rate_plus_burst": rate + burst,
            "achieved_per_second": (len(times) - burst) / span if span else None,
        }
    return results


def throughput_report(throughput: dict[str, Any]) -> str:
    best = throughput["best"]
    table = format_table(
        [
            "configuration",
            "emails/s (best)",
            "seconds",
            "service CPU s / 1,000",
            "PostgreSQL CPU s / 1,000",
            "PG transactions / 1,000",
            "PG active sessions",
            "PG waits (share of active samples)",
        ],
        [
            [
                name,
                m["emails_per_second"],
                m["seconds"],
                m["service_cpu_seconds_per_1000"],
                m.get("pg_cpu_seconds_per_1000", 0.0),
                m.get("pg_transactions_per_1000", 0.0),
                m.get("pg_mean_active_sessions", 0.0),
                ", ".join(f"{k} {v:.2f}" for k, v in m.get("pg_waits", {}).items()) or "-",
            ]
            for name, m in best.items()
        ],
    )

    def verdict(passed: bool) -> str:
        return "PASS" if passed else "FAIL"

    return (
        f"end to end, {throughput['backend']} backend:\n\n{table}\n\n"
        f"aim: postgresql x1 / sqlite x1 >= 0.5: {throughput['postgresql_x1_over_sqlite']:.2f}"
        f" {verdict(throughput['aim_x1_over_sqlite_pass'])}\n"
        f"aim: postgresql x3 / x1 > 1: {throughput['postgresql_x3_over_x1']:.2f}"
        f" {verdict(throughput['aim_x3_over_x1_pass'])}"
    )


def report(figures: dict[str, Any]) -> str:
    lines: list[str] = []
    for backend in ("memory", "ses"):
        key = f"throughput_{backend}"
        if key in figures:
            lines.append(throughput_report(figures[key]))
    if "claim" in figures:
        claim = figures["claim"]
        lines.append(
            f"claim path: {claim['round_trips']} round trips for {claim['emails']} emails"
            f" ({claim['round_trips_per_1000']:.1f} per 1,000; {claim['claims']} claims)"
        )
    if "rate" in figures:
        lines.append(
            format_table(
                ["R", "burst", "busiest second", "R + burst", "achieved/s"],
                [
                    [
                        int(r),
                        v["burst"],
                        v["busiest_second"],
                        v["limit_rate_plus_burst"],
                        v["achieved_per_second"],
                    ]
                    for r, v in figures["rate"].items()
                ],
            )
        )
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        choices=["all", "throughput", "memory", "ses", "claim", "rate"],
        default="all",
        help="throughput = memory and ses; memory / ses = the end-to-end part of one backend",
    )
    parser.add_argument("--emails", type=int, default=60_000)
    parser.add_argument(
        "--posting",
        choices=["parallel", "sequential"],
        default="parallel",
        help="parallel: one client per instance (default); sequential: one client in turn",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--claim-emails", type=int, default=10_000)
    parser.add_argument("--rate-seconds", type=int, default=8)
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.emails, arguments.repeats, arguments.claim_emails = 300, 1, 300
        arguments.rate_seconds = 1
    figures: dict[str, Any] = {"machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="sesender-bench-") as scratch:
        directory = Path(scratch)
        if arguments.part in ("all", "claim"):
            figures["claim"] = part_claim(arguments)
        for backend in ("memory", "ses"):
            if arguments.part in ("all", "throughput", backend):
                figures[f"throughput_{backend}"] = part_throughput(arguments, directory, backend)
        if arguments.part in ("all", "rate"):
            figures["rate"] = part_rate(arguments, directory)
    print(report(figures))
    write_result("instances", arguments.results_dir, arguments, figures)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
