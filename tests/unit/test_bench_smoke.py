"""The benchmarks still run: each one in its ``--quick`` mode, on tiny sizes.

This proves the code paths (service start and stop, the fake SES process, the JSON result) and
nothing about speed: no timing is asserted. The real figures are in docs/performance.md.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench import auth, bulk, ceiling, compose, guard_counters, idle, rate, store_ingest
from bench.common import BODY, SUBJECT
from sesender.backends.base import OutgoingEmail
from sesender.config import BackendKind, Config
from sesender.models import ClaimedEmail, Content
from sesender.pipeline.compose import MessageComposer
from sesender.tracking import TokenSigner


def result(directory: Path, name: str) -> dict[str, object]:
    payload = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    assert payload["benchmark"] == name
    assert payload["machine"]["python"]
    figures: dict[str, object] = payload["figures"]
    return figures


def test_store_ingest_quick(tmp_path: Path) -> None:
    store_ingest.main(["--quick", "--results-dir", str(tmp_path), "--directory", str(tmp_path)])

    figures = result(tmp_path, "store_ingest")
    assert figures["recipients"] == 2_000
    assert isinstance(figures["ratio_median"], float)


def test_guard_counters_quick(tmp_path: Path) -> None:
    guard_counters.main(["--quick", "--results-dir", str(tmp_path), "--directory", str(tmp_path)])

    figures = result(tmp_path, "guard_counters")
    sends = figures["sends"]
    evaluation = figures["evaluation"]
    assert isinstance(sends, dict)
    assert isinstance(evaluation, dict)
    assert isinstance(sends["median_cpu_ratio"], float)
    assert evaluation["history_emails"] == 2_000


def test_rate_quick(tmp_path: Path) -> None:
    # No plot: importing matplotlib alone takes longer than the whole quick run.
    rate.main(["--quick", "--results-dir", str(tmp_path), "--plot", ""])

    runs = result(tmp_path, "rate")["runs"]
    assert isinstance(runs, list)
    assert [run["rate"] for run in runs] == [24.0, 200.0]
    assert all(run["sent"] > 0 for run in runs)


@pytest.mark.e2e  # with the ses backend, the rate benchmark starts bench.fake_ses as a process
def test_rate_ses_bulk_quick(tmp_path: Path) -> None:
    rate.main(["--quick", "--backend", "ses", "--results-dir", str(tmp_path), "--plot", ""])

    runs = result(tmp_path, "rate-ses")["runs"]
    assert isinstance(runs, list)
    assert [run["rate"] for run in runs] == [24.0, 200.0]
    assert all(run["sent"] > 0 for run in runs)
    # The emails went to the fake SES in bulk calls, as many recipients as were handed over.
    assert all(run["ses_calls"]["send_bulk_email"] >= 1 for run in runs)
    assert all(run["ses_calls"]["bulk_entries"] <= run["sent"] for run in runs)


@pytest.mark.e2e  # the ceiling benchmark starts a fake SES as a process (bench.fake_ses)
def test_ceiling_quick(tmp_path: Path) -> None:
    ceiling.main(["--quick", "--results-dir", str(tmp_path), "--directory", str(tmp_path)])

    figures = result(tmp_path, "ceiling")
    memory = figures["memory"]
    ses = figures["ses"]
    assert isinstance(memory, dict)
    assert isinstance(ses, dict)
    assert memory["service"]["complete"]
    # Both aims of (a) are judged, and "passed" is both.
    assert memory["passed"] == (memory["passed_rate"] and memory["passed_ratio"])
    assert memory["passed_ratio"] == (memory["ratio_to_store_floor"] >= 0.7)
    assert ses["service"]["complete"]
    assert ses["memory_service"]["complete"]
    # Every recipient reached the fake exactly once, alone or as an entry of a bulk call.
    calls = ses["service"]
    assert calls["send_email_calls"] + calls["bulk_entries"] == ses["emails"]
    # Bulk mode with one content: the recipients went in SendBulkEmail calls.
    assert calls["send_bulk_email_calls"] >= 1
    assert calls["recipients_per_call"] > 1
    # Each round's adjacent runs are paired: one ratio per round, and their median.
    for part, runs, others, key in (
        (memory, "service_runs", "store_floor_runs", "ratio_to_store_floor"),
        (ses, "service_runs", "memory_service_runs", "ratio_to_memory"),
    ):
        pairs = part[f"{key}_by_pair"]
        expected = [
            top["emails_per_second"] / bottom["emails_per_second"]
            for top, bottom in zip(part[runs], part[others], strict=True)
        ]
        assert pairs == pytest.approx(expected)
        assert len(pairs) == len(part[runs]) >= 1
        assert part[f"{key}_pair_median"] == pytest.approx(statistics.median(expected))
    # The two aims together: (a) x (b) = SES / floor x (a)'s service run / (b)'s memory run,
    # so both pass only if SES / floor reaches 0.49 x (b)'s memory run / (a)'s service run.
    both = figures["both"]
    assert isinstance(both, dict)
    memory_runs = (
        ses["memory_service"]["emails_per_second"] / memory["service"]["emails_per_second"]
    )
    assert both["ses_to_store_floor"] == pytest.approx(
        memory["ratio_to_store_floor"] * ses["ratio_to_memory"] * memory_runs
    )
    assert both["needed"] == pytest.approx(0.49 * memory_runs)
    assert both["reached"] == (both["ses_to_store_floor"] >= both["needed"])


def test_ceiling_ses_baseline_composes_what_the_ses_run_composes(tmp_path: Path) -> None:
    """(b) measures what the SES backend costs over the memory backend: the memory run must
    compose the very email the SES run composes (on its defaults it signs no unsubscribe token
    and adds no List-Unsubscribe header), with the same pipeline settings; only the backend
    differs."""
    rate = 5_000.0
    ses = ceiling.ses_config(tmp_path / "ses.db", "http://127.0.0.1:9", rate)
    memory = ceiling.memory_config_as_ses(tmp_path / "memory.db", rate)
    assert ses.backend.kind is BackendKind.SES
    assert memory.backend.kind is BackendKind.MEMORY
    for section in ("pipeline", "guard", "tracking", "feedback"):
        assert getattr(memory, section) == getattr(ses, section), section
    assert memory.server.public_url == ses.server.public_url
    assert memory.backend.aws.from_email == ses.backend.aws.from_email
    assert memory.feedback.unsubscribe_enabled  # the SES default, off by default with memory
    assert not ceiling.memory_config(tmp_path / "a.db").feedback.unsubscribe_enabled

    def composed(config: Config) -> OutgoingEmail:
        assert config.tracking.secret is not None
        composer = MessageComposer.from_config(config, TokenSigner(config.tracking.secret))
        content = Content(subject=SUBJECT, body=BODY)
        return composer.compose(
            ClaimedEmail(
                request_id=7,
                topic_id=ceiling.TOPIC,
                email="a@example.com",
                content=content,
                attempts=0,
            )
        )

    email = composed(memory)
    assert email == composed(ses)
    assert dict(email.headers)["List-Unsubscribe"].startswith("<https://bench.example.test/")
    assert email.pixel_url is not None


@pytest.mark.parametrize(
    ("ratio", "text"),
    [(0.6996, "0.699"), (0.7, "0.700"), (0.70049, "0.700"), (0.5, "0.500"), (1.23456, "1.234")],
)
def test_a_ratio_is_never_printed_above_what_it_is(ratio: float, text: str) -> None:
    """0.6996 printed as 0.70 beside FAIL read as a contradiction: ratios are cut, not rounded."""
    assert ceiling.ratio_text(ratio) == text


def test_auth_quick(tmp_path: Path) -> None:
    auth.main(["--quick", "--results-dir", str(tmp_path)])

    figures = result(tmp_path, "auth")
    assert "before: API_KEY" in figures
    assert "after: named key (of 3)" in figures


def test_compose_quick(tmp_path: Path) -> None:
    compose.main(["--quick", "--results-dir", str(tmp_path)])

    figures = result(tmp_path, "compose")
    assert set(figures) == {"small message", "16 KB newsletter"}
    newsletter = figures["16 KB newsletter"]
    assert isinstance(newsletter, dict)
    assert newsletter["bytes"] > 15_000


@pytest.mark.e2e  # starts the fake SES as a process (bench.fake_ses)
def test_bulk_quick(tmp_path: Path) -> None:
    bulk.main(["--quick", "--results-dir", str(tmp_path)])

    figures = result(tmp_path, "bulk")
    bulk_figures, single_figures = figures["bulk"], figures["single"]
    assert isinstance(bulk_figures, dict)
    assert isinstance(single_figures, dict)
    assert bulk_figures["emails"] == 300
    # 300 emails in batches of 150: three calls of 50 per batch.
    assert bulk_figures["recipients_per_call"] == 50
    assert single_figures["recipients_per_call"] == 1


@pytest.mark.e2e  # starts two services and the fake SES as processes
def test_idle_quick(tmp_path: Path) -> None:
    idle.main(["--quick", "--results-dir", str(tmp_path)])

    processes = result(tmp_path, "idle")["processes"]
    assert isinstance(processes, dict)
    assert set(processes) == {"service, outbox backend", "service, ses backend (bulk)", "baseline"}
    for figures in processes.values():
        assert figures["alive_at_end"]
        assert figures["window_seconds"] >= 1.0
        assert figures["cpu_seconds"] >= 0


def test_instances_claim_part_quick(tmp_path: Path) -> None:
    """The claim path's round-trip count (PostgreSQL); the process-based parts of
    ``bench.instances`` share their harness with tests/e2e/test_multi_instance.py."""
    from bench import instances

    instances.main(["--quick", "--part", "claim", "--results-dir", str(tmp_path)])
    claim = result(tmp_path, "instances")["claim"]
    assert isinstance(claim, dict)
    # 300 emails: one claim, one empty claim, one contents fetch, three flushes of 100.
    assert claim["round_trips"] == 6
