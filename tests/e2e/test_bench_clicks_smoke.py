"""Smoke test of ``bench/clicks.py``: the click benchmarks run end to end with tiny sizes.

It measures nothing (no timing assertion): it proves the service, the bare redirect baseline and
the load generator still fit together, that every click was answered with a 302 to the link and
persisted (unique and total counts, per-link counts), and that the rewrite part runs.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.bench_support import run_quick


def test_the_clicks_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    stdout, result = run_quick("clicks", tmp_path)
    assert "Click redirect" in stdout
    figures = result["figures"]
    assert figures["parts"] == ["redirect", "rewrite"]
    assert figures["service_errors"] == []
    redirect = figures["redirect"]
    (run,) = redirect["runs"]
    for side in ("sesender", "baseline"):
        assert run[side]["statuses"] == {"302": redirect["clicks_per_run"]}
        assert run[side]["wrong_targets"] == 0
    assert redirect["all_persisted"]
    rewrite = figures["rewrite"]
    assert rewrite["tracked_links"] == 160
    assert rewrite["content_bytes"] > 95_000


def test_the_redirect_benchmark_runs_with_targets_read_from_the_database(tmp_path: Path) -> None:
    """``--cold``: the service is restarted after the emails are stored, so every redirect
    target comes from the database, not from the memory of the process that stored them."""
    stdout, result = run_quick("clicks", tmp_path, "--part", "redirect", "--cold")
    assert "targets from database" in stdout
    assert "server CPU per redirect" in stdout
    figures = result["figures"]
    assert figures["service_errors"] == []
    redirect = figures["redirect"]
    assert redirect["targets_from"] == "database"
    (run,) = redirect["runs"]
    assert run["sesender"]["statuses"] == {"302": redirect["clicks_per_run"]}
    assert run["sesender"]["wrong_targets"] == 0
    assert redirect["all_persisted"]
    assert {"throughput_passed", "cpu_passed", "cpu_ratio"} <= redirect.keys()
