"""Smoke test of ``bench/api.py``: the API benchmark runs end to end with tiny sizes.

It measures nothing (no timing assertion): it proves the service processes, the bare baseline
server, the load generator and the statistics database builder still fit together, that every
submission was stored, every pixel answered with the PNG and every open persisted, and that the
statistics answers agree with the database.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.bench_support import run_quick


def test_the_api_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    stdout, result = run_quick("api", tmp_path)
    assert "sesender duration_ms (server)" in stdout
    assert result["benchmark"] == "api"
    figures = result["figures"]
    assert figures["parts"] == ["submit", "pixel", "stats"]
    assert figures["service_errors"] == []
    assert figures["stats_service_errors"] == []

    submit = figures["submit"]
    assert submit["server_duration_ms"]["count"] == submit["runs"]
    assert submit["round_trip_ms"]["median"] > 0

    pixel = figures["pixel"]
    (run,) = pixel["runs"]
    for side in ("sesender", "baseline"):
        assert run[side]["statuses"] == {"200": pixel["opens_per_run"]}
        assert run[side]["wrong_bodies"] == 0
    assert pixel["all_persisted"]
    assert pixel["persisted"]["open_count"] == pixel["distinct_ids_opened"]

    stats = figures["stats"]
    assert stats["emails"] == 10_000
    assert stats["cached"] is False  # built in tmp_path, never the repository's cache
    assert all(endpoint["count"] == stats["requests"] for endpoint in stats["endpoints"].values())
    assert (tmp_path / "api-stats-10000-8000.db").exists()
