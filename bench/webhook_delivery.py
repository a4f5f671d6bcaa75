"""Outbound webhooks: events delivered per second, while sending runs at a fixed rate.

What it measures, in one run, on one machine:

* **baseline**: the real service as a process (memory backend, ``MAX_SEND_PER_SECOND=--rate``,
  no webhook endpoint) sends ``--emails`` emails; the send rate is the emails over the time from
  submission to the last one ``Sent``, and the service's CPU seconds are read from ``/proc``.
* **with webhooks**: a fresh database. First the service runs with
  ``WEBHOOK_DELIVERY_ENABLED=false`` (events are recorded, nothing is delivered), ``--endpoints``
  endpoints are created, all pointing at one local receiver (``bench/webhook_receiver.py``, its
  own process, which verifies every delivery with the ``standardwebhooks`` package) and
  subscribed to ``email.sent``, and ``--backlog`` emails are sent as fast as the memory backend
  goes: ``endpoints x backlog`` events wait. Then the service is restarted with the same
  ``--rate`` as the baseline, with delivery off and ``--deliverers`` ``sesender deliver-webhooks``
  processes beside it (default 1; ``--deliverers 0``: the service delivers itself), and the same
  ``--emails`` are submitted at once: the send rate is measured as in the baseline while the
  deliverers drain the backlog (and the new emails' events) at full speed. Delivered events per
  second is the receiver's count over the sending window (the backlog keeps delivery saturated
  throughout) and, separately, over the whole drain. CPU per delivered event is reported for the
  service, the deliverers together and the receiver, each from ``/proc``.

Pass: delivery >= 2,000 events/s during the window, and the send rate with webhooks at least 95%
of the baseline's (the rate limiter sets it; "unaffected" means webhooks do not pull it down).
Every delivery must verify, and every event must arrive (distinct event ids = events).

    python -m bench.webhook_delivery                      # rate 200/s, 2,000 emails, 4 x 10,000
    python -m bench.webhook_delivery --deliverers 2       # two deliverer processes
    python -m bench.webhook_delivery --quick              # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import add_output_arguments, format_table, verdict, write_result
from bench.webhook import Process, console_script, process_cpu_seconds, running

NAME = "webhook_delivery"
AIM_EVENTS_PER_SECOND = 2000.0
AIM_SEND_RATIO = 0.95


def progress(step: str) -> None:
    print(f"[webhook_delivery] {step}", file=sys.stderr, flush=True)


def service_env(
    directory: Path, *, rate: float, delivery: bool, concurrency: int
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "SENTRY_", "SES_", "SNS_", "WEBHOOK_"))
    }
    env.update(
        SERVER_HOST="127.0.0.1",
        SERVER_PORT="0",
        API_KEY="bench",
        DATABASE_PATH=str(directory / "sesender.db"),
        SENDER_BACKEND="memory",
        MAX_SEND_PER_SECOND=str(rate),
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        SCHEDULER_INTERVAL_SECONDS="1",
        WEBHOOK_ALLOW_PRIVATE="true",
        WEBHOOK_DELIVERY_ENABLED="true" if delivery else "false",
        WEBHOOK_CONCURRENCY=str(concurrency),
        WEBHOOK_POLL_SECONDS="0.2",
    )
    return env


@contextmanager
def service(directory: Path, **settings: Any) -> Any:
    with running(console_script(), service_env(directory, **settings)) as process:
        url = process.wait_for_json("event", "listening")["urls"][0]
        with httpx.Client(base_url=url, headers={"X-API-KEY": "bench"}, timeout=60) as client:
            yield process, client


@contextmanager
def deliverers(directory: Path, arguments: argparse.Namespace) -> Any:
    """``--deliverers`` ``sesender deliver-webhooks`` processes beside the service (none: the
    service delivers); yields their pids."""
    env = service_env(
        directory, rate=arguments.rate, delivery=True, concurrency=arguments.concurrency
    )
    with ExitStack() as stack:
        processes = []
        for _ in range(arguments.deliverers):
            process = stack.enter_context(running([*console_script(), "deliver-webhooks"], env))
            process.wait_for_json("event", "webhook_deliverer_started")
            processes.append(process)
        started = time.monotonic()
        yield [process.process.pid for process in processes]
        for number, process in enumerate(processes, start=1):
            warnings = [line for line in process.lines if '"level": "warning"' in line]
            progress(
                f"deliverer {number} ran {time.monotonic() - started:.1f} s;"
                f" {len(warnings)} warnings"
            )
            for line in warnings[:5]:
                progress(line[:300])


def submit(client: httpx.Client, topic: str, count: int) -> None:
    for start in range(0, count, 10_000):
        emails = [f"{topic}{n}@example.org" for n in range(start, min(count, start + 10_000))]
        response = client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"topic_id": topic, "emails": emails, "subject": "s", "content": "<p>c</p>"}
                ]
            },
        )
        response.raise_for_status()


def wait_sent(client: httpx.Client, topic: str, count: int, timeout: float) -> float:
    """Poll until ``count`` emails of ``topic`` are Sent; return when (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = client.get(f"/v1/topics/{topic}").json()["request_counts"]
        if counts.get("Sent", 0) >= count:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{topic}: not all sent in time: {counts}")
        time.sleep(0.02)


def send_paced(process: Process, client: httpx.Client, topic: str, count: int) -> dict[str, float]:
    pid = process.process.pid
    cpu_before = process_cpu_seconds(pid)
    started = time.monotonic()
    submit(client, topic, count)
    finished = wait_sent(client, topic, count, timeout=count / 5 + 60)
    seconds = finished - started
    return {
        "started": started,
        "finished": finished,
        "seconds": seconds,
        "send_rate": count / seconds,
        "service_cpu_seconds": process_cpu_seconds(pid) - cpu_before,
    }


def receiver_stats(receiver_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{receiver_url}/stats", timeout=10).json()
    return stats


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-webhook-delivery-"))
    try:
        with running([sys.executable, "-m", "bench.webhook_receiver"]) as receiver_process:
            port = receiver_process.wait_for_json("port")["port"]
            receiver_url = f"http://127.0.0.1:{port}"
            receiver_pid = receiver_process.process.pid

            # 1. Baseline: sending alone.
            (directory / "baseline").mkdir()
            with service(
                directory / "baseline",
                rate=arguments.rate,
                delivery=True,
                concurrency=arguments.concurrency,
            ) as (process, client):
                baseline = send_paced(process, client, "paced", arguments.emails)
            progress(f"baseline: {baseline['send_rate']:.1f} emails/s")

            # 2. The backlog, recorded with delivery off.
            (directory / "webhooks").mkdir()
            secrets = {}
            with service(
                directory / "webhooks",
                rate=arguments.backlog_rate,
                delivery=False,
                concurrency=arguments.concurrency,
            ) as (process, client):
                for index in range(arguments.endpoints):
                    path = f"/hook{index}"
                    created = client.post(
                        "/v1/webhooks",
                        json={"url": receiver_url + path, "event_types": ["email.sent"]},
                    )
                    created.raise_for_status()
                    secrets[path] = created.json()["secret"]
                httpx.put(f"{receiver_url}/secrets", json=secrets, timeout=10).raise_for_status()
                submit(client, "backlog", arguments.backlog)
                wait_sent(client, "backlog", arguments.backlog, timeout=arguments.backlog / 50 + 60)
            backlog_events = arguments.endpoints * arguments.backlog
            progress(f"{backlog_events:,} events waiting")

            # 3. Delivery on, sending at the baseline's rate at the same time.
            expected = backlog_events + arguments.endpoints * arguments.emails
            separate = arguments.deliverers > 0
            with (
                service(
                    directory / "webhooks",
                    rate=arguments.rate,
                    delivery=not separate,
                    concurrency=arguments.concurrency,
                ) as (process, client),
                deliverers(directory / "webhooks", arguments) as deliverer_pids,
            ):
                pid = process.process.pid
                cpu_before = process_cpu_seconds(pid)
                deliverer_cpu_before = sum(process_cpu_seconds(p) for p in deliverer_pids)
                receiver_cpu_before = process_cpu_seconds(receiver_pid)
                start_stats = receiver_stats(receiver_url)
                with_webhooks = send_paced(process, client, "paced", arguments.emails)
                window_stats = receiver_stats(receiver_url)
                deadline = time.monotonic() + expected / 200 + 120
                stats = window_stats
                while stats["delivered"] < expected:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"not every event was delivered: {stats}")
                    time.sleep(0.1)
                    stats = receiver_stats(receiver_url)
                service_cpu = process_cpu_seconds(pid) - cpu_before
                deliverer_cpu = (
                    sum(process_cpu_seconds(p) for p in deliverer_pids) - deliverer_cpu_before
                )
                receiver_cpu = process_cpu_seconds(receiver_pid) - receiver_cpu_before
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    window_events = window_stats["delivered"] - start_stats["delivered"]
    window_rate = window_events / with_webhooks["seconds"]
    drain_seconds = stats["last"] - (start_stats["first"] or stats["first"])
    drain_rate = stats["delivered"] / drain_seconds if drain_seconds > 0 else float("nan")
    send_ratio = with_webhooks["send_rate"] / baseline["send_rate"]
    passed = (
        window_rate >= AIM_EVENTS_PER_SECOND
        and send_ratio >= AIM_SEND_RATIO
        and stats["rejected"] == 0
        and stats["distinct"] == expected
    )
    return {
        "deliverers": arguments.deliverers,
        "rate": arguments.rate,
        "emails": arguments.emails,
        "endpoints": arguments.endpoints,
        "concurrency_per_endpoint": arguments.concurrency,
        "backlog_events": backlog_events,
        "events_expected": expected,
        "events_delivered": stats["delivered"],
        "events_distinct": stats["distinct"],
        "events_rejected": stats["rejected"],
        "baseline_send_rate": baseline["send_rate"],
        "baseline_service_cpu_ms_per_email": baseline["service_cpu_seconds"]
        * 1000
        / arguments.emails,
        "webhooks_send_rate": with_webhooks["send_rate"],
        "send_ratio": send_ratio,
        "window_seconds": with_webhooks["seconds"],
        "window_events": window_events,
        "window_events_per_second": window_rate,
        "drain_seconds": drain_seconds,
        "drain_events_per_second": drain_rate,
        "service_cpu_ms_per_event": service_cpu * 1000 / stats["delivered"],
        "deliverer_cpu_ms_per_event": deliverer_cpu * 1000 / stats["delivered"],
        "delivery_cpu_ms_per_event": (service_cpu + deliverer_cpu) * 1000 / stats["delivered"],
        "receiver_cpu_ms_per_event": receiver_cpu * 1000 / stats["delivered"],
        "load_average_after": os.getloadavg(),
        "aim_events_per_second": AIM_EVENTS_PER_SECOND,
        "aim_send_ratio": AIM_SEND_RATIO,
        "passed": passed,
    }


def report(figures: dict[str, Any]) -> str:
    table = format_table(
        [
            "",
            "send rate (emails/s)",
            "events delivered/s",
            "CPU ms/event: service",
            "deliverer",
            "receiver",
        ],
        [
            ("sending alone", figures["baseline_send_rate"], "-", "-", "-", "-"),
            (
                "sending + webhooks",
                figures["webhooks_send_rate"],
                figures["window_events_per_second"],
                figures["service_cpu_ms_per_event"],
                figures["deliverer_cpu_ms_per_event"],
                figures["receiver_cpu_ms_per_event"],
            ),
        ],
    )
    summary = (
        f"aim: >= {AIM_EVENTS_PER_SECOND:,.0f} events/s delivered while sending, send rate with"
        f" webhooks >= {AIM_SEND_RATIO} of sending alone, every event arrived and verified\n"
        f"send rate with webhooks / alone: {figures['send_ratio']:.3f};"
        f" events/s while sending: {figures['window_events_per_second']:,.0f}; whole drain:"
        f" {figures['drain_events_per_second']:,.0f}/s over {figures['drain_seconds']:.1f} s;"
        f" {figures['events_distinct']:,} of {figures['events_expected']:,} events arrived"
        f" ({figures['events_delivered']:,} deliveries,"
        f" {figures['events_rejected']} not verified); load average after:"
        f" {figures['load_average_after'][0]:.1f}\n{verdict(figures['passed'])}"
    )
    return f"{table}\n\n{summary}"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook_delivery", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--rate", type=float, default=200.0, help="MAX_SEND_PER_SECOND")
    parser.add_argument("--emails", type=int, default=2000, help="emails sent at --rate")
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16, help="WEBHOOK_CONCURRENCY")
    parser.add_argument("--backlog", type=int, default=10_000, help="emails whose events wait")
    parser.add_argument("--backlog-rate", type=float, default=5000.0)
    parser.add_argument(
        "--deliverers",
        type=int,
        default=1,
        help="`sesender deliver-webhooks` processes beside a service with"
        " WEBHOOK_DELIVERY_ENABLED=false (0: the service delivers itself)",
    )
    parser.add_argument(
        "--deliverer-process",
        action="store_const",
        const=1,
        dest="deliverers",
        help="the same as --deliverers 1 (the default)",
    )
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.rate = 50.0
        arguments.emails = 50
        arguments.endpoints = 2
        arguments.concurrency = 4
        arguments.backlog = 100
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    figures = run(arguments)
    print(report(figures))
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    print(json.dumps({"passed": figures["passed"]}))
    return figures


if __name__ == "__main__":
    main()
