"""The service's metrics registry: process metrics present, no ``_created`` series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sesender.metrics import LATENCY_BUCKETS, Metrics


def test_process_platform_and_gc_collectors_are_registered() -> None:
    text = Metrics().render().decode()
    names = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
    } <= names


def test_no_created_series_even_after_counting() -> None:
    metrics = Metrics()
    metrics.count("sent", 3)
    metrics.observe_http("/v1/messages", "POST", 200, 0.01)
    metrics.send_latency(0.02)
    text = metrics.render().decode()
    assert 'sesender_emails_total{outcome="sent"} 3.0' in text
    assert "sesender_http_request_duration_seconds_count" in text
    assert [line for line in text.splitlines() if "_created" in line] == []


def test_two_services_in_one_process_each_have_their_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.count("sent", 1)
    assert 'sesender_emails_total{outcome="sent"} 1.0' in first.render().decode()
    assert 'sesender_emails_total{outcome="sent"} 0.0' in second.render().decode()


def test_send_latency_counts_each_email_of_a_call_as_prometheus_histogram_would() -> None:
    """One observation per call, weighted by its emails, exposes exactly what observing each
    email of the call on prometheus-client's ``Histogram`` exposes (bucket edges included)."""
    calls = [(0.005, 3), (0.0051, 1), (0.02, 50), (1.0, 2), (31.0, 4), (0.0, 1)]
    metrics = Metrics()
    for seconds, emails in calls:
        metrics.send_latency(seconds, emails)
    registry = CollectorRegistry()
    reference = Histogram(
        "sesender_send_latency_seconds",
        "Duration of the send call that carried each email to the backend",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for seconds, emails in calls:
        for _ in range(emails):
            reference.observe(seconds)

    def histogram_lines(text: str) -> list[str]:
        return [
            line
            for line in text.splitlines()
            if line.startswith("sesender_send_latency_seconds") and "_created" not in line
        ]

    ours = histogram_lines(metrics.render().decode())
    assert ours == histogram_lines(generate_latest(registry).decode())
    assert "sesender_send_latency_seconds_count 61.0" in ours
