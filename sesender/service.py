"""The composition root: store, backend, pipeline and HTTP in one supervisor.

:func:`open_service` builds every component from the configuration and yields a frozen
:class:`Service`; nothing else in sesender opens a long-lived nursery. The shutdown sequence is
fixed (docs/architecture.md, "Shutdown sequence") and runs in the ``lifecycle`` actor when the
shutdown trigger fires (SIGTERM/SIGINT, or a caller)::

    stop HTTP intake -> stop claiming -> drain by end of channel -> deadline -> cancel

Restart policy: none in-process. An actor crash is logged and reported with the actor's name, the
supervisor cancels everything, and the process exits non-zero for its orchestrator to restart;
emails left ``Processed`` are requeued at the next start.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import trio

from actors import (
    ShutdownTrigger,
    Supervisor,
    ThreadLane,
    TokenBucket,
    open_pipe,
    open_supervisor,
    watch_signals,
)
from sesender.api_keys import KeyRing
from sesender.backends.base import Backend
from sesender.backends.memory import MemoryBackend
from sesender.backends.outbox import OutboxBackend
from sesender.backends.ses import SesBackend, build_ses_client
from sesender.backends.ses_process import ProcessSesClient
from sesender.config import BackendKind, Config
from sesender.feedback.fetch import SnsHttp
from sesender.feedback.intake import FeedbackIntake
from sesender.feedback.sns import SnsVerifier
from sesender.feedback.sqs_poller import SqsPoller
from sesender.feedback.sqs_queue import build_sqs_client
from sesender.gc_tuning import tune_for_service
from sesender.http.app import create_app
from sesender.http.context import AppContext
from sesender.http.server import hypercorn_config, serve_http
from sesender.links import CLICK_PATH
from sesender.metrics import Metrics, PipelineCollector
from sesender.monitoring import report_actor_crash
from sesender.pipeline.compose import MessageComposer
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.housekeeper import DAY_MS, Housekeeper
from sesender.pipeline.instances import InstanceCoordinator
from sesender.pipeline.pipeline import ACTOR_NAMES, GUARD_ACTOR, Pipeline
from sesender.pipeline.result_writer import ResultWrite, ResultWriter, write_and_wait
from sesender.pipeline.shared_rate import SharedRate
from sesender.startup_secrets import announce_api_key, load_startup_secrets
from sesender.store.base import Store
from sesender.store.opening import open_store
from sesender.store.pg_notify import NotificationListener
from sesender.store.postgres import PostgresStore
from sesender.tracking import TokenSigner
from sesender.webhooks.deliverer import DeliverySettings, WebhookDeliverer
from sesender.webhooks.guard import AddressPolicy
from sesender.webhooks.poster import WebhookPoster

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

logger = logging.getLogger(__name__)


#: Upper bound of the SES thread lane (and of boto3's connection pool).
MAX_SEND_THREADS = 256


def wall_clock_ms() -> int:
    """Unix milliseconds (UTC) for stored timestamps; pipeline timing uses the trio clock."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Service:
    """The running service, as handed to the caller of :func:`open_service`."""

    config: Config
    store: Store
    backend: Backend
    pipeline: Pipeline
    supervisor: Supervisor
    shutdown: ShutdownTrigger
    urls: tuple[str, ...]
    recovered: int


async def build_backend(config: Config) -> Backend:
    """Pick the backend by configuration type (never a dotted path)."""
    backend = config.backend
    # Threads for blocking sends: one per send in flight (2 x rate), capped. A call needs a
    # thread for rate x latency seconds, a few dozen at SES latencies; thousands of threads would
    # only add GIL contention and connections.
    pool = min(MAX_SEND_THREADS, config.pipeline.in_flight_limit())
    match backend.kind:
        case BackendKind.MEMORY:
            # A service's records could only be read in this process: none are kept.
            return MemoryBackend(
                latency=backend.memory_latency,
                throttle_rate=backend.memory_throttle_rate,
                keep_sent=0,
            )
        case BackendKind.OUTBOX:
            return OutboxBackend(
                directory=backend.outbox_dir, lane=ThreadLane("outbox", min(pool, 16))
            )
        case BackendKind.SES:
            aws = backend.aws
            lane = ThreadLane("ses", pool)
            arguments: dict[str, Any] = {
                "region": aws.region,
                "pool_size": pool,
                "connect_timeout": aws.connect_timeout,
                "read_timeout": aws.read_timeout,
                "endpoint_url": aws.endpoint_url,
                "access_key_id": aws.access_key_id,
                "secret_access_key": aws.secret_access_key,
                "session_token": aws.session_token,
            }
            client: SESV2Client
            if aws.client_process:
                remote = ProcessSesClient(arguments, nice=aws.client_process_nice)
                await lane.run(remote.start)
                # It has the four methods SesBackend calls, with the client's own signatures.
                client = cast("SESV2Client", remote)
            else:
                client = await lane.run(lambda: build_ses_client(**arguments))
            return SesBackend(client=client, lane=lane, send_mode=aws.send_mode)


@asynccontextmanager
async def open_service(
    config: Config,
    *,
    backend: Backend | None = None,
    handle_signals: bool = True,
    now_ms: Callable[[], int] = wall_clock_ms,
    rng: random.Random | None = None,
) -> AsyncIterator[Service]:
    """Start everything; the block's exit waits until shutdown completes.

    Leave the block after ``service.shutdown.trigger(...)`` for a graceful stop; an exception in
    the block cancels everything at once.
    """
    shutdown = ShutdownTrigger()
    async with open_store(config) as store:
        coordinator: InstanceCoordinator | None = None
        listener: NotificationListener | None = None
        shared_rate: Callable[[TokenBucket], SharedRate] | None = None
        if isinstance(store, PostgresStore):
            assert config.database.url is not None
            listener = NotificationListener(config.database.url)
            coordinator = InstanceCoordinator(
                store=store,
                listener=listener,
                control=PipelineControl(),  # replaced by the pipeline's below
                heartbeat=config.database.heartbeat,
                lease=config.database.lease,
                now_ms=now_ms,
            )
            await coordinator.start_beating()
            postgres_store = store

            def shared_rate(bucket: TokenBucket) -> SharedRate:
                return SharedRate(
                    store=postgres_store,
                    rate=lambda: bucket.statistics().rate,
                    burst=config.pipeline.burst,
                )

        startup = await load_startup_secrets(config, store, now_ms=now_ms())
        config = startup.config  # with the API key in effect
        announce_api_key(config, startup.new_api_key)
        recovered = await store.recover_claimed(now_ms=now_ms())
        if recovered:
            logger.warning(
                "requeued %d emails left claimed by the previous run; they may be sent twice"
                " (at most the sends in flight and unflushed outcomes at the crash)",
                recovered,
                extra={"event": "recovered", "count": recovered},
            )
        owned_backend = backend is None
        if backend is None:
            backend = await build_backend(config)
        try:
            composer = MessageComposer.from_config(config, startup.signer)
            metrics = (
                Metrics(instance_id=coordinator.instance_id if coordinator else None)
                if config.observability.metrics_enabled
                else None
            )
            pipeline = Pipeline(
                store=store,
                backend=backend,
                composer=composer,
                settings=config.pipeline,
                now_ms=now_ms,
                rng=rng,
                observer=metrics,
                shared_rate=shared_rate,
                reputation=store,
                guard_settings=config.guard,
            )
            if coordinator is not None:
                coordinator.attach(pipeline.control)
            released = (
                await store.release_webhook_leases() if config.webhooks.delivery_enabled else 0
            )
            if released:
                logger.info(
                    "%d webhook events left in flight by the previous run go again",
                    released,
                    extra={"event": "webhook_leases_released", "count": released},
                )
            async with (
                SnsHttp.build_client() as http_client,
                open_webhook_poster(config) as webhook_poster,
                open_supervisor("sesender", on_crash=report_actor_crash) as supervisor,
            ):
                service = await _start_actors(
                    SnsHttp(http_client),
                    webhook_poster,
                    startup.signer,
                    metrics,
                    config,
                    store,
                    backend,
                    pipeline,
                    supervisor,
                    shutdown,
                    recovered,
                    now_ms,
                    coordinator,
                    handle_signals=handle_signals,
                )
                yield service
        finally:
            if owned_backend:
                with trio.move_on_after(5, shield=True):
                    await backend.aclose()
            if listener is not None:
                with trio.move_on_after(5, shield=True):
                    await listener.aclose()


def _event_recorded(metrics: Metrics | None, pipeline: Pipeline, kind: str) -> None:
    """An SES event was stored: count it, and let the reputation guard look at the rates."""
    if metrics is not None:
        metrics.ses_events.labels(kind).inc()
    if pipeline.guard is not None:
        pipeline.guard.note_event(kind)


@asynccontextmanager
async def open_webhook_poster(config: Config) -> AsyncIterator[WebhookPoster]:
    """What webhooks are delivered with: guarded against private addresses at connection time
    (unless WEBHOOK_ALLOW_PRIVATE), no redirects, kept-alive connections per endpoint (at most
    one per post in flight: WEBHOOK_CONCURRENCY)."""
    poster = WebhookPoster(
        policy=AddressPolicy(allow_private=config.webhooks.allow_private),
        timeout=config.webhooks.timeout,
    )
    try:
        yield poster
    finally:
        with trio.move_on_after(5, shield=True):
            await poster.aclose()


def build_deliverer(
    config: Config, store: Store, poster: WebhookPoster, now_ms: Callable[[], int]
) -> WebhookDeliverer:
    webhooks = config.webhooks
    return WebhookDeliverer(
        store=store,
        poster=poster,
        settings=DeliverySettings(
            concurrency=webhooks.concurrency,
            timeout=webhooks.timeout,
            poll_interval=webhooks.poll_interval,
            schedule=webhooks.retry_schedule,
            disable_after_ms=round(webhooks.disable_after_hours * 3_600_000),
        ),
        now_ms=now_ms,
    )


async def run_webhook_deliverer(config: Config) -> None:
    """``sesender deliver-webhooks``: only the webhook deliverer, in a process of its own.

    Delivery is CPU work (an HTTP request per event) on the same event loop as sending when it
    runs inside the service; in a process of its own it runs on another core, and the service runs
    with ``WEBHOOK_DELIVERY_ENABLED=false``. It shares the database (its writes are small
    transactions through its own writer connection; WAL and the busy timeout serialise them with
    the service's). Run as many as the machine has cores to spare, on SQLite as on PostgreSQL:
    claims lease events (on PostgreSQL skipping each other's locked rows), and at start only
    leases that already ran out are freed (others may belong to a live deliverer; a killed one's
    events go again once their leases run out). SIGTERM/SIGINT stop it; attempts already made
    are recorded.
    """
    shutdown = ShutdownTrigger()
    async with open_store(config) as store:
        released = await store.release_webhook_leases(only_expired=True)
        logger.info(
            "delivering webhooks (%d events left in flight go again)",
            released,
            extra={"event": "webhook_deliverer_started", "released": released},
        )
        async with (
            open_webhook_poster(config) as poster,
            open_supervisor("sesender-webhooks", on_crash=report_actor_crash) as supervisor,
        ):
            await supervisor.start("signals", watch_signals, shutdown)
            deliverer = build_deliverer(config, store, poster, wall_clock_ms)
            await supervisor.start("webhook-deliverer", deliverer.run)
            await shutdown.wait()
            logger.info(
                "stopping the webhook deliverer: %s",
                shutdown.reason,
                extra={"event": "shutdown", "reason": shutdown.reason},
            )
            supervisor.cancel()


async def _start_actors(
    sns_http: SnsHttp,
    webhook_poster: WebhookPoster,
    signer: TokenSigner,
    metrics: Metrics | None,
    config: Config,
    store: Store,
    backend: Backend,
    pipeline: Pipeline,
    supervisor: Supervisor,
    shutdown: ShutdownTrigger,
    recovered: int,
    now_ms: Callable[[], int],
    coordinator: InstanceCoordinator | None,
    *,
    handle_signals: bool,
) -> Service:
    http_stop = trio.Event()
    http_done = trio.Event()
    if handle_signals:
        await supervisor.start("signals", watch_signals, shutdown)
    if coordinator is not None:
        await supervisor.start("instance", coordinator.run)
    await pipeline.start(supervisor)
    result_tx, result_rx = open_pipe[ResultWrite]("results", 10_000)
    result_writer = ResultWriter(store=store, write_rx=result_rx, now_ms=now_ms)
    results_done = trio.Event()

    async def run_result_writer(*, task_status: trio.TaskStatus[None]) -> None:
        try:
            await result_writer.run(task_status=task_status)
        finally:
            results_done.set()

    await supervisor.start("result-writer", run_result_writer)
    webhooks = config.webhooks
    housekeeper = Housekeeper(
        store=store,
        now_ms=now_ms,
        interval=config.database.housekeeping_interval,
        email_retention_ms=int(config.database.retention_days * DAY_MS),
        webhook_retention_ms=round(webhooks.retention_hours * 3_600_000),
    )
    await supervisor.start("housekeeper", housekeeper.run)
    deliverer = build_deliverer(config, store, webhook_poster, now_ms)
    if webhooks.delivery_enabled:
        await supervisor.start("webhook-deliverer", deliverer.run)
    verifier = SnsVerifier(
        fetch_pem=sns_http.fetch_pem,
        now=lambda: datetime.fromtimestamp(now_ms() / 1000, UTC),
        max_age=timedelta(seconds=config.feedback.max_age),
        topic_arns=config.feedback.topic_arns,
        cert_url_pattern=config.feedback.cert_url_pattern,
    )
    intake = FeedbackIntake(
        verifier=verifier,
        write=functools.partial(write_and_wait, result_tx),
        confirm_subscription=sns_http.confirm_subscription,
        on_recorded=functools.partial(_event_recorded, metrics, pipeline),
        own_click_prefix=config.server.public_url.rstrip("/") + CLICK_PATH,
    )
    sns_rejections: dict[str, int] = {}
    if metrics is not None:
        metrics.attach(
            PipelineCollector(
                pipeline=pipeline,
                supervisor=supervisor,
                verifier=verifier,
                sns_rejections=sns_rejections,
                state=metrics.state,
                store_writes=store.write_status,
                webhooks=deliverer.statistics if webhooks.delivery_enabled else None,
            )
        )
    context = AppContext(
        config=config,
        store=store,
        pipeline=pipeline,
        supervisor=supervisor,
        shutdown=shutdown,
        signer=signer,
        now_ms=now_ms,
        result_tx=result_tx,
        intake=intake,
        sns_rejections=sns_rejections,
        metrics=metrics,
        instance=coordinator,
        webhook_policy=AddressPolicy(allow_private=webhooks.allow_private),
        webhook_refresh=deliverer.refresh_soon,
        required_actors=(
            *ACTOR_NAMES,
            *((GUARD_ACTOR,) if pipeline.guard is not None else ()),
            "result-writer",
            "housekeeper",
            *(("webhook-deliverer",) if webhooks.delivery_enabled else ()),
            "http",
            *(("instance",) if coordinator is not None else ()),
            *(("sqs-poller",) if config.feedback.events_queue_url else ()),
        ),
        keys=KeyRing(store, configured_digest=config.server.api_key_digest, now_ms=now_ms),
    )
    app = create_app(context)
    poller_scope = trio.CancelScope()
    if config.feedback.events_queue_url:
        await supervisor.start("sqs-poller", _run_sqs_poller, config, intake, poller_scope)

    async def run_http(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_http(
                app, hypercorn_config(config.server), http_stop.wait, task_status=task_status
            )
        finally:
            http_done.set()

    urls: list[str] = await supervisor.start("http", run_http)
    logger.info(
        "listening on %s",
        ", ".join(urls),
        extra={"event": "listening", "urls": urls, "backend": config.backend.kind.value},
    )

    async def lifecycle(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await shutdown.wait()
        deadline = config.server.shutdown_timeout
        logger.info(
            "shutting down: %s",
            shutdown.reason,
            extra={"event": "shutdown", "reason": shutdown.reason, "deadline": deadline},
        )
        with trio.move_on_after(deadline) as scope:
            http_stop.set()  # 1. stop HTTP and SQS intake (hypercorn drains open requests)
            poller_scope.cancel()
            await http_done.wait()
            result_tx.close()  # no request can queue result events any more
            pipeline.begin_stop()  # 2. stop claiming; 3. drain by end of channel
            await pipeline.wait_drained()
            await results_done.wait()
            if coordinator is not None:
                await coordinator.leave()  # every claim is written back
        if scope.cancelled_caught:  # 4. deadline
            logger.warning(
                "shutdown deadline of %ss reached; cancelling what is left",
                deadline,
                extra={"event": "shutdown_deadline"},
            )
        else:
            logger.info("drained", extra={"event": "drained"})
        supervisor.cancel()  # 5. cancel the rest (signal watcher, account monitor)

    await supervisor.start("lifecycle", lifecycle)
    return Service(
        config=config,
        store=store,
        backend=backend,
        pipeline=pipeline,
        supervisor=supervisor,
        shutdown=shutdown,
        urls=tuple(urls),
        recovered=recovered,
    )


async def _run_sqs_poller(
    config: Config,
    intake: FeedbackIntake,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The SQS intake, stoppable on its own by ``scope`` (shutdown stops intake first)."""
    aws = config.backend.aws
    queue_url = config.feedback.events_queue_url
    assert queue_url is not None
    lane = ThreadLane("sqs", 2)
    client = await lane.run(
        lambda: build_sqs_client(
            region=aws.region,
            endpoint_url=config.feedback.queue_endpoint_url,
            access_key_id=aws.access_key_id,
            secret_access_key=aws.secret_access_key,
            session_token=aws.session_token,
            read_timeout=config.feedback.queue_wait_seconds + 10,
        )
    )
    poller = SqsPoller(
        client=client,
        queue_url=queue_url,
        intake=intake,
        lane=lane,
        wait_seconds=config.feedback.queue_wait_seconds,
    )
    with scope:
        await poller.run(task_status=task_status)


async def run_service(config: Config) -> None:
    """Run until SIGTERM/SIGINT (or a crash, which raises ActorCrashed)."""
    async with open_service(config) as service:
        tune_for_service()  # after start-up: what it left behind is frozen, not scanned again
        await service.shutdown.wait()
