"""Idle: how much CPU does the service use with nothing to send?

An idle service should cost next to nothing: nothing queued means no claims, no sends, no writes;
what is left is the scheduler's periodic look for due emails, the account probe, metrics. Aim:
under 1 % of a core over ``--duration`` (30) seconds.

What runs, all on loopback, each in its own process, all at once (so they share one window of
the same machine):

* the real service (``sesender`` console script, default settings apart from those needed to
  start) with ``SENDER_BACKEND=outbox``;
* the real service with ``SENDER_BACKEND=ses`` (bulk mode, the default) against ``bench.fake_ses``;
* the baseline: a bare ``trio.run(trio.sleep, ...)`` in a Python process, the least an idle trio
  program costs (its share is the floor any idle measurement here can reach).

Each service first proves it works: ``--warmup-emails`` (10) emails are POSTed and the benchmark
waits until its topic counts them all Sent, then waits ``--warmup`` (5) seconds more. Then the
processes' CPU time (user + system, every thread and child process such as the SES client
process, from ``/proc/<pid>/stat``, in 10-ms clock
ticks) is read, the benchmark sleeps ``--duration`` seconds without touching any of them, and
reads it again. For the main (event-loop) thread it also reports, to the nanosecond, its CPU time,
its wake-ups (voluntary context switches) per second and the share of the window it spent
runnable but waiting for a CPU (``/proc/<pid>/schedstat``: the time other processes took from it),
with the load average.

    python -m bench.idle              # 30 s window
    python -m bench.idle --quick      # a 1-s window, for the CI smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.ceiling import process_tree_cpu_seconds, run_fake_ses
from bench.common import REPO_DIR, add_output_arguments, format_table, verdict, write_result

NAME = "idle"
#: Under 1 % of one core.
AIM_CORE_SHARE = 0.01
API_KEY = "bench-idle"
TOPIC = "bench_idle"
STARTUP_TIMEOUT = 60.0
#: What the baseline process writes once its trio loop is about to run.
BASELINE_READY = "ready"


@dataclass(frozen=True, slots=True)
class Sample:
    """A process's counters at one instant."""

    at: float
    #: Every thread, dead ones included, in clock ticks (10 ms): the figure the aim is about.
    cpu_seconds: float
    #: The main (event-loop) thread only, to the nanosecond.
    wakeups: int
    loop_cpu_seconds: float
    waiting_seconds: float


def event_loop_counters(pid: int) -> tuple[int, float, float]:
    """The main (event-loop) thread's voluntary context switches (wake-ups), seconds on a CPU
    and seconds runnable but waiting for one (``/proc/<pid>/schedstat``, nanoseconds)."""
    wakeups = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            wakeups = int(line.split()[1])
    on_cpu_ns, waiting_ns = Path(f"/proc/{pid}/schedstat").read_text().split()[:2]
    return wakeups, int(on_cpu_ns) / 1e9, int(waiting_ns) / 1e9


def sample(pid: int) -> Sample:
    wakeups, loop_cpu, waiting = event_loop_counters(pid)
    return Sample(time.monotonic(), process_tree_cpu_seconds(pid), wakeups, loop_cpu, waiting)


class Subject:
    """One process under measurement."""

    def __init__(self, name: str, process: subprocess.Popen[str]) -> None:
        self.name = name
        self.process = process
        self.url = ""
        self.lines: list[str] = []
        self._listening = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == BASELINE_READY:
                self._listening.set()
            elif not self.url and '"listening"' in line:
                with contextlib.suppress(json.JSONDecodeError, KeyError, IndexError):
                    self.url = json.loads(line)["urls"][0].replace("0.0.0.0", "127.0.0.1")
                    self._listening.set()

    def wait_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._listening.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(self.lines[-20:]))

    def stop(self) -> None:
        """SIGTERM this process (and only it), SIGKILL if it does not go."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def service_env(workdir: Path, **settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "SES_", "SNS_", "SENTRY_"))
    }
    env.update(
        {
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": "0",
            "API_KEY": API_KEY,
            "DATABASE_PATH": str(workdir / "idle.db"),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
        }
    )
    env.update(settings)
    return env


def start_service(name: str, workdir: Path, settings: Mapping[str, str]) -> Subject:
    workdir.mkdir(parents=True, exist_ok=True)
    script = Path(sys.executable).with_name("sesender")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sesender"]
    process = subprocess.Popen(
        command,
        cwd=REPO_DIR,
        env=service_env(workdir, **settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Subject(name, process)


def start_baseline(seconds: float) -> Subject:
    code = (
        "import sys, trio\n"
        f"print({BASELINE_READY!r}, file=sys.stderr, flush=True)\n"
        f"trio.run(trio.sleep, {seconds})\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Subject("baseline", process)


def send_warmup(subject: Subject, count: int, timeout: float) -> None:
    """POST ``count`` emails and wait until all are Sent: the pipeline has run before idling."""
    if count <= 0:
        return
    with httpx.Client(base_url=subject.url, headers={"X-API-KEY": API_KEY}, timeout=30) as client:
        body = {
            "messages": [
                {
                    "topic_id": TOPIC,
                    "emails": [f"idle{index}@example.com" for index in range(count)],
                    "subject": "Idle warm-up",
                    "content": "<html><body><p>warm-up</p></body></html>",
                }
            ]
        }
        client.post("/v1/messages", json=body).raise_for_status()
        deadline = time.monotonic() + timeout
        while True:
            counts = client.get(f"/v1/topics/{TOPIC}").json()["request_counts"]
            if counts.get("Sent", 0) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{subject.name}: warm-up emails not sent: {counts}")
            time.sleep(0.05)


@contextlib.contextmanager
def subjects(arguments: argparse.Namespace, workdir: Path) -> Iterator[list[Subject]]:
    started: list[Subject] = []
    with run_fake_ses() as fake:
        try:
            started.append(
                start_service(
                    "service, outbox backend",
                    workdir / "outbox",
                    {
                        "SENDER_BACKEND": "outbox",
                        "OUTBOX_DIR": str(workdir / "outbox" / "mail"),
                    },
                )
            )
            started.append(
                start_service(
                    "service, ses backend (bulk)",
                    workdir / "ses",
                    {
                        "SENDER_BACKEND": "ses",
                        "SES_SEND_MODE": "bulk",
                        "AWS_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL_SESV2": fake.url,
                        "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SES_FROM_EMAIL": "bench@example.com",
                        "SERVER_URL": "https://bench.example.test",
                    },
                )
            )
            lifetime = arguments.warmup + arguments.duration + STARTUP_TIMEOUT + 60
            started.append(start_baseline(lifetime))
            yield started
        finally:
            for subject in started:
                subject.stop()


def measure(arguments: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sesender-idle-") as directory,
        subjects(arguments, Path(directory)) as running,
    ):
        for subject in running:
            subject.wait_listening()
        for subject in running:
            if subject.name != "baseline":
                send_warmup(subject, arguments.warmup_emails, STARTUP_TIMEOUT)
        time.sleep(arguments.warmup)
        load_before = os.getloadavg()
        before = {subject.name: sample(subject.process.pid) for subject in running}
        time.sleep(arguments.duration)
        after = {subject.name: sample(subject.process.pid) for subject in running}
        load_after = os.getloadavg()
        alive = {subject.name: subject.process.poll() is None for subject in running}
    processes: dict[str, Any] = {}
    for name, start in before.items():
        end = after[name]
        seconds = end.at - start.at
        cpu = end.cpu_seconds - start.cpu_seconds
        processes[name] = {
            "window_seconds": seconds,
            "cpu_seconds": cpu,
            "core_share": cpu / seconds,
            "event_loop_cpu_seconds": end.loop_cpu_seconds - start.loop_cpu_seconds,
            "event_loop_wakeups_per_second": (end.wakeups - start.wakeups) / seconds,
            "event_loop_waiting_for_cpu_seconds": end.waiting_seconds - start.waiting_seconds,
            "alive_at_end": alive[name],
        }
    services = {name: figures for name, figures in processes.items() if name != "baseline"}
    return {
        "duration": arguments.duration,
        "warmup": arguments.warmup,
        "warmup_emails": arguments.warmup_emails,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "processes": processes,
        "aim_core_share": AIM_CORE_SHARE,
        "passed": all(
            figures["core_share"] < AIM_CORE_SHARE and figures["alive_at_end"]
            for figures in services.values()
        ),
    }


def report(figures: Mapping[str, Any]) -> str:
    rows = [
        (
            name,
            process["cpu_seconds"],
            process["window_seconds"],
            f"{process['core_share']:.3%}",
            1000 * process["event_loop_cpu_seconds"],
            process["event_loop_wakeups_per_second"],
            f"{process['event_loop_waiting_for_cpu_seconds'] / process['window_seconds']:.2%}",
            "-" if name == "baseline" else verdict(process["core_share"] < AIM_CORE_SHARE),
        )
        for name, process in figures["processes"].items()
    ]
    table = format_table(
        (
            "process",
            "CPU s",
            "window s",
            "share of a core",
            "event loop CPU ms",
            "event loop wake-ups/s",
            "event loop waiting for a CPU",
            "aim < 1 %",
        ),
        rows,
    )
    before = ", ".join(f"{value:.2f}" for value in figures["load_average_before"])
    after = ", ".join(f"{value:.2f}" for value in figures["load_average_after"])
    load = f"load average (1, 5, 15 min): before the window {before}; after it {after}"
    return f"{table}\n\n{load}"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.idle", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=30.0, help="measured window, seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="idle seconds before it")
    parser.add_argument(
        "--warmup-emails", type=int, default=10, help="emails each service sends first"
    )
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.duration = 1.0
        arguments.warmup = 0.2
        arguments.warmup_emails = 2
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    figures = measure(arguments)
    print(report(figures))
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
