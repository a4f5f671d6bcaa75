"""Send rate: does the running service hold ``MAX_SEND_PER_SECOND``, and nothing more?

What it measures: for each target rate R in ``--rates`` (default 24, 200, 1000) the real service
runs in-process, built by ``open_service(config, backend=MemoryBackend(latency=0.05),
handle_signals=False)`` from ``load_config`` with ``SENDER_BACKEND=memory``,
``MAX_SEND_PER_SECOND=R`` (burst left at its default, ``max(1, R/10)``), a fresh temporary
``DATABASE_PATH`` and HTTP on 127.0.0.1, port 0. Before the clock starts, enough emails for the
whole run (1.2 x R x (warm-up + duration) + burst) are stored with ``service.store.submit`` in
submissions of 10,000; then ``service.pipeline.notify_submitted()`` wakes the scheduler, the
service sends for ``--warmup + --duration`` seconds (default 1 + 15) and
``service.shutdown.trigger("bench")`` stops it gracefully.

Every figure comes from the memory backend's ``sent`` records: ``started_at`` is the trio-clock
instant the call carrying the email (``send_batch``) began, i.e. when it was handed to the
provider. With ``t0`` the
first start:

* **mean rate**: starts in the steady window ``[t0 + warmup, t0 + warmup + duration)`` divided
  by its length; the warm-up second holds the initial burst (the bucket starts full), which is
  allowed but is not the sustained rate. Criterion: within 2 % of R. The baseline is the target
  itself, so the ratio printed is achieved / R.
* **max 1-s window**: the largest number of starts in any half-open 1-second window sliding over
  the whole run (start-up burst included), computed exactly from the sorted start times.
  Criterion: never above R + burst, the most a token bucket of that depth can allow.
* **peak in-flight**: ``backend.statistics().peak_in_flight``, the most emails in backend calls
  running at once (a call carries a batch). Criterion: never above 2 x R (the sender pool's
  limit, counted in emails).

``--backend ses`` measures the same with bulk calls through the real SES backend: the service runs
with ``SENDER_BACKEND=ses``, ``SES_SEND_MODE=bulk`` against ``bench.fake_ses`` in its own process
on 127.0.0.1, which answers each send after ``--latency`` seconds, with the backend the service
builds (``sesender.service.build_backend``) wrapped in a recorder that notes, for every email
handed to ``send_batch``, the trio-clock instant the call began, and counts the recipients in calls
under way (its peak is "peak in flight"). The fake's ``/_bench/stats`` says how many recipients
each SES call carried on average. ``--ses-mode single`` runs ``SES_SEND_MODE=single`` instead: one
``SendEmail`` per email, so at R = 1000 and 50 ms the SES client process must keep about 50 calls
waiting on the fake at once.

It also draws sends per second (1-s bins from ``t0``) against the target for every R into
``--plot`` (default ``docs/rate.png``, with ``--backend ses`` ``docs/rate-ses-bulk.png``; pass
``--plot ''`` to skip it).

    python -m bench.rate                               # R = 24, 200, 1000; 15 s steady each
    python -m bench.rate --rates 24 200 1000 5000 --duration 30
    python -m bench.rate --backend ses --rates 24 200 1000 5000   # plot: docs/rate-ses-bulk.png
    python -m bench.rate --quick                       # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import bisect
import math
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bench.ceiling import FakeSes, run_fake_ses
from bench.common import (
    DOCS_DIR,
    ThreadTimes,
    add_output_arguments,
    format_table,
    make_emails,
    quiet_logging,
    service_values,
    submit_emails,
    verdict,
    write_result,
)
from sesender.backends.base import AccountStatus, Backend, OutgoingEmail, SendResult
from sesender.backends.memory import MemoryBackend
from sesender.config import load_config
from sesender.gc_tuning import tune_for_service
from sesender.service import build_backend, open_service

NAME = "rate"
TOPIC = "bench_rate"
MEAN_TOLERANCE = 0.02
#: How long after the steady window ends the shutdown is triggered (so the window is all sending).
TRIGGER_MARGIN = 0.25


def max_in_window(starts: Sequence[float], width: float = 1.0) -> int:
    """The most ``starts`` (sorted) inside any half-open window ``[t, t + width)``.

    The maximum is always reached by a window that opens on one of the starts.
    """
    best = 0
    low = 0
    for high, start in enumerate(starts):
        while starts[low] <= start - width:
            low += 1
        best = max(best, high - low + 1)
    return best


def per_second(starts: Sequence[float], origin: float, seconds: int) -> list[int]:
    """Starts in each whole second ``[origin + i, origin + i + 1)`` for i < seconds."""
    return [
        bisect.bisect_left(starts, origin + index + 1) - bisect.bisect_left(starts, origin + index)
        for index in range(seconds)
    ]


@dataclass(frozen=True, slots=True)
class Start:
    """One email handed to the backend: when its call began (trio clock)."""

    started_at: float


class RecordingBackend:
    """Any backend, with every email's call start and the recipients in calls under way noted.

    The measurement must see what the pipeline hands over, whatever backend sends it; the
    memory backend notes this itself, the SES backend does not.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.sent: list[Start] = []
        self.calls = 0
        self._in_flight = 0
        self.peak_in_flight = 0

    async def send(self, email: OutgoingEmail) -> str:
        results = await self.send_batch([email])
        result = results[0]
        if isinstance(result, str):
            return result
        raise result

    async def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        started = Start(trio.current_time())
        self.sent.extend(started for _ in emails)
        self.calls += 1
        self._in_flight += len(emails)
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            return await self.inner.send_batch(emails)
        finally:
            self._in_flight -= len(emails)

    async def account_status(self) -> AccountStatus:
        return await self.inner.account_status()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def measure_rate(
    rate: float,
    *,
    warmup: float,
    duration: float,
    latency: float,
    directory: Path,
    fake: FakeSes | None = None,
    ses_mode: str = "bulk",
) -> dict[str, Any]:
    settings = {"SENDER_BACKEND": "memory"}
    if fake is not None:
        settings = {
            "SENDER_BACKEND": "ses",
            "SES_SEND_MODE": ses_mode,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_SESV2": fake.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SES_FROM_EMAIL": "bench@example.com",
            "SERVER_URL": "https://bench.example.test",
            "TRACKING_SECRET": "bench-rate-tracking-secret-0123456789",
        }
    config = load_config(
        service_values(directory / f"rate-{rate:g}.db", MAX_SEND_PER_SECOND=f"{rate:g}", **settings)
    )
    burst = config.pipeline.burst
    backend: MemoryBackend | RecordingBackend
    if fake is None:
        backend = MemoryBackend(latency=latency)
    else:
        backend = RecordingBackend(await build_backend(config))
        calls_before = fake.call_counts()
    total = math.ceil(1.2 * rate * (warmup + duration) + burst)
    async with open_service(config, backend=backend, handle_signals=False) as service:
        tune_for_service()  # as ``run_service`` does once the service has started
        await submit_emails(service.store, TOPIC, make_emails(total))
        notified = trio.current_time()
        loop_times = ThreadTimes.now()
        service.pipeline.notify_submitted()
        triggered = notified + warmup + duration + TRIGGER_MARGIN
        await trio.sleep_until(triggered)
        loop = ThreadTimes.now().since(loop_times)
        service.shutdown.trigger("bench")
        pool = service.pipeline.sender_pool.statistics()
    starts = sorted(record.started_at for record in backend.sent)
    if not starts:
        raise RuntimeError(f"nothing was sent at R={rate:g}")
    origin = starts[0]
    window_start = origin + warmup
    window_end = min(origin + warmup + duration, triggered)
    steady = bisect.bisect_left(starts, window_end) - bisect.bisect_left(starts, window_start)
    mean = steady / (window_end - window_start)
    started_before_trigger = starts[: bisect.bisect_left(starts, triggered)]
    max_window = max_in_window(started_before_trigger)
    steady_starts = starts[
        bisect.bisect_left(starts, window_start) : bisect.bisect_left(starts, window_end)
    ]
    ses_calls: dict[str, float] = {}
    if isinstance(backend, MemoryBackend):
        peak_in_flight = backend.statistics().peak_in_flight
    else:
        peak_in_flight = backend.peak_in_flight
        assert fake is not None
        after = fake.call_counts()
        ses_calls = {name: after[name] - calls_before[name] for name in after}
        calls = ses_calls["send_email"] + ses_calls["send_bulk_email"]
        ses_calls["recipients_per_call"] = (
            ses_calls["send_email"] + ses_calls["bulk_entries"]
        ) / max(1, calls)
    seconds = int(triggered - origin)
    return {
        "rate": rate,
        "backend": "memory" if fake is None else f"ses {ses_mode} (fake SES)",
        "ses_calls": ses_calls,
        "burst": burst,
        "latency": latency,
        "submitted": total,
        "sent": len(starts),
        "first_send_after_notify": origin - notified,
        "steady_window": [window_start - origin, window_end - origin],
        "steady_sends": steady,
        "mean_rate": mean,
        "mean_ratio": mean / rate,
        "max_1s_window": max_window,
        "max_1s_window_steady": max_in_window(steady_starts),
        "limit_1s_window": rate + burst,
        "peak_in_flight": peak_in_flight,
        "pool_peak_in_flight": pool.peak_in_flight,
        "limit_in_flight": 2 * rate,
        "per_second": per_second(starts, origin, seconds),
        **{f"event_loop_{key}": value for key, value in loop.items()},
        "event_loop_cpu_ms_per_send": 1000 * loop["thread_on_cpu_seconds"] / len(starts),
        "mean_ok": abs(mean / rate - 1) <= MEAN_TOLERANCE,
        "window_ok": max_window <= rate + burst,
        "in_flight_ok": peak_in_flight <= 2 * rate,
    }


def plot(runs: Sequence[dict[str, Any]], path: Path, *, latency: float, backend: str) -> None:
    # matplotlib is imported only when a plot is asked for (it takes a second to load).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(runs), 1, figsize=(8, 2.4 * len(runs) + 0.6), squeeze=False, constrained_layout=True
    )
    for axis, run in zip(axes[:, 0], runs, strict=True):
        counts = run["per_second"]
        seconds = list(range(len(counts)))
        rate = run["rate"]
        axis.bar(seconds, counts, width=0.85, align="edge", color="#4c72b0", label="sends")
        axis.axhline(rate, color="#dd8452", linewidth=2, label=f"target R = {rate:g}/s")
        axis.axhline(
            run["limit_1s_window"],
            color="#c44e52",
            linestyle=":",
            linewidth=1.5,
            label=f"R + burst = {run['limit_1s_window']:g}",
        )
        low, high = run["steady_window"]
        axis.axvspan(low, high, color="#55a868", alpha=0.08, label="steady window")
        axis.set_xlim(0, max(len(counts), 1))
        axis.set_ylim(0, run["limit_1s_window"] * 1.25)
        axis.set_ylabel("sends / s")
        axis.set_title(
            f"R = {rate:g}/s: mean {run['mean_rate']:.2f}/s ({run['mean_ratio']:.2%} of R),"
            f" max 1-s window {run['max_1s_window']}, peak in flight {run['peak_in_flight']}",
            fontsize=9,
        )
    axes[-1, 0].set_xlabel("seconds since the first send (1-s bins)")
    title = (
        f"memory backend with {latency * 1000:g} ms latency"
        if backend == "memory"
        else f"{backend}, fake SES with {latency * 1000:g} ms latency"
    )
    figure.suptitle(f"sesender send rate, {title}", fontsize=11)
    handles, _ = axes[0, 0].get_legend_handles_labels()
    figure.legend(
        handles=[handles[index] for index in (3, 0, 1, 2)],  # bars, target, limit, window
        labels=["sends started per second", "target R", "R + burst (limit)", "steady window"],
        loc="outside lower center",
        ncols=4,
        fontsize=8,
        frameon=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(runs: Sequence[dict[str, Any]]) -> str:
    figures = format_table(
        (
            "R (/s)",
            "burst",
            "mean (/s)",
            "mean / R",
            "max 1-s window",
            "R + burst",
            "peak in flight",
            "2R",
        ),
        (
            (
                run["rate"],
                run["burst"],
                run["mean_rate"],
                run["mean_ratio"],
                run["max_1s_window"],
                run["limit_1s_window"],
                run["peak_in_flight"],
                run["limit_in_flight"],
            )
            for run in runs
        ),
    )
    verdicts = format_table(
        ("R (/s)", "mean within 2 % of R", "no 1-s window above R + burst", "in flight <= 2R"),
        (
            (
                run["rate"],
                verdict(run["mean_ok"]),
                verdict(run["window_ok"]),
                verdict(run["in_flight_ok"]),
            )
            for run in runs
        ),
    )
    loop = format_table(
        (
            "R (/s)",
            "event-loop thread on CPU",
            "runnable, waiting for a CPU",
            "event-loop CPU per send (ms)",
        ),
        (
            (
                run["rate"],
                f"{run['event_loop_thread_on_cpu_share']:.0%}",
                f"{run['event_loop_thread_waiting_for_cpu_share']:.0%}",
                run["event_loop_cpu_ms_per_send"],
            )
            for run in runs
        ),
    )
    text = f"{figures}\n\n{verdicts}\n\n{loop}"
    if any(run["ses_calls"] for run in runs):
        calls = format_table(
            ("R (/s)", "send_email calls", "send_bulk_email calls", "recipients per SES call"),
            (
                (
                    run["rate"],
                    run["ses_calls"]["send_email"],
                    run["ses_calls"]["send_bulk_email"],
                    run["ses_calls"]["recipients_per_call"],
                )
                for run in runs
            ),
        )
        text += f"\n\n{calls}"
    return text


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[24.0, 200.0, 1000.0])
    parser.add_argument(
        "--duration", type=float, default=15.0, help="steady window per rate, seconds"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds excluded from the mean (start burst)"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.05,
        help="seconds per call: the memory backend's, or the fake SES's with --backend ses",
    )
    parser.add_argument(
        "--plot",
        type=str,
        default=None,
        help="PNG path ('' for none; default docs/rate.png, docs/rate-ses-bulk.png with ses)",
    )
    parser.add_argument(
        "--backend",
        choices=("memory", "ses"),
        default="memory",
        help="memory, or ses against bench.fake_ses (both with --latency)",
    )
    parser.add_argument(
        "--ses-mode",
        choices=("bulk", "single"),
        default="bulk",
        help="SES_SEND_MODE with --backend ses (default bulk)",
    )
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.plot is None:
        name = "rate.png" if arguments.backend == "memory" else f"rate-ses-{arguments.ses_mode}.png"
        arguments.plot = str(DOCS_DIR / name)
    if arguments.quick:
        arguments.rates = [24.0, 200.0]
        arguments.duration = 0.2
        arguments.warmup = 0.1
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    quiet_logging()
    runs = []
    with ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="sesender-rate-"))
        fake = None
        if arguments.backend == "ses":
            fake = stack.enter_context(run_fake_ses("--latency", f"{arguments.latency:g}"))
        for rate in arguments.rates:
            runs.append(
                trio.run(
                    partial(
                        measure_rate,
                        rate,
                        warmup=arguments.warmup,
                        duration=arguments.duration,
                        latency=arguments.latency,
                        directory=Path(directory),
                        fake=fake,
                        ses_mode=arguments.ses_mode,
                    )
                )
            )
    print(report(runs))
    if arguments.plot:
        label = (
            "memory"
            if arguments.backend == "memory"
            else f"ses backend, {arguments.ses_mode} calls"
        )
        plot(runs, Path(arguments.plot), latency=arguments.latency, backend=label)
        print(f"\nplot: {arguments.plot}")
    figures = {
        "runs": runs,
        "passed": all(run["mean_ok"] and run["window_ok"] and run["in_flight_ok"] for run in runs),
    }
    name = NAME if arguments.backend == "memory" else f"{NAME}-{arguments.backend}"
    if arguments.backend == "ses" and arguments.ses_mode == "single":
        name += "-single"
    path = write_result(name, arguments.results_dir, arguments, figures)
    print(f"results: {path}")
    return figures


if __name__ == "__main__":
    main()
