"""Smoke test of ``bench/webhook.py``: the benchmark runs end to end with tiny counts.

It measures nothing (no timing assertion): it proves the service process, the bare baseline
server, the certificate server and the load generator still fit together, and that every signed
notification was answered 200 and recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_webhook_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.webhook", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "sesender (msg/s)" in completed.stdout
    result = json.loads((tmp_path / "webhook.json").read_text("utf-8"))
    figures = result["figures"]
    assert figures["sesender_rate_best"] > 0
    assert figures["baseline_rate_best"] > 0
    (run,) = figures["runs"]
    messages = figures["messages_per_run"]
    assert run["sesender"]["statuses"] == {"200": messages}
    assert run["sesender"]["results"] == {"recorded": messages}
    assert run["baseline"]["statuses"] == {"200": messages}
