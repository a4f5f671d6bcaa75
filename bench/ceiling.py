"""Throughput ceiling: how many emails per second the whole service gets through, end to end.

Two parts, each against a baseline measured in the same run, best of ``--repeats`` (interleaved;
on a shared, noisy machine noise only ever slows a run down, so the best run is the fairest):

**(a) memory backend, nothing to wait for.** The real service in-process
(``open_service(config, handle_signals=False)``, which builds the backend as ``sesender serve``
does: the memory backend with no latency, keeping no record per email) with
``SENDER_BACKEND=memory``, ``MAX_SEND_PER_SECOND`` at the largest value the configuration
accepts (100,000/s) and ``SEND_BURST`` at its largest (1,000,000), so the token bucket never
holds anything back. The clock starts before the first of ``--emails`` (default 30,000) emails is
submitted (``service.store.submit`` in submissions of 10,000, ``notify_submitted`` after each)
and stops when ``store.topic_stats(topic)`` (polled every ``--poll`` seconds) counts every one of
them ``Sent``, i.e. when every outcome is persisted. Aim: >= 8,000 emails/s. The process's CPU
time over the run (service and the submitting code, one process) is reported per 1,000 emails.
Once started, the service's garbage collector is set as ``run_service`` sets it
(``sesender.gc_tuning.tune_for_service``), and so is the store floor's: same process settings.
Baseline (**store floor**): the same database work done back to back by one task with nothing
else running: submit in 10,000s, ``claim_due`` 1,000 at a time, ``record_outcomes`` of ``Sent``
100 at a time (the post-processor's batch), on a fresh database. The ratio service / floor says
how much the actors, the hand-offs and composing each message cost on top of SQLite. Aim:
service / floor >= 0.7 (best against best); the floor's CPU per email over the service's is
printed beside it for context (it moves less with the load of a shared machine).

**(b) ses backend in bulk mode against a local fake SES, versus (a) in the same run.**
``bench.fake_ses`` runs as a separate process on 127.0.0.1 (asyncio, keep-alive, answers
``SendEmail`` and ``SendBulkEmail`` with MessageIds, ``GetAccount`` with a healthy account, and
counts calls and bulk entries at ``/_bench/stats``). The service runs with
``SENDER_BACKEND=ses``, ``SES_SEND_MODE=bulk``, ``AWS_ENDPOINT_URL_SESV2`` at the fake,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY=testing``, ``AWS_SES_FROM_EMAIL``,
``SERVER_URL`` and ``TRACKING_SECRET`` set, ``MAX_SEND_PER_SECOND=--ses-rate`` (default the
configuration's maximum, so the rate never binds; the SES thread lane is then at its cap of 256)
and is measured like (a) over ``--ses-emails`` (default 20,000) recipients of one content. The
baseline is the memory backend end to end, measured as (a) but composing exactly what the SES
run's service composes (the same ``AWS_SES_FROM_EMAIL``, ``SERVER_URL`` and ``TRACKING_SECRET``,
``UNSUBSCRIBE_ENABLED=true`` as SES has by default where the memory backend's default is off, and
the same rate setting: the two runs differ only in the backend), over the same emails,
interleaved with the SES runs (SES first in odd rounds, memory first in even ones). Aims: SES /
memory >= 0.7 (best against best); >= 25 recipients per SES call on average (``send_email``
calls plus bulk entries, over ``send_email`` plus ``send_bulk_email`` calls, counted by the
fake); <= 0.3 CPU-seconds of the service's process per 1,000 emails (every thread: event loop,
SQLite writer, the SES lane, and the submitting code; plus the SES client process of
``SES_CLIENT_PROCESS``, where boto3 runs, reported apart too as
``ses_client_process_cpu_seconds``; the fake's CPU is reported apart).

Both parts also report the ratio of each round's two adjacent runs (service and floor, SES and
memory) and the median of those pair ratios: on a machine whose speed changes from one minute to
the next, the best against the best can pair a fast minute with a slow one, and the pairs show
how far the ratio moves (``--repeats 8`` gives eight pairs). The aims are judged best against
best, as before; the pairs' median is printed beside it.

With both parts, for context: the best SES run over the best store floor run. (a) x (b) is that
figure times (a)'s service run over (b)'s memory run, so the two aims can pass together only if
it reaches 0.49 (0.7 x 0.7) times (b)'s memory run over (a)'s service run; a change to the memory
path alone trades one aim for the other and does not move it.

For context only, plain boto3 loops against the same fake with a client built by the same
``sesender.backends.ses.build_ses_client``: ``send_bulk_email`` of 50 in one thread over the
same emails, and ``send_email`` (one thread, and a ``ThreadPoolExecutor`` as wide as the SES
lane) over the first ``--boto3-single-emails`` (default 2,000) of them, with the very requests
sesender builds (composed before the clock starts).

    python -m bench.ceiling                            # (a) 30,000 emails; (b) 20,000 emails
    python -m bench.ceiling --part ses --repeats 3     # (b) only, three interleaved rounds
    python -m bench.ceiling --part ses --repeats 8     # eight rounds: eight adjacent pairs
    python -m bench.ceiling --quick                    # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
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
from sesender.backends.base import OutgoingEmail
from sesender.backends.ses import build_send_email_request, build_ses_client
from sesender.backends.ses_bulk import build_bulk_request, bulk_key, bulk_template, chunk_sizes
from sesender.backends.ses_process import ProcessSesClient
from sesender.config import Config, load_config
from sesender.gc_tuning import tune_for_service
from sesender.models import ClaimedEmail, Content, NewMessage, Sent, Submission
from sesender.pipeline.compose import MessageComposer
from sesender.service import MAX_SEND_THREADS, open_service
from sesender.store import open_sqlite_store
from sesender.store.base import Store
from sesender.tracking import TokenSigner

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import SendBulkEmailRequestTypeDef, SendEmailRequestTypeDef

NAME = "ceiling"
TOPIC = "bench_ceiling"
MEMORY_AIM = 8000.0
#: (a): the service's end-to-end rate over the store floor's, measured in the same run.
MEMORY_FLOOR_AIM = 0.7
#: (b): the SES backend's end-to-end rate over the memory backend's, measured in the same run.
SES_AIM = 0.7
#: (b): recipients per SES call on average, for recipients of one content.
SES_RECIPIENTS_PER_CALL_AIM = 25.0
#: (b): CPU-seconds of the service's process per 1,000 emails.
SES_CPU_AIM = 0.3
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


def ses_child_cpu_seconds(backend: object) -> float:
    """CPU time so far of the SES backend's client process (``SES_CLIENT_PROCESS``), 0 without
    one: it is part of the service, so its CPU counts as the service's."""
    client = getattr(backend, "client", None)
    pid = client.pid if isinstance(client, ProcessSesClient) else None
    return process_cpu_seconds(pid) if pid is not None else 0.0


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its descendants still running (the service's SES client
    process is part of the service); 0 for what has gone."""
    total = process_cpu_seconds(pid)
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return total
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(process_tree_cpu_seconds(int(child)) for child in children)
    return total


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
def run_fake_ses(*options: str) -> Iterator[FakeSes]:
    """Start ``bench.fake_ses`` (with ``options``) as a child process; stop that process (and
    only it) after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_ses", "--port", "0", *options],
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
    fake: FakeSes | None = None,
) -> Measurement:
    """From the first submit until ``topic_stats`` counts every email Sent (or ``give_up_after``
    seconds have passed: a pipeline that loses outcomes never gets there)."""
    peak_threads = threading.active_count()

    def sample_threads() -> None:
        nonlocal peak_threads
        peak_threads = max(peak_threads, threading.active_count())

    with ErrorCounter() as errors:
        async with open_service(config, handle_signals=False) as service:
            tune_for_service()  # as ``run_service`` does once the service has started
            server_cpu = fake.cpu_seconds() if fake else 0.0
            child_cpu = ses_child_cpu_seconds(service.backend)
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
            child_cpu = ses_child_cpu_seconds(service.backend) - child_cpu
            server_cpu = (fake.cpu_seconds() - server_cpu) if fake else 0.0
            counts = (await service.store.topic_stats(TOPIC)).request_counts
            pool = service.pipeline.sender_pool.statistics()
            outcome_pipe = service.pipeline.pipe_statistics()[-1]
            service.shutdown.trigger("bench")
    sent = counts.get("Sent", 0)
    return Measurement(
        emails=sent,
        seconds=seconds,
        client_cpu=client_cpu + child_cpu,
        server_cpu=server_cpu,
        peak_threads=peak_threads,
        extra={
            "ses_client_process_cpu_seconds": child_cpu,
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
    """The database work of ``len(emails)`` sends, back to back, with no pipeline around it,
    with the collector set as the service sets it (the same process settings on both sides)."""
    async with open_sqlite_store(path) as store:
        tune_for_service()
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
    return min(MAX_SEND_THREADS, config.pipeline.in_flight_limit())


def baseline_client(config: Config, fake: FakeSes, pool_size: int) -> SESV2Client:
    return build_ses_client(
        region=AWS_REGION,
        pool_size=pool_size,
        connect_timeout=config.backend.aws.connect_timeout,
        read_timeout=config.backend.aws.read_timeout,
        endpoint_url=fake.url,
        access_key_id="testing",
        secret_access_key="testing",
        bulk_body_by_json=False,  # plain boto3: botocore serializes the body itself
    )


#: Set on the SES runs so the baseline signs its pixels exactly as the service does.
BASELINE_TRACKING_SECRET = "bench-ceiling-tracking-secret"


def composed_emails(config: Config, emails: Sequence[str]) -> list[OutgoingEmail]:
    """Exactly what the service composes for these emails: pixel, tags, unsubscribe headers."""
    composer = MessageComposer.from_config(config, TokenSigner(BASELINE_TRACKING_SECRET.encode()))
    content = Content(subject=SUBJECT, body=BODY)
    return [
        composer.compose(
            ClaimedEmail(
                request_id=index + 1, topic_id=TOPIC, email=email, content=content, attempts=0
            )
        )
        for index, email in enumerate(emails)
    ]


def bulk_requests(emails: Sequence[OutgoingEmail]) -> list[SendBulkEmailRequestTypeDef]:
    """The ``SendBulkEmail`` requests the SES backend builds for emails of one content."""
    shaped = [bulk_key(email) for email in emails]
    first = shaped[0] if shaped else None
    if first is None or any(item is None for item in shaped):
        raise RuntimeError("every bench email must be able to go in a bulk call")
    key = first[0]
    template = bulk_template(key)
    if template is None:
        raise RuntimeError("the bench content must be able to go in a bulk call")
    requests = []
    start = 0
    for size in chunk_sizes(len(emails)):
        data = [item[1] for item in shaped[start : start + size] if item is not None]
        requests.append(build_bulk_request(key, template, emails[start : start + size], data))
        start += size
    return requests


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


def measure_boto3_bulk(
    client: SESV2Client, requests: Sequence[SendBulkEmailRequestTypeDef], fake: FakeSes
) -> Measurement:
    """Send every request with ``client.send_bulk_email`` in a plain one-thread loop."""
    server_cpu = fake.cpu_seconds()
    client_cpu = time.process_time()
    started = time.perf_counter()
    recipients = 0
    for request in requests:
        client.send_bulk_email(**request)
        recipients += len(request["BulkEmailEntries"])
    return Measurement(
        emails=recipients,
        seconds=time.perf_counter() - started,
        client_cpu=time.process_time() - client_cpu,
        server_cpu=fake.cpu_seconds() - server_cpu,
        extra={"calls": len(requests)},
    )


# --- the two parts --------------------------------------------------------------------------


def memory_config(database: Path) -> Config:
    """(a)'s service: the memory backend on its defaults."""
    return load_config(
        service_values(
            database, SENDER_BACKEND="memory", MAX_SEND_PER_SECOND=MAX_RATE, SEND_BURST=MAX_BURST
        )
    )


#: What (b)'s two runs compose each email with, the same on both sides: the sender, the public
#: URL its links point to, the secret its tokens are signed with, and the unsubscribe link and
#: ``List-Unsubscribe`` header (on by default with SES, off with the memory backend).
SES_COMPOSE_SETTINGS = {
    "AWS_SES_FROM_EMAIL": "bench@example.com",
    "SERVER_URL": "https://bench.example.test",
    "TRACKING_SECRET": BASELINE_TRACKING_SECRET,
    "UNSUBSCRIBE_ENABLED": "true",
}


def ses_config(database: Path, endpoint_url: str, rate: float) -> Config:
    return load_config(
        service_values(
            database,
            SENDER_BACKEND="ses",
            SES_SEND_MODE="bulk",
            MAX_SEND_PER_SECOND=f"{rate:g}",
            SEND_BURST=MAX_BURST,
            AWS_REGION=AWS_REGION,
            AWS_ENDPOINT_URL_SESV2=endpoint_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            **SES_COMPOSE_SETTINGS,
        )
    )


def memory_config_as_ses(database: Path, rate: float) -> Config:
    """(b)'s baseline: the memory backend composing exactly what :func:`ses_config`'s service
    composes, at the same rate setting, so that the two runs differ only in the backend.

    Why not (a)'s :func:`memory_config`: on its defaults the memory backend signs no
    unsubscribe token and adds no ``List-Unsubscribe`` header, about 4 us less of the event
    loop per email (docs/performance.md, "Issue 13, ninth pass"), work (b) would then count
    as the SES backend's cost.
    """
    return load_config(
        service_values(
            database,
            SENDER_BACKEND="memory",
            MAX_SEND_PER_SECOND=f"{rate:g}",
            SEND_BURST=MAX_BURST,
            **SES_COMPOSE_SETTINGS,
        )
    )


def pair_ratios(
    numerators: Sequence[Measurement], denominators: Sequence[Measurement]
) -> list[float]:
    """The rate ratio of each round's two runs (run i of one side against run i of the other:
    measured one right after the other)."""
    return [
        top.rate / bottom.rate
        for top, bottom in zip(numerators, denominators, strict=True)
        if bottom.rate > 0
    ]


def pair_figures(name: str, pairs: Sequence[float]) -> dict[str, Any]:
    """The rounds' ratios under ``<name>_by_pair`` and their median under
    ``<name>_pair_median`` (None without a round), as both parts report them."""
    return {
        f"{name}_by_pair": list(pairs),
        f"{name}_pair_median": statistics.median(pairs) if pairs else None,
    }


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
                        )
                    )
                )
            else:
                floors.append(trio.run(measure_store_floor, database, emails))
    service, floor = best(services), best(floors)
    ratio = service.rate / floor.rate
    pairs = pair_ratios(services, floors)
    return {
        "emails": arguments.emails,
        **pair_figures("ratio_to_store_floor", pairs),
        "service": service.as_dict(),
        "service_runs": [run.as_dict() for run in services],
        "store_floor": floor.as_dict(),
        "store_floor_runs": [run.as_dict() for run in floors],
        "ratio_to_store_floor": ratio,
        # For context (what the load moves less): the floor's CPU over the service's, per email.
        "cpu_ratio_to_store_floor": (floor.client_cpu / floor.emails)
        / max(1e-9, service.client_cpu / max(1, service.emails)),
        "aim_emails_per_second": MEMORY_AIM,
        "aim_ratio_to_store_floor": MEMORY_FLOOR_AIM,
        "passed_rate": service.rate >= MEMORY_AIM,
        "passed_ratio": ratio >= MEMORY_FLOOR_AIM,
        "passed": service.rate >= MEMORY_AIM and ratio >= MEMORY_FLOOR_AIM,
    }


def measure_memory_service(
    arguments: argparse.Namespace, database: Path, emails: Sequence[str]
) -> Measurement:
    """(b)'s baseline run: the memory backend as the SES run's service composes
    (:func:`memory_config_as_ses`)."""
    return trio.run(
        partial(
            measure_service,
            memory_config_as_ses(database, arguments.ses_rate),
            emails,
            poll=arguments.poll,
            give_up_after=arguments.timeout,
        )
    )


def measure_ses_service(
    arguments: argparse.Namespace, database: Path, emails: Sequence[str], fake: FakeSes
) -> Measurement:
    """The service with the SES backend; the fake's call counts over the run go in ``extra``."""
    before = fake.call_counts()
    measurement = trio.run(
        partial(
            measure_service,
            ses_config(database, fake.url, arguments.ses_rate),
            emails,
            poll=arguments.poll,
            give_up_after=arguments.timeout,
            fake=fake,
        )
    )
    after = fake.call_counts()
    calls = {name: after[name] - before[name] for name in after}
    extra = measurement.extra if measurement.extra is not None else {}
    extra["send_email_calls"] = calls["send_email"]
    extra["send_bulk_email_calls"] = calls["send_bulk_email"]
    extra["bulk_entries"] = calls["bulk_entries"]
    total_calls = calls["send_email"] + calls["send_bulk_email"]
    extra["recipients_per_call"] = (calls["send_email"] + calls["bulk_entries"]) / max(
        1, total_calls
    )
    measurement.extra = extra
    return measurement


def run_ses(arguments: argparse.Namespace, directory: Path) -> dict[str, Any]:
    emails = make_emails(arguments.ses_emails)
    services: list[Measurement] = []
    memories: list[Measurement] = []
    bulk_loops: list[Measurement] = []
    sequential: list[Measurement] = []
    threaded: list[Measurement] = []
    with run_fake_ses() as fake:
        config = ses_config(directory / "ses-template.db", fake.url, arguments.ses_rate)
        pool = ses_pool_size(config)
        composed = composed_emails(config, emails)
        singles = [build_send_email_request(email) for email in composed]
        singles = singles[: arguments.boto3_single_emails]
        bulks = bulk_requests(composed)
        client = baseline_client(config, fake, pool)
        try:
            for repeat in range(arguments.repeats):
                order = ("ses", "memory") if repeat % 2 == 0 else ("memory", "ses")
                for which in order:
                    database = directory / f"ses-part-{which}-{repeat}.db"
                    if which == "ses":
                        services.append(measure_ses_service(arguments, database, emails, fake))
                    else:
                        memories.append(measure_memory_service(arguments, database, emails))
                bulk_loops.append(measure_boto3_bulk(client, bulks, fake))
                sequential.append(measure_boto3(client, singles, fake, workers=1))
                threaded.append(measure_boto3(client, singles, fake, workers=pool))
        finally:
            client.close()
    service, memory = best(services), best(memories)
    ratio = service.rate / memory.rate
    pairs = pair_ratios(services, memories)
    extra = service.extra or {}
    per_call = float(extra.get("recipients_per_call", 0.0))
    cpu_per_1000 = 1000 * service.client_cpu / max(1, service.emails)
    return {
        "emails": arguments.ses_emails,
        "rate_setting": arguments.ses_rate,
        "pool_size": pool,
        "service": service.as_dict(),
        "service_runs": [run.as_dict() for run in services],
        "memory_service": memory.as_dict(),
        "memory_service_runs": [run.as_dict() for run in memories],
        "boto3_bulk_loop": best(bulk_loops).as_dict(),
        "boto3_bulk_loop_runs": [run.as_dict() for run in bulk_loops],
        "boto3_one_thread": best(sequential).as_dict(),
        "boto3_one_thread_runs": [run.as_dict() for run in sequential],
        "boto3_thread_pool": best(threaded).as_dict(),
        "boto3_thread_pool_runs": [run.as_dict() for run in threaded],
        "ratio_to_memory": ratio,
        **pair_figures("ratio_to_memory", pairs),
        "recipients_per_call": per_call,
        "cpu_seconds_per_1000_emails": cpu_per_1000,
        "aim_ratio_to_memory": SES_AIM,
        "aim_recipients_per_call": SES_RECIPIENTS_PER_CALL_AIM,
        "aim_cpu_seconds_per_1000_emails": SES_CPU_AIM,
        "passed_ratio": ratio >= SES_AIM,
        "passed_recipients_per_call": per_call >= SES_RECIPIENTS_PER_CALL_AIM,
        "passed_cpu": cpu_per_1000 <= SES_CPU_AIM,
        "passed": ratio >= SES_AIM
        and per_call >= SES_RECIPIENTS_PER_CALL_AIM
        and cpu_per_1000 <= SES_CPU_AIM,
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


def cpu_split_table(ses: dict[str, Any]) -> str:
    """Where the CPU of (b)'s runs went, per 1,000 emails: the service's main process, its SES
    client process (both count as the service's), and the fake SES (not counted)."""
    rows = []
    for label, run in [("ses bulk", r) for r in ses["service_runs"]] + [
        ("memory", r) for r in ses["memory_service_runs"]
    ]:
        per = 1000 / max(1, run["emails"])
        child = run.get("ses_client_process_cpu_seconds", 0.0)
        rows.append(
            (
                label,
                f"{run['emails_per_second']:,.0f}",
                f"{per * run['client_cpu_seconds']:.3f}",
                f"{per * (run['client_cpu_seconds'] - child):.3f}",
                f"{per * child:.3f}",
                f"{per * run['server_cpu_seconds']:.3f}",
            )
        )
    return format_table(
        (
            "(b) each run",
            "emails/s",
            "service CPU s / 1,000",
            "main process",
            "SES client process",
            "fake SES (not counted)",
        ),
        rows,
    )


def both_aims(memory: dict[str, Any], ses: dict[str, Any]) -> dict[str, Any]:
    """What (a) and (b) ask together, for context. (a) is memory / floor and (b) SES / memory,
    so (a) x (b) is SES / floor times (a)'s service run over (b)'s memory run (the same path,
    (b)'s composing a little more): both aims can pass in one run only if SES / floor reaches
    ``MEMORY_FLOOR_AIM * SES_AIM`` (0.49) times (b)'s memory run over (a)'s service run. A
    change that speeds up the memory path alone moves (a) up and (b) down together and leaves
    SES / floor where it was; only the SES path's own speed moves it (docs/performance.md,
    "Issue 13, tenth pass")."""
    ratio = ses["service"]["emails_per_second"] / memory["store_floor"]["emails_per_second"]
    memory_runs = (
        ses["memory_service"]["emails_per_second"] / memory["service"]["emails_per_second"]
    )
    needed = MEMORY_FLOOR_AIM * SES_AIM * memory_runs
    return {"ses_to_store_floor": ratio, "needed": needed, "reached": ratio >= needed}


def ratio_text(ratio: float) -> str:
    """A ratio to three decimals, cut rather than rounded, so that a ratio printed as the aim
    (0.700) has reached it: 0.6996 reads 0.699, as its verdict says."""
    return f"{math.floor(ratio * 1000) / 1000:.3f}"


def pairs_line(pairs: Sequence[float], median: float | None) -> str:
    """The ratio of each round's adjacent runs, and their median (context beside the aim)."""
    if median is None:
        return "per round (adjacent runs): none"
    listed = ", ".join(ratio_text(ratio) for ratio in pairs)
    return f"per round (adjacent runs): {listed}; median {ratio_text(median)}"


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
            f"aim >= {MEMORY_AIM:,.0f} emails/s: {verdict(memory['passed_rate'])}"
            f" ({memory['service']['emails_per_second']:,.0f}/s)\n"
            f"service / store floor = {ratio_text(memory['ratio_to_store_floor'])};"
            f" aim >= {MEMORY_FLOOR_AIM}: {verdict(memory['passed_ratio'])}"
            f" (by CPU per email, for context: {memory['cpu_ratio_to_store_floor']:.2f})\n"
            + pairs_line(
                memory["ratio_to_store_floor_by_pair"], memory["ratio_to_store_floor_pair_median"]
            )
        )
    if "ses" in figures:
        ses = figures["ses"]
        parts.append(
            f"(b) ses backend, SES_SEND_MODE=bulk, against the local fake SES"
            f" (MAX_SEND_PER_SECOND={ses['rate_setting']:g}, SES lane and connection pool"
            f" {ses['pool_size']}), and the memory backend in the same run"
        )
        parts.append(
            format_table(
                headers,
                [
                    row("sesender service, ses bulk (end to end)", ses["service"]),
                    row(
                        "sesender service, memory, composing as ses (end to end)",
                        ses["memory_service"],
                    ),
                    row("context: boto3 send_bulk_email of 50, 1 thread", ses["boto3_bulk_loop"]),
                    row("context: boto3 send_email loop, 1 thread", ses["boto3_one_thread"]),
                    row(
                        f"context: boto3 send_email, ThreadPoolExecutor({ses['pool_size']})",
                        ses["boto3_thread_pool"],
                    ),
                ],
            )
        )
        parts.append(loop_table(ses["service"]))
        service = ses["service"]
        parts.append(
            format_table(
                ("SES calls of the best run", "send_email", "send_bulk_email", "bulk entries"),
                [
                    (
                        "count",
                        service.get("send_email_calls", 0),
                        service.get("send_bulk_email_calls", 0),
                        service.get("bulk_entries", 0),
                    )
                ],
            )
        )
        parts.append(cpu_split_table(ses))
        parts.append(
            f"ses bulk / memory = {ratio_text(ses['ratio_to_memory'])}; aim >= {SES_AIM}:"
            f" {verdict(ses['passed_ratio'])}\n"
            + pairs_line(ses["ratio_to_memory_by_pair"], ses["ratio_to_memory_pair_median"])
            + "\n"
            f"recipients per SES call = {ses['recipients_per_call']:.1f};"
            f" aim >= {SES_RECIPIENTS_PER_CALL_AIM:g}:"
            f" {verdict(ses['passed_recipients_per_call'])}\n"
            f"CPU-seconds of the service process per 1,000 emails ="
            f" {ses['cpu_seconds_per_1000_emails']:.3f}; aim <= {SES_CPU_AIM}:"
            f" {verdict(ses['passed_cpu'])}"
        )
    if "both" in figures:
        both = figures["both"]
        parts.append(
            f"both aims at once (context): ses bulk / store floor ="
            f" {ratio_text(both['ses_to_store_floor'])}; (a) and (b) can both pass only at"
            f" >= {ratio_text(both['needed'])} (0.7 x 0.7 x (b)'s memory run / (a)'s service"
            f" run): {'reached' if both['reached'] else 'not reached'}"
        )
    return "\n\n".join(parts)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceiling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--emails", type=int, default=30_000, help="(a) emails per run")
    parser.add_argument("--ses-emails", type=int, default=20_000, help="(b) emails per run")
    parser.add_argument(
        "--ses-rate",
        type=float,
        default=float(MAX_RATE),
        help="(b) MAX_SEND_PER_SECOND (by default never reached)",
    )
    parser.add_argument(
        "--boto3-single-emails",
        type=int,
        default=2_000,
        help="(b) emails of the send_email baselines (context only; they are slow)",
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
        arguments.boto3_single_emails = 20
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
        if "memory" in figures and "ses" in figures:
            figures["both"] = both_aims(figures["memory"], figures["ses"])
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(report(figures))
    name = f"{NAME}-{arguments.tag}" if arguments.tag else NAME
    path = write_result(name, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
