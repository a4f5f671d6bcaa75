"""``ACCESS_LOG`` and the process metrics, seen from outside the running service."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import ServiceProcess, wait_for

pytestmark = pytest.mark.e2e

PIXEL_TOKEN = "not-a-real-token-but-secret-looking"


def make_requests(service: ServiceProcess) -> None:
    with service.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/v1/topics/newsletter").status_code == 200
        assert client.get("/v1/nothing-here").status_code == 404
        client.get("/v1/events/open", params={"token": PIXEL_TOKEN})
        client.get("/v1/unsubscribe", params={"token": PIXEL_TOKEN})
        assert (
            client.get("/v1/topics/newsletter", headers={"X-API-KEY": "wrong"}).status_code == 401
        )


def test_access_log_on_one_json_line_per_request_without_query_strings(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service(ACCESS_LOG="true")
    make_requests(service)
    with service.client() as client:  # one more request: every line before it is written
        assert client.get("/ready").status_code == 200
    lines = wait_for(
        lambda: len(found := service.events("http_request")) >= 7 and found,
        timeout=10,
        what="seven access log lines",
    )
    assert len(lines) == 7
    seen = [(line["method"], line["path"], line["status"]) for line in lines]
    assert seen[:3] == [
        ("GET", "/health", 200),
        ("GET", "/v1/topics/newsletter", 200),
        ("GET", "/v1/nothing-here", 404),
    ]
    assert [path for _, path, _ in seen[3:5]] == ["/v1/events/open", "/v1/unsubscribe"]
    assert seen[5] == ("GET", "/v1/topics/newsletter", 401)
    assert all(line["logger"] == "sesender.access" for line in lines)
    assert all(isinstance(line["duration_ms"], float | int) for line in lines)
    assert all(line["duration_ms"] >= 0 for line in lines)
    assert not [raw for raw in service.raw_lines if PIXEL_TOKEN in raw]
    start = service.find("start")
    assert start is not None
    assert start["settings"]["access_log"] is True


def test_access_log_off_by_default(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_service()
    make_requests(service)
    with service.client() as client:  # one more request: everything before it was answered
        assert client.get("/health").status_code == 200
    assert service.events("http_request") == []
    assert not [raw for raw in service.raw_lines if "/v1/nothing-here" in raw]


def test_metrics_show_the_process_and_no_created_series(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service(SENDER_BACKEND="memory")
    with service.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_resident_memory_bytes"] > 10 * 1024 * 1024
    assert samples["process_open_fds"] > 0
    assert "python_gc_collections_total" in samples
    assert [line for line in response.text.splitlines() if "_created" in line] == []
