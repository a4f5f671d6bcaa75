"""Smoke test of ``bench/instances.py``: part (a) with the SES fake runs end to end with tiny
sizes (one SQLite instance, then one, two and three PostgreSQL instances, posting in parallel).

It measures nothing (no timing assertion): it proves that the fake, the service processes, the
parallel posting and the PostgreSQL observer still fit together, that every instance count
finishes its emails, and that PostgreSQL's own figures are read (its backends, transactions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.bench_support import REPO_ROOT


def test_the_instances_benchmark_runs_its_ses_part_in_quick_mode(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.instances", "--quick", "--part", "ses"]
    completed = subprocess.run(
        [*command, "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "aim: postgresql x3 / x1 > 1:" in completed.stdout
    assert completed.stdout.count("PASS") + completed.stdout.count("FAIL") == 2
    figures = json.loads((tmp_path / "instances.json").read_text("utf-8"))["figures"]
    best = figures["throughput_ses"]["best"]
    assert set(best) == {"sqlite x1", "postgresql x1", "postgresql x2", "postgresql x3"}
    assert best["sqlite x1"]["service_cpu_seconds_per_1000"] > 0
    for instances, name in enumerate(("postgresql x1", "postgresql x2", "postgresql x3"), 1):
        # 300 emails take a few clock ticks: PostgreSQL's CPU may round to 0 here.
        assert best[name]["pg_cpu_seconds_per_1000"] >= 0, name
        assert best[name]["pg_transactions_per_1000"] > 0, name
        # each instance: its store's pool, its listener and its heartbeat connection
        assert best[name]["pg_backends"] >= 3 * instances, name
    # Every email was sent once by some instance (claimed_by stays on a sent email).
    assert sum(best["postgresql x3"]["claimed_by"].values()) == 300
