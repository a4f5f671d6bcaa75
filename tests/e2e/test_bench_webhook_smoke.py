"""Smoke test of ``bench/webhook.py``: the benchmark runs end to end with tiny counts.

It measures nothing (no timing assertion): it proves the service process, the bare baseline
server, the certificate server and the load generator still fit together, and that every signed
notification was answered 200 and recorded.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.bench_support import run_quick


def test_the_webhook_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    stdout, result = run_quick("webhook", tmp_path)
    assert "sesender (msg/s)" in stdout
    figures = result["figures"]
    assert figures["sesender_rate_best"] > 0
    assert figures["baseline_rate_best"] > 0
    (run,) = figures["runs"]
    messages = figures["messages_per_run"]
    assert run["sesender"]["statuses"] == {"200": messages}
    assert run["sesender"]["results"] == {"recorded": messages}
    assert run["baseline"]["statuses"] == {"200": messages}
