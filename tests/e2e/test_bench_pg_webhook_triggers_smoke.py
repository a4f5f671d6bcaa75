"""Smoke test of ``bench/pg_webhook_triggers.py``: the benchmark runs with tiny counts.

It measures nothing (no timing assertion): it proves the PostgreSQL schema, the dropped-trigger
baseline and the subscriber modes still fit together, and that the trigger wrote one event row
per email exactly when someone subscribes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.bench_support import run_quick

pytestmark = pytest.mark.e2e


def test_the_pg_webhook_trigger_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    stdout, result = run_quick("pg_webhook_triggers", tmp_path)
    assert "no subscriber / no trigger" in stdout
    figures = result["figures"]
    assert figures["event_rows"] == {
        "no trigger (baseline)": 0,
        "trigger, no subscriber": 0,
        "one subscriber": 300,
        "one subscriber, 10x batch": 300,
    }
    assert all(value > 0 for value in figures["best_cpu_us_per_outcome"].values())
