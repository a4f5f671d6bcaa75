"""Smoke test of ``bench/webhook_delivery.py``: the benchmark runs end to end with tiny counts.

It measures nothing (no timing assertion): it proves the service runs with delivery off then on,
the receiver verifies every delivery with ``standardwebhooks``, and every event arrives once.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.bench_support import run_quick


def test_the_webhook_delivery_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    stdout, result = run_quick("webhook_delivery", tmp_path)
    assert "sending + webhooks" in stdout
    figures = result["figures"]
    assert figures["events_rejected"] == 0
    assert figures["events_distinct"] == figures["events_expected"] == 2 * (100 + 50)
    assert figures["baseline_send_rate"] > 0
    assert figures["window_events_per_second"] > 0
