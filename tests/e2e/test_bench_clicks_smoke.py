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
