"""Smoke test of ``bench/retention.py``: the retention benchmark runs end to end with tiny sizes.

It measures nothing (no timing assertion): it proves that the old-email database builder, the two
service runs, the API probe and the pruning window still fit together, and that the run pruned
every old email while every API answer was 200.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.bench_support import run_quick


def test_the_retention_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    stdout, result = run_quick("retention", tmp_path)
    assert "bytes per email" in stdout
    figures = result["figures"]
    assert figures["database"]["emails"] == 3_000
    assert figures["pruned"]["emails"] == 3_000  # every old email (the newest is a load email)
    assert figures["storage_after_prune"]["emails_pruned"] == 3_000
    assert figures["during_pruning"]["seconds"] >= 1
    assert figures["during_pruning"]["api_statuses"] in ([], [200])
    assert figures["baseline_same_seconds"]["api_statuses"] in ([], [200])
    assert "v6" in figures["schema"]
    assert len(figures["schema"]) == 2  # before retention, and the latest schema
