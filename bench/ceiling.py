"""Throughput ceiling: how many emails per second the whole service gets through, end to end.

Two parts, each against a baseline measured in the same run, best of ``--repeats`` (interleaved;
on a shared, noisy machine noise only ever slows a run down, so the best run is the fairest):

**(a) memory backend, nothing to wait for.** The real service in-process
(``open_service(config, backend=MemoryBackend(latency=0), handle_signals=False)``) with
``SENDER_BACKEND=memory``, ``MAX_SEND_PER_SECOND`` at the largest value the configuration
accepts (100,000/s) and ``SEND_BURST`` at its largest (1,000,000), so the token bucket never
holds anything back. The clock starts before the first of ``--emails`` (default 30,000) emails is
submitted (``service.store.submit`` in submissions of 10,000, ``notify_submitted`` after each)
and stops when ``store.topic_stats(topic)`` (polled every ``--poll`` seconds) counts every one of
them ``Sent``, i.e. when every outcome is persisted. Aim: >= 8,000 emails/s. The process's CPU
time over the run (service and the submitting code, one process) is reported per 1,000 emails.
Baseline (**store floor**): the same database work done back to back by one task with nothing
else running: submit in 10,000s, ``claim_due`` 1,000 at a time, ``record_outcomes`` of ``Sent``
100 at a time (the post-processor's batch), on a fresh database. The ratio service / floor says
how much the actors, the hand-offs and composing each message cost on top of SQLite.

**(b) ses backend against a local fake SES.** ``bench.fake_ses`` runs as a separate process on
127.0.0.1 (asyncio, keep-alive, answers ``SendEmail`` with a MessageId and ``GetAccount`` with a
healthy account). The service runs with ``SENDER_BACKEND=ses``, ``AWS_ENDPOINT_URL_SESV2`` at the
fake, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY=testing``,
``AWS_SES_FROM_EMAIL=bench@example.com`` and ``MAX_SEND_PER_SECOND=--ses-rate`` (default 1,000,
far above what boto3 reaches here, so the rate never binds; the service sizes its SES thread lane
and connection pool at 2 x rate), measured like (a) over ``--ses-emails`` (default 10,000).
Baselines: plain loops of boto3 ``send_email`` against the same fake with a client built by the
same ``sesender.backends.ses.build_ses_client`` (same pool size, timeouts, no retries), sending
the very same requests (composed by sesender before the clock starts): one thread, and a
``ThreadPoolExecutor`` with as many workers as the service's SES lane. Aim: service >= 0.8 x the
best baseline. The fake server shares the machine's 2 cores with the client: its CPU time is
reported next to each figure.

    python -m bench.ceiling                            # (a) 30,000 emails; (b) 10,000 emails
    python -m bench.ceiling --emails 100000 --ses-emails 20000 --repeats 3
    python -m bench.ceiling --quick                    # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from bench.common import (
    BODY,
    REPO_DIR,
    SUBJECT,
    ErrorCounter,
    ThreadTimes,
    add_output_arguments,
    format_table,
    make_emails,
    quiet_logging,
    service_values,
    verdict,
    wall_ms,
    write_result,
)
from sesender.backends.memory import MemoryBackend
from sesender.backends.ses import build_send_email_request, build_ses_client
from sesender.config import Config, load_config
from sesender.models import ClaimedEmail, Content, NewMessage, Sent, Submission
from sesender.pipeline.compose import MessageComposer
from sesender.service import open_service
from sesender.store import open_sqlite_store
from sesender.store.base import Store
from sesender.tracking import TokenSigner

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import SendEmailRequestTypeDef

NAME = "ceiling"
TOPIC = "bench_ceiling"
MEMORY_AIM = 8000.0
SES_AIM = 0.8
PER_SUBMISSION = 10_000
CLAIM_BATCH = 1000
FLUSH_BATCH = 100
#: The configuration's own maxima: an unreachable rate and a bucket that never runs dry.
MAX_RATE = "100000"
MAX_BURST = "1000000"
AWS_REGION = "us-east-1"


# --- CPU accounting -------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process, from /proc (0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measurement:
    emails: int
    seconds: float
    client_cpu: float
    server_cpu: float = 0.0
    peak_threads: int = 0
    extra: dict[str, Any] | None = None

    @property
    def rate(self) -> float:
        return self.emails / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "emails": self.emails,
            "seconds": self.seconds,
            "emails_per_second": self.rate,
            "client_cpu_seconds": self.client_cpu,
            "client_cpu_seconds_per_1000_emails": 1000 * self.client_cpu / max(1, self.emails),
            "server_cpu_seconds": self.server_cpu,
            "peak_threads": self.peak_threads,
            **(self.extra or {}),
        }


# --- the fake SES process -------------------------------------------------------------------


class FakeSes:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def call_counts(self) -> dict[str, int]:
        """``send_email`` and ``send_bulk_email`` calls and ``bulk_entries`` so far."""
        with urllib.request.urlopen(f"{self.url}/_bench/stats", timeout=5) as reply:
            stats = json.load(reply)
        return {
            name: int(stats[name]) for name in ("send_email", "send_bulk_email", "bulk_entries")
        }


@contextmanager
def run_fake_ses() -> Iterator[FakeSes]:
    """Start ``bench.fake_ses`` as a child process; stop that process (and only it) after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_ses", "--port", "0"],
        cwd=REPO_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the fake SES did not start: {line!r}")
        yield FakeSes(process, int(line.split()[1]))
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# --- measuring the service ------------------------------------------------------------------


async def wait_all_sent(
    store: Store, topic: str, total: int, poll: float, on_poll: Callable[[], None]
) -> dict[str, int]:
    """Poll ``topic_stats`` until ``total`` emails are Sent (or one Failed); return the counts.

    The caller bounds this with a deadline: a pipeline that loses outcomes never gets there.
    """
    while True:
        counts = (await store.topic_stats(topic)).request_counts
        on_poll()
        if counts.get("Sent", 0) >= total:
            return counts
        if counts.get("Failed", 0):
            raise RuntimeError(f"emails failed: {counts}")
        await trio.sleep(poll)


async def measure_service(
    config: Config,
    emails: Sequence[str],
    *,
    poll: float,
    give_up_after: float,
    backend: MemoryBackend | None = None,
    fake: FakeSes | None = None,
) -> Measurement:
    """From the first submit until ``topic_stats`` counts every email Sent (or ``give_up_after``
    seconds have passed: a pipeline that loses outcomes never gets there)."""
    peak_threads = threading.active_count()

    def sample_threads() -> None:
        nonlocal peak_threads
        peak_threads = max(peak_threads, threading.active_count())

    with ErrorCounter() as errors:
        async with open_service(config, backend=backend, handle_signals=False) as service:
            server_cpu = fake.cpu_seconds() if fake else 0.0
            client_cpu = time.process_time()
            loop_times = ThreadTimes.now()
            started = time.perf_counter()
            submitted = float("nan")
            with trio.move_on_after(give_up_after) as deadline:
                for start in range(0, len(emails), PER_SUBMISSION):
                    now = wall_ms()
                    message = NewMessage(
                        topic_id=TOPIC,
                        subject=SUBJECT,
                        body=BODY,
                        emails=tuple(emails[start : start + PER_SUBMISSION]),
                    )
                    await service.store.submit(
                        Submission(messages=(message,), due_at_ms=now, created_at_ms=now)
                    )
                    service.pipeline.notify_submitted()
                submitted = time.perf_counter() - started
                await wait_all_sent(service.store, TOPIC, len(emails), poll, sample_threads)
            seconds = time.perf_counter() - started
            loop = ThreadTimes.now().since(loop_times)
            client_cpu = time.process_time() - client_cpu
            server_cpu = (fake.cpu_seconds() - server_cpu) if fake else 0.0
            counts = (await service.store.topic_stats(TOPIC)).request_counts
            pool = service.pipeline.sender_pool.statistics()
            outcome_pipe = service.pipeline.pipe_statistics()[-1]
            service.shutdown.trigger("bench")
    sent = counts.get("Sent", 0)
    return Measurement(
        emails=sent,
        seconds=seconds,
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        peak_threads=peak_threads,
        extra={
            "submitted": len(emails),
            "complete": not deadline.cancelled_caught,
            "final_counts": counts,
            "submit_seconds": submitted,
            "peak_in_flight": pool.peak_in_flight,
            "max_in_flight": pool.max_in_flight,
            "outcome_pipe_peak_depth": outcome_pipe.peak_depth,
            **{f"event_loop_{key}": value for key, value in loop.items()},
            **errors.as_dict(),
        },
    )


async def measure_store_floor(path: Path, emails: Sequence[str]) -> Measurement:
    """The database work of ``len(emails)`` sends, back to back, with no pipeline around it."""
    async with open_sqlite_store(path) as store:
        client_cpu = time.process_time()
        started = time.perf_counter()
        for start in range(0, len(emails), PER_SUBMISSION):
            now = wall_ms()
            message = NewMessage(
                topic_id=TOPIC,
                subject=SUBJECT,
                body=BODY,
                emails=tuple(emails[start : start + PER_SUBMISSION]),
            )
            await store.submit(Submission(messages=(message,), due_at_ms=now, created_at_ms=now))
        while True:
            batch = await store.claim_due(now_ms=wall_ms(), limit=CLAIM_BATCH)
            if not batch.emails:
                break
            for first in range(0, len(batch.emails), FLUSH_BATCH):
                now = wall_ms()
                outcomes = [
                    Sent(
                        request_id=email.request_id,
                        message_id=f"floor-{email.request_id}",
                        attempts=1,
                        sent_at_ms=now,
                    )
                    for email in batch.emails[first : first + FLUSH_BATCH]
                ]
                await store.record_outcomes(outcomes, now_ms=now)
        stats = await store.topic_stats(TOPIC)
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
    if stats.request_counts.get("Sent", 0) != len(emails):
        raise RuntimeError(f"store floor ended with {stats.request_counts}")
    return Measurement(emails=len(emails), seconds=seconds, client_cpu=client_cpu)


# --- the boto3 baselines --------------------------------------------------------------------


def ses_pool_size(config: Config) -> int:
    """The SES lane and connection pool size the service uses (``service.build_backend``)."""
    return max(1, int(2 * config.pipeline.max_send_per_second))


def baseline_client(config: Config, fake: FakeSes) -> SESV2Client:
    return build_ses_client(
        region=AWS_REGION,
        pool_size=ses_pool_size(config),
        connect_timeout=config.backend.aws.connect_timeout,
        read_timeout=config.backend.aws.read_timeout,
        endpoint_url=fake.url,
        access_key_id="testing",
        secret_access_key="testing",
    )


#: Set on the SES runs so the baseline signs its pixels exactly as the service does.
BASELINE_TRACKING_SECRET = "bench-ceiling-tracking-secret"


def baseline_requests(config: Config, emails: Sequence[str]) -> list[SendEmailRequestTypeDef]:
    """Exactly what the service sends for these emails: pixel, tags, unsubscribe headers."""
    composer = MessageComposer(
        sender=config.backend.aws.from_email,
        public_url=config.server.public_url,
        signer=TokenSigner(BASELINE_TRACKING_SECRET.encode()),
        configuration_set=config.backend.aws.configuration_set,
        unsubscribe_enabled=config.feedback.unsubscribe_enabled,
    )
    content = Content(subject=SUBJECT, body=BODY)
    return [
        build_send_email_request(
            composer.compose(
                ClaimedEmail(
                    request_id=index + 1, topic_id=TOPIC, email=email, content=content, attempts=0
                )
            )
        )
        for index, email in enumerate(emails)
    ]


def measure_boto3(
    client: SESV2Client,
    requests: Sequence[SendEmailRequestTypeDef],
    fake: FakeSes,
    *,
    workers: int,
) -> Measurement:
    """Send every request with ``client.send_email``: in a loop, or from a thread pool."""

    def send(request: SendEmailRequestTypeDef) -> str:
        return client.send_email(**request)["MessageId"]

    threads_before = threading.active_count()
    server_cpu = fake.cpu_seconds()
    client_cpu = time.process_time()
    started = time.perf_counter()
    peak_threads = threads_before
    if workers == 1:
        for request in requests:
            send(request)
    else:
        with ThreadPoolExecutor(max_workers=workers) as executor:
            for _ in executor.map(send, requests):
                pass
            peak_threads = threading.active_count()
    seconds = time.perf_counter() - started
    return Measurement(
        emails=len(requests),
        seconds=seconds,
        client_cpu=time.process_time() - client_cpu,
        server_cpu=fake.cpu_seconds() - server_cpu,
        peak_threads=peak_threads,
        extra={"workers": workers},
    )


# --- the two parts --------------------------------------------------------------------------


def memory_config(database: Path) -> Config:
    return load_config(
        service_values(
            database, SENDER_BACKEND="memory", MAX_SEND_PER_SECOND=MAX_RATE, SEND_BURST=MAX_BURST
        )
    )


def ses_config(database: Path, fake: FakeSes, rate: float) -> Config:
    return load_config(
        service_values(
            database,
            SENDER_BACKEND="ses",
            MAX_SEND_PER_SECOND=f"{rate:g}",
            SEND_BURST=MAX_BURST,
            AWS_REGION=AWS_REGION,
            AWS_ENDPOINT_URL_SESV2=fake.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_SES_FROM_EMAIL="bench@example.com",
            SERVER_URL="https://bench.example.test",
            TRACKING_SECRET=BASELINE_TRACKING_SECRET,
        )
    )


def best(measurements: Sequence[Measurement]) -> Measurement:
    """The fastest complete run (a run that timed out counts only when all did)."""
    complete = [m for m in measurements if (m.extra or {}).get("complete", True)]
    return max(complete or measurements, key=lambda measurement: measurement.rate)


def run_memory(arguments: argparse.Namespace, directory: Path) -> dict[str, Any]:
    emails = make_emails(arguments.emails)
    services: list[Measurement] = []
    floors: list[Measurement] = []
    for repeat in range(arguments.repeats):
        order = ("service", "floor") if repeat % 2 == 0 else ("floor", "service")
        for which in order:
            database = directory / f"memory-{which}-{repeat}.db"
            if which == "service":
                config = memory_config(database)
                services.append(
                    trio.run(
                        partial(
                            measure_service,
                            config,
                            emails,
                            poll=arguments.poll,
                            give_up_after=arguments.timeout,
                            backend=MemoryBackend(),
                        )
                    )
                )
            else:
                floors.append(trio.run(measure_store_floor, database, emails))
    service, floor = best(services), best(floors)
    return {
        "emails": arguments.emails,
        "service": service.as_dict(),
        "service_runs": [run.as_dict() for run in services],
        "store_floor": floor.as_dict(),
        "store_floor_runs": [run.as_dict() for run in floors],
        "ratio_to_store_floor": service.rate / floor.rate,
        "aim_emails_per_second": MEMORY_AIM,
        "passed": service.rate >= MEMORY_AIM,
    }


def run_ses(arguments: argparse.Namespace, directory: Path) -> dict[str, Any]:
    emails = make_emails(arguments.ses_emails)
    services: list[Measurement] = []
    sequential: list[Measurement] = []
    threaded: list[Measurement] = []
    with run_fake_ses() as fake:
        config = ses_config(directory / "ses-template.db", fake, arguments.ses_rate)
        pool = ses_pool_size(config)
        requests = baseline_requests(config, emails)
        client = baseline_client(config, fake)
        try:
            for repeat in range(arguments.repeats):
                calls_before = fake.call_counts()
                run_config = ses_config(directory / f"ses-{repeat}.db", fake, arguments.ses_rate)
                services.append(
                    trio.run(
                        partial(
                            measure_service,
                            run_config,
                            emails,
                            poll=arguments.poll,
                            give_up_after=arguments.timeout,
                            fake=fake,
                        )
                    )
                )
                calls_after = fake.call_counts()
                assert services[-1].extra is not None
                extra = services[-1].extra
                extra["send_email_calls"] = calls_after["send_email"] - calls_before["send_email"]
                extra["send_bulk_email_calls"] = (
                    calls_after["send_bulk_email"] - calls_before["send_bulk_email"]
                )
                extra["bulk_entries"] = calls_after["bulk_entries"] - calls_before["bulk_entries"]
                sequential.append(measure_boto3(client, requests, fake, workers=1))
                threaded.append(measure_boto3(client, requests, fake, workers=pool))
        finally:
            client.close()
    service = best(services)
    baselines = {"one thread": best(sequential), f"{pool} threads": best(threaded)}
    best_name, best_baseline = max(baselines.items(), key=lambda item: item[1].rate)
    ratio = service.rate / best_baseline.rate
    return {
        "emails": arguments.ses_emails,
        "rate_setting": arguments.ses_rate,
        "pool_size": pool,
        "service": service.as_dict(),
        "service_runs": [run.as_dict() for run in services],
        "boto3_one_thread": baselines["one thread"].as_dict(),
        "boto3_one_thread_runs": [run.as_dict() for run in sequential],
        "boto3_thread_pool": baselines[f"{pool} threads"].as_dict(),
        "boto3_thread_pool_runs": [run.as_dict() for run in threaded],
        "best_baseline": best_name,
        "ratio_to_best_baseline": ratio,
        "aim_ratio": SES_AIM,
        "passed": ratio >= SES_AIM,
    }


def loop_table(service: dict[str, Any]) -> str:
    """Where the service's event-loop (trio) thread spent the run."""
    on_cpu = service.get("event_loop_thread_on_cpu_share", 0.0)
    waiting = service.get("event_loop_thread_waiting_for_cpu_share", 0.0)
    return format_table(
        (
            "service event-loop thread",
            "on CPU",
            "runnable, waiting for a CPU",
            "idle (waiting for I/O, threads)",
            "CPU per email (ms)",
        ),
        [
            (
                "share of the run",
                f"{on_cpu:.0%}",
                f"{waiting:.0%}",
                f"{max(0.0, 1 - on_cpu - waiting):.0%}",
                1000
                * service.get("event_loop_thread_on_cpu_seconds", 0.0)
                / max(1, service["emails"]),
            )
        ],
    )


def report(figures: dict[str, Any]) -> str:
    parts: list[str] = []
    headers = (
        "run",
        "emails done",
        "emails/s",
        "seconds",
        "client CPU s",
        "client CPU s / 1,000",
        "server CPU s",
        "threads",
        "complete",
        "errors logged",
    )

    def row(label: str, measurement: dict[str, Any]) -> tuple[object, ...]:
        return (
            label,
            measurement["emails"],
            measurement["emails_per_second"],
            measurement["seconds"],
            measurement["client_cpu_seconds"],
            1000 * measurement["client_cpu_seconds"] / max(1, measurement["emails"]),
            measurement["server_cpu_seconds"],
            measurement["peak_threads"] or "-",
            measurement.get("complete", True),
            measurement.get("errors_logged", 0),
        )

    if "memory" in figures:
        memory = figures["memory"]
        parts.append("(a) memory backend, no latency, rate unreachable")
        parts.append(
            format_table(
                headers,
                [
                    row("sesender service (end to end)", memory["service"]),
                    row("store floor (same DB work, no pipeline)", memory["store_floor"]),
                ],
            )
        )
        parts.append(loop_table(memory["service"]))
        parts.append(
            f"service / store floor = {memory['ratio_to_store_floor']:.2f};"
            f" aim >= {MEMORY_AIM:,.0f} emails/s:"
            f" {verdict(memory['passed'])} ({memory['service']['emails_per_second']:,.0f}/s)"
        )
    if "ses" in figures:
        ses = figures["ses"]
        parts.append(
            f"(b) ses backend against the local fake SES (MAX_SEND_PER_SECOND="
            f"{ses['rate_setting']:g}, SES lane and connection pool {ses['pool_size']})"
        )
        parts.append(
            format_table(
                headers,
                [
                    row("sesender service (end to end)", ses["service"]),
                    row("boto3 send_email loop, 1 thread", ses["boto3_one_thread"]),
                    row(
                        f"boto3 send_email, ThreadPoolExecutor({ses['pool_size']})",
                        ses["boto3_thread_pool"],
                    ),
                ],
            )
        )
        parts.append(loop_table(ses["service"]))
        parts.append(
            f"service / best baseline ({ses['best_baseline']}) ="
            f" {ses['ratio_to_best_baseline']:.2f}; aim >= {SES_AIM}: {verdict(ses['passed'])}"
        )
    return "\n\n".join(parts)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceiling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--emails", type=int, default=30_000, help="(a) emails per run")
    parser.add_argument("--ses-emails", type=int, default=10_000, help="(b) emails per run")
    parser.add_argument(
        "--ses-rate", type=float, default=1000.0, help="(b) MAX_SEND_PER_SECOND (never reached)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the best counts")
    parser.add_argument("--poll", type=float, default=0.02, help="topic_stats polling interval")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="give a service run up to this many seconds"
    )
    parser.add_argument(
        "--part", choices=("all", "memory", "ses"), default="all", help="run only one part"
    )
    parser.add_argument(
        "--directory", type=Path, default=None, help="where the database files go (temporary)"
    )
    parser.add_argument(
        "--tag", default="", help="write ceiling-<tag>.json instead of ceiling.json (variants)"
    )
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.emails = 200
        arguments.ses_emails = 20
        arguments.ses_rate = 20.0
        arguments.repeats = 1
        arguments.poll = 0.01
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    quiet_logging()
    figures: dict[str, Any] = {}
    directory = Path(tempfile.mkdtemp(prefix="sesender-ceiling-", dir=arguments.directory))
    try:
        if arguments.part in ("all", "memory"):
            figures["memory"] = run_memory(arguments, directory)
        if arguments.part in ("all", "ses"):
            figures["ses"] = run_ses(arguments, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(report(figures))
    name = f"{NAME}-{arguments.tag}" if arguments.tag else NAME
    path = write_result(name, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
