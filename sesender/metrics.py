"""Prometheus metrics: a private registry per service, most figures read at scrape time.

Two kinds of sources:

- Events counted where they happen, with prometheus-client instruments: persisted outcomes
  (fed by the post-processor after each flush, so the numbers are what the database holds), topic
  cancellations, SES events by type, HTTP requests by route and status, send latency.
- State read from the components' ``statistics()`` snapshots when Prometheus scrapes, by
  :class:`PipelineCollector`: pipe depths and capacities, the token bucket, attempts, retries and
  throttles, scheduler claims, the sending gate, actor states, SNS verification failures. Nothing
  is copied into gauges on the hot path.

There is no global registry: each service owns a :class:`Metrics`, so tests can run several. Each
registry also carries prometheus-client's standard process, platform and garbage-collector
collectors (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open file
descriptors, ``python_info``, ``python_gc_*``), the figures dashboards and alerts expect.

The ``*_created`` series prometheus-client adds next to every counter and histogram (one more
series per label set, holding the time it was first seen) are turned off: they are noise to
dashboards and alerts, which use the counters' values. That switch is process-wide in
prometheus-client, so it is flipped when a registry is built.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actors import Supervisor
from sesender.feedback.sns import SnsVerifier
from sesender.models import Failed, Outcome, Retry, Sent, StorageStats
from sesender.pipeline.pipeline import Pipeline
from sesender.store.health import WriteHealthStatus
from sesender.webhooks.deliverer import DelivererStatistics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class EmailLatencyHistogram(Collector):
    """A histogram of durations observed once per call, counted once per email the call carried.

    ``sesender_send_latency_seconds`` is per email (a batch of 50 is 50 observations of its
    call's duration), but observing it 50 times through prometheus-client's ``Histogram`` took a
    lock, a bucket search and two increments per email, about 1.5 us, on the send path's event
    loop. Here one observation adds ``count`` to the bucket and ``seconds x count`` to the sum:
    the same exposition, one step per call. No lock: the pipeline observes on the trio thread,
    and ``/metrics`` renders there too (synchronously), so a scrape never falls between the two
    additions of one observation.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = (*buckets, float("inf"))
        #: the ``le`` labels, spelt as prometheus-client spells them ("0.005", "1.0", "+Inf").
        self._labels = tuple(
            "+Inf" if bound == float("inf") else repr(bound) for bound in self._bounds
        )
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        """Record ``count`` emails whose call took ``seconds``."""
        self._sum += seconds * count
        self._counts[bisect_left(self._bounds, seconds)] += count

    def collect(self) -> Iterable[Metric]:
        cumulative, buckets = 0, []
        for label, count in zip(self._labels, self._counts, strict=True):
            cumulative += count
            buckets.append((label, cumulative))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=self._sum
        )


@dataclass(slots=True)
class ScrapeState:
    """Values that need an ``await`` (the database) and are refreshed by the handler per scrape."""

    queued_in_database: int = 0
    #: the storage figures (None until the first scrape reads them).
    storage: StorageStats | None = None
    #: free bytes on the database's file system (None: unknown).
    disk_free_bytes: int | None = None


class StorageCollector(Collector):
    """The database's size, rows, retention and backups, from the last scrape's figures."""

    def __init__(self, state: ScrapeState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        if self._state.disk_free_bytes is not None:
            yield GaugeMetricFamily(
                "sesender_disk_free_bytes",
                "Free space on the file system that holds the database",
                value=self._state.disk_free_bytes,
            )
        stats = self._state.storage
        if stats is None:
            return
        yield GaugeMetricFamily(
            "sesender_database_bytes",
            "Database size (pages x page size)",
            value=stats.database_bytes,
        )
        yield GaugeMetricFamily(
            "sesender_database_free_bytes",
            "Free pages inside the database not yet given back to the file system",
            value=stats.free_bytes,
        )
        yield GaugeMetricFamily(
            "sesender_database_file_bytes",
            "Database bytes on disk (file, write-ahead log, shared-memory index)",
            value=stats.file_bytes,
        )
        rows = GaugeMetricFamily("sesender_database_rows", "Rows per main table", labels=["table"])
        for table, count in sorted(stats.rows.items()):
            rows.add_metric([table], count)
        yield rows
        yield CounterMetricFamily(
            "sesender_emails_pruned",
            "Emails deleted by the retention policy (RETENTION_DAYS) since the database was made",
            value=stats.emails_pruned,
        )
        for name, at_ms, what in (
            ("sesender_last_prune_timestamp_seconds", stats.last_prune_at_ms, "pruning run"),
            ("sesender_last_backup_timestamp_seconds", stats.last_backup_at_ms, "verified backup"),
        ):
            if at_ms is not None:
                yield GaugeMetricFamily(name, f"When the last {what} finished", value=at_ms / 1000)


class PipelineCollector(Collector):
    """Reads component statistics at scrape time."""

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        supervisor: Supervisor,
        verifier: SnsVerifier | None,
        sns_rejections: dict[str, int],
        state: ScrapeState,
        store_writes: Callable[[], WriteHealthStatus],
        webhooks: Callable[[], DelivererStatistics] | None = None,
    ) -> None:
        self._store_writes = store_writes
        self._webhooks = webhooks
        self._pipeline = pipeline
        self._supervisor = supervisor
        self._verifier = verifier
        self._sns_rejections = sns_rejections
        self._state = state

    def _webhook_metrics(self) -> Iterable[Metric]:
        if self._webhooks is None:  # WEBHOOK_DELIVERY_ENABLED=false
            return
        webhooks = self._webhooks()
        attempts = CounterMetricFamily(
            "sesender_webhook_attempts",
            "Webhook delivery attempts by what they decided",
            labels=["outcome"],
        )
        attempts.add_metric(["delivered"], webhooks.delivered)
        attempts.add_metric(["retry"], webhooks.retried)
        attempts.add_metric(["failed"], webhooks.failed)
        yield attempts
        yield GaugeMetricFamily(
            "sesender_webhook_in_flight",
            "Webhook events leased by this deliverer and not yet answered",
            value=webhooks.in_flight,
        )
        yield GaugeMetricFamily(
            "sesender_webhook_endpoints_delivering",
            "Enabled webhook endpoints this deliverer has a lane for",
            value=webhooks.lanes,
        )

    def collect(self) -> Iterable[Metric]:
        yield from self._webhook_metrics()
        pipeline = self._pipeline
        depth = GaugeMetricFamily(
            "sesender_channel_depth", "Items buffered in a pipeline channel", labels=["channel"]
        )
        capacity = GaugeMetricFamily(
            "sesender_channel_capacity", "Capacity of a pipeline channel", labels=["channel"]
        )
        for stats in pipeline.pipe_statistics():
            depth.add_metric([stats.name], stats.depth)
            capacity.add_metric([stats.name], stats.capacity)
        yield depth
        yield capacity

        bucket = pipeline.bucket.statistics()
        yield GaugeMetricFamily(
            "sesender_rate_limit_tokens", "Tokens in the send token bucket", value=bucket.tokens
        )
        yield GaugeMetricFamily(
            "sesender_rate_limit_per_second", "Configured send rate", value=bucket.rate
        )
        yield GaugeMetricFamily(
            "sesender_rate_limit_burst", "Token bucket depth", value=bucket.burst
        )
        yield GaugeMetricFamily(
            "sesender_rate_limit_waiting", "Emails waiting for a token", value=bucket.waiting
        )

        pool = pipeline.sender_pool.statistics()
        yield CounterMetricFamily(
            "sesender_send_attempts", "Send attempts handed to the backend", value=pool.attempts
        )
        yield CounterMetricFamily(
            "sesender_send_calls",
            "Backend calls made, one per batch: attempts / calls is the average batch",
            value=pool.calls,
        )
        yield CounterMetricFamily(
            "sesender_send_retries",
            "Attempts that failed transiently and were requeued",
            value=pool.retried,
        )
        yield CounterMetricFamily(
            "sesender_ses_throttles", "Attempts the provider throttled", value=pool.throttled
        )
        yield GaugeMetricFamily(
            "sesender_sends_in_flight", "Sends in progress", value=pool.in_flight
        )
        yield GaugeMetricFamily(
            "sesender_sends_in_flight_limit",
            "Most sends allowed at once",
            value=pool.max_in_flight,
        )
        if pool.backend_room is not None:
            yield GaugeMetricFamily(
                "sesender_sends_backend_room",
                "Most sends the backend can usefully hold now (the SES client process's room)",
                value=pool.backend_room,
            )

        scheduler = pipeline.scheduler.statistics()
        yield CounterMetricFamily(
            "sesender_scheduler_claims",
            "Claim transactions run by the scheduler",
            value=scheduler.claims,
        )
        yield CounterMetricFamily(
            "sesender_scheduler_claimed_emails",
            "Emails claimed by the scheduler",
            value=scheduler.claimed,
        )
        yield GaugeMetricFamily(
            "sesender_queued_emails",
            "Emails Created or Processed in the database",
            value=self._state.queued_in_database,
        )

        gate = pipeline.gate_statistics()
        yield GaugeMetricFamily(
            "sesender_sending_paused",
            "1 while the provider paused sending",
            value=1 if gate.paused else 0,
        )
        yield CounterMetricFamily(
            "sesender_sending_pauses", "Times sending was paused", value=gate.pauses_total
        )
        yield GaugeMetricFamily(
            "sesender_sending_held",
            "1 while the reputation guard holds all sending (until an operator resumes)",
            value=1 if gate.held else 0,
        )
        yield from guard_metrics(pipeline)

        writes = self._store_writes()
        yield GaugeMetricFamily(
            "sesender_store_writes_failing",
            "1 while the database refuses writes (disk full, read-only file)",
            value=1 if writes.failing else 0,
        )
        yield CounterMetricFamily(
            "sesender_store_write_failures",
            "Writes the database refused",
            value=writes.failures_total,
        )

        actors = GaugeMetricFamily(
            "sesender_actor_up", "1 while an actor runs", labels=["actor", "state"]
        )
        crashed = 0
        for actor in self._supervisor.statistics().actors:
            actors.add_metric(
                [actor.name, actor.state.value], 1 if actor.state.value == "running" else 0
            )
            crashed += actor.state.value == "crashed"
        yield actors
        yield CounterMetricFamily(
            "sesender_actor_crashes",
            "Actors that crashed (the service then exits)",
            value=crashed,
        )

        failures = CounterMetricFamily(
            "sesender_webhook_verification_failures",
            "SNS messages refused, by reason",
            labels=["reason"],
        )
        reasons: dict[str, int] = {}
        if self._verifier is not None:
            reasons.update(self._verifier.statistics().rejected)
        if "malformed" in self._sns_rejections:
            reasons["malformed"] = self._sns_rejections["malformed"]
        for reason, count in sorted(reasons.items()):
            failures.add_metric([reason], count)
        yield failures


def guard_metrics(pipeline: Pipeline) -> Iterator[Metric]:
    """The reputation guard's view: the window's rates and sends, held topics, holds so far,
    and what the account monitor last read from the provider."""
    monitor = pipeline.account_monitor.statistics()
    if monitor.account_max_send_rate is not None:
        yield GaugeMetricFamily(
            "sesender_account_max_send_rate",
            "The provider account's MaxSendRate at the last read",
            value=monitor.account_max_send_rate,
        )
    guard = pipeline.guard
    if guard is None:
        return
    stats = guard.statistics()
    account = stats.account
    yield GaugeMetricFamily(
        "sesender_guard_window_sends",
        "Emails sent in the reputation guard's window (account-wide)",
        value=account.sends if account else 0,
    )
    yield GaugeMetricFamily(
        "sesender_guard_bounce_rate",
        "Permanent bounces per send in the guard's window (account-wide)",
        value=account.bounce_rate if account else 0.0,
    )
    yield GaugeMetricFamily(
        "sesender_guard_complaint_rate",
        "Complaints per send in the guard's window (account-wide)",
        value=account.complaint_rate if account else 0.0,
    )
    yield GaugeMetricFamily(
        "sesender_topics_held", "Topics the reputation guard holds", value=len(stats.held_topics)
    )
    holds = CounterMetricFamily(
        "sesender_guard_holds", "Holds decided by the reputation guard", labels=["scope"]
    )
    holds.add_metric(["account"], stats.account_holds_total)
    holds.add_metric(["topic"], stats.topic_holds_total)
    yield holds


class Metrics:
    """The service's instruments and registry."""

    def __init__(self, *, instance_id: str | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.state = ScrapeState()
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.registry.register(StorageCollector(self.state))
        self.emails = Counter(
            "sesender_emails",
            "Emails by persisted outcome (failed by reason class)",
            ["outcome"],
            registry=self.registry,
        )
        self.ses_events = Counter(
            "sesender_ses_events",
            "SES events recorded, by type",
            ["type"],
            registry=self.registry,
        )
        self.send_latency_histogram = EmailLatencyHistogram(
            "sesender_send_latency_seconds",
            "Duration of the send call that carried each email to the backend",
            LATENCY_BUCKETS,
        )
        self.registry.register(self.send_latency_histogram)
        self.http_requests = Counter(
            "sesender_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "sesender_http_request_duration_seconds",
            "HTTP request duration by route",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if instance_id is not None:
            # Several instances on one database: which one this is (its id is also on its claims
            # and in the ``instances`` table); join on it to label any series.
            Gauge(
                "sesender_instance_info",
                "This instance (several instances share one PostgreSQL database)",
                ["instance_id"],
                registry=self.registry,
            ).labels(instance_id).set(1)
        for outcome in (
            "sent",
            "failed_permanent",
            "failed_exhausted",
            "failed_config",
            "retried",
            "stopped",
            "suppressed",
        ):
            self.emails.labels(outcome)

    def attach(self, collector: PipelineCollector) -> None:
        self.registry.register(collector)

    # -- PipelineObserver --------------------------------------------------------------------

    def emails_stopped(self, count: int) -> None:
        self.count("stopped", count)

    def emails_suppressed(self, count: int) -> None:
        self.count("suppressed", count)

    def send_latency(self, seconds: float, emails: int = 1) -> None:
        self.send_latency_histogram.observe(seconds, emails)

    def outcomes_persisted(self, outcomes: Sequence[Outcome]) -> None:
        """The post-processor's on_flush hook: only what was persisted is counted.

        Tallied first and added once per label: a child lookup and a locked increment per
        email were a measurable share of the event loop's CPU per email.
        """
        tally: dict[str, int] = {}
        for outcome in outcomes:
            match outcome:
                case Sent():
                    label = "sent"
                case Failed():
                    label = f"failed_{outcome.kind.value}"
                case Retry():
                    label = "retried"
                case _:
                    continue
            tally[label] = tally.get(label, 0) + 1
        for label, amount in tally.items():
            self.emails.labels(label).inc(amount)

    def count(self, outcome: str, amount: int) -> None:
        if amount:
            self.emails.labels(outcome).inc(amount)

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        # Every request comes here: the labelled children are looked up once per (route,
        # method, status) and kept, since ``labels()`` (a lock, the label values checked and
        # joined) costs as much as the observation itself on the click redirect's short path.
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(route, method, str(status)),
                self.http_latency.labels(route, method),
            )
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
