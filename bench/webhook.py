"""SNS webhook: verified SES events per second, against a bare hypercorn + quart-trio app.

What it measures, in one run, on one machine, with the same request bodies:

* **sesender**: the real service as a process (the ``sesender`` console script, memory backend,
  SQLite in a temporary directory, ``SNS_CERT_URL_PATTERN`` admitting a loopback server that
  serves the test certificate). A few emails (``--emails``, default 10) are submitted
  through the API and sent; then ``--messages`` (default 5,000) SNS Notifications are signed up
  front with the test key (``tests/fixtures/sns/test-signing/``), each with its own SNS
  ``MessageId`` and a current ``Timestamp``, carrying SES events adapted from the fixtures
  (Delivery, Bounce and Complaint, both the ``notificationType`` and ``eventType`` formats) for
  the SES message ids of those emails. A load generator in a second process (httpx on trio,
  ``--concurrency`` requests in flight, default 32, over kept-alive connections) posts them to
  ``POST /v1/events/results`` as SNS does (``text/plain``, ``x-amz-sns-message-type``). The clock
  runs in the load generator from the first request to the last response, so every message is
  parsed, signature-verified (RSA, certificate cached after the warm-up), parsed as SES JSON,
  deduplicated and committed (group commit) before it is counted: the service answers 200 only
  after the commit. Every answer must be 200 with ``"result": "recorded"``.
* **baseline**: a bare quart-trio app with one POST route that reads the body and returns
  ``{"status": "ok"}``, served by hypercorn on trio in its own process, posted the very same
  bodies by the same load generator. It is the floor of what this HTTP stack costs per request on
  this machine; the ratio sesender / baseline says how much verification and storage cost on top.

Both servers and the load generator share the machine's cores. Each timed run starts with a
warm-up (``--warmup`` messages, not timed: connections opened and, for sesender, the one
certificate download done).
The two are measured ``--repeats`` times, interleaved, each sesender repeat with fresh
``MessageId`` values (a replay would only measure deduplication); the headline is the best
of each (noise on a shared machine only ever slows a run down). Aim: ratio >= 0.5.

    python -m bench.webhook                        # 5,000 messages, concurrency 32, 3 repeats
    python -m bench.webhook --messages 20000 --repeats 5
    python -m bench.webhook --quick                # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO_DIR, add_output_arguments, format_table, verdict, write_result
from tests.fixtures import SNS_DIR, TEST_SIGNING_CERT, TEST_SIGNING_KEY

NAME = "webhook"
AIM = 0.5
CERT_PATH = "/SimpleNotificationService-bench.pem"
TOPIC = "bench_webhook"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"
RESULTS_PATH = "/v1/events/results"
SIDES = ("sesender", "baseline")
STARTUP_TIMEOUT = 60.0
#: (SES event kind, fixture) in the proportions posted.
MIX = (
    ("delivery", "delivery"),
    ("delivery", "event_delivery"),
    ("bounce", "bounce"),
    ("complaint", "event_complaint"),
)


_STARTED = time.monotonic()


def progress(step: str) -> None:
    """A progress line on stderr, with the seconds since the run started."""
    print(f"[{time.monotonic() - _STARTED:7.2f}s] {step}", file=sys.stderr, flush=True)


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the certificate server ------------------------------------------------------------------


class _CertificateHandler(BaseHTTPRequestHandler):
    pem = b""

    def do_GET(self) -> None:
        found = self.path == CERT_PATH
        body = self.pem if found else b"not found"
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextmanager
def certificate_server() -> Iterator[str]:
    """Serve the test certificate on 127.0.0.1; yields its URL."""
    handler = type(
        "Handler",
        (_CertificateHandler,),
        {"pem": TEST_SIGNING_CERT.read_bytes()},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{CERT_PATH}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- signing ---------------------------------------------------------------------------------


def ses_message(fixture: str, kind: str, ses_message_id: str, recipient: str) -> tuple[str, Any]:
    """The fixture's SES event about ``recipient`` / ``ses_message_id``; (Message, Subject)."""
    envelope = json.loads((SNS_DIR / f"{fixture}.json").read_text("utf-8"))
    event = json.loads(envelope["Message"])
    now = iso_now()
    event["mail"].update(messageId=ses_message_id, destination=[recipient], timestamp=now)
    detail = event[kind]
    detail["timestamp"] = now
    if kind == "bounce":
        for item in detail["bouncedRecipients"]:
            item["emailAddress"] = recipient
    elif kind == "complaint":
        for item in detail["complainedRecipients"]:
            item["emailAddress"] = recipient
    else:
        detail["recipients"] = [recipient]
    return json.dumps(event), envelope.get("Subject")


def sign_bodies(cert_url: str, sent: Sequence[tuple[str, str]], count: int) -> list[bytes]:
    """``count`` signed Notifications, each with its own MessageId, over the sent emails."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from sesender.feedback.testing import SnsMessageSigner

    key = serialization.load_pem_private_key(TEST_SIGNING_KEY.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = SnsMessageSigner(key, cert_url=cert_url)
    templates = [
        ses_message(fixture, kind, ses_id, email) for email, ses_id in sent for kind, fixture in MIX
    ]
    bodies = []
    for index in range(count):
        message, subject = templates[index % len(templates)]
        bodies.append(
            signer.notification(
                Message=message,
                Subject=subject,
                MessageId=str(uuid.uuid4()),
                Timestamp=iso_now(),
                TopicArn=TOPIC_ARN,
            )
        )
    return bodies


# --- processes -------------------------------------------------------------------------------


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("sesender")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sesender"]


class Process:
    """A child process whose stdout lines are read on a thread (so pipes never fill up)."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            command,
            cwd=REPO_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def wait_for_json(self, key: str, value: Any = None) -> dict[str, Any]:
        """The first JSON line with ``key`` (equal to ``value`` when given)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            with self._lock:
                lines = list(self.lines)
            for line in lines:
                try:
                    document = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if (
                    isinstance(document, dict)
                    and key in document
                    and (value is None or document[key] == value)
                ):
                    return document
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{self.process.args!r} did not start:\n" + "\n".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def running(command: list[str], env: dict[str, str] | None = None) -> Iterator[Process]:
    process = Process(command, env)
    try:
        yield process
    finally:
        process.stop()


def service_command(directory: Path, cert_url: str) -> tuple[list[str], dict[str, str]]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "SENTRY_", "SES_", "SNS_"))
    }
    env.update(
        SERVER_HOST="127.0.0.1",
        SERVER_PORT="0",
        API_KEY="bench",
        DATABASE_PATH=str(directory / "sesender.db"),
        SENDER_BACKEND="memory",
        MAX_SEND_PER_SECOND="1000",
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        SNS_CERT_URL_PATTERN=r"http://127\.0\.0\.1:\d+/.*",
        SCHEDULER_INTERVAL_SECONDS="1",
    )
    return console_script(), env


def send_emails(url: str, count: int) -> list[tuple[str, str]]:
    """Submit ``count`` emails, wait until they are sent; (email, SES message id) of each."""
    emails = [f"bench{index}@example.org" for index in range(count)]
    with httpx.Client(base_url=url, headers={"X-API-KEY": "bench"}, timeout=30) as client:
        response = client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"topic_id": TOPIC, "emails": emails, "subject": "s", "content": "<p>c</p>"}
                ]
            },
        )
        response.raise_for_status()
        first = response.json()["first_request_id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/topics/{TOPIC}").json()["request_counts"].get("Sent", 0) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's emails were not sent in time")
            time.sleep(0.05)
        details = [client.get(f"/v1/messages/{first + n}").json() for n in range(count)]
    return [(detail["email"], detail["message_id"]) for detail in details]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    url: str, bodies_file: Path, concurrency: int, warmup: int, server_pid: int
) -> dict[str, Any]:
    """Run the load generator process against ``url``; its JSON report (the first ``warmup``
    bodies are posted first and not timed; ``server_pid``'s CPU time is read around the timed
    part)."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.webhook",
            "--load-generator",
            url,
            str(bodies_file),
            str(concurrency),
            str(warmup),
            str(server_pid),
        ],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{completed.stdout}\n{completed.stderr}")
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def write_bodies(path: Path, bodies: Sequence[bytes]) -> Path:
    path.write_text(
        "".join(base64.b64encode(body).decode("ascii") + "\n" for body in bodies), "ascii"
    )
    return path


# --- the load generator and the baseline server (child processes) ------------------------------


def run_load_generator(
    url: str, bodies_file: Path, concurrency: int, warmup: int, server_pid: int
) -> None:
    """Post every body in ``bodies_file`` to ``url``, ``concurrency`` at a time; print a report.

    The first ``warmup`` bodies go first, untimed and uncounted (connections opened, the
    service's certificate cache filled); the clock runs over the rest. The report includes the
    CPU time this process and the server process spent over the timed part, per message: when
    the client's share is large, the client (not the server) limits both rates and the ratio of
    rates understates the difference; the ratio of server CPU per message does not.
    """
    import trio

    everything = [base64.b64decode(line) for line in bodies_file.read_text("ascii").split()]
    warmup_bodies, bodies = everything[:warmup], everything[warmup:]
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": "Notification",
    }
    statuses: dict[str, int] = {}
    results: dict[str, int] = {}

    async def main() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def warm(body: bytes) -> None:
                (await client.post(url, content=body, headers=headers)).raise_for_status()

            async with trio.open_nursery() as nursery:
                for body in warmup_bodies:
                    nursery.start_soon(warm, body)
            iterator = iter(bodies)

            async def worker() -> None:
                for body in iterator:
                    response = await client.post(url, content=body, headers=headers)
                    statuses[str(response.status_code)] = (
                        statuses.get(str(response.status_code), 0) + 1
                    )
                    try:
                        result = str(response.json().get("result", "-"))
                    except ValueError:
                        result = "not json"
                    results[result] = results.get(result, 0) + 1

            cpu["server"] = process_cpu_seconds(server_pid)
            cpu["client"] = time.process_time()
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            seconds = time.perf_counter() - started
            cpu["server"] = process_cpu_seconds(server_pid) - cpu["server"]
            cpu["client"] = time.process_time() - cpu["client"]
            return seconds

    cpu: dict[str, float] = {}
    seconds = trio.run(main)
    count = max(1, len(bodies))
    print(
        json.dumps(
            {
                "messages": len(bodies),
                "seconds": seconds,
                "rate": len(bodies) / seconds if seconds else 0.0,
                "server_cpu_ms_per_message": 1000 * cpu["server"] / count,
                "client_cpu_ms_per_message": 1000 * cpu["client"] / count,
                "statuses": statuses,
                "results": results,
            }
        ),
        flush=True,
    )


def baseline_app() -> Any:
    """The bare app: one POST route that reads the body and answers ``{"status": "ok"}``."""
    from quart import request
    from quart_trio import QuartTrio

    app = QuartTrio("baseline")

    @app.post(RESULTS_PATH)
    async def results() -> dict[str, str]:
        await request.get_data()
        return {"status": "ok"}

    return app


def serve_baseline() -> None:
    """Serve :func:`baseline_app` with hypercorn on trio on a free port; print the URL."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(baseline_app(), config, task_status=task_status)
            )
            print(json.dumps({"baseline_url": binds[0]}), flush=True)

    trio.run(main)


# --- the run ---------------------------------------------------------------------------------


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    try:
        with certificate_server() as cert_url:
            command, env = service_command(directory, cert_url)
            with (
                running(command, env) as service,
                running([sys.executable, "-m", "bench.webhook", "--serve-baseline"]) as bare,
            ):
                service_url = service.wait_for_json("event", "listening")["urls"][0]
                baseline_url = bare.wait_for_json("baseline_url")["baseline_url"]
                progress(f"sesender at {service_url}, baseline at {baseline_url}")
                sent = send_emails(service_url, arguments.emails)
                progress(f"{len(sent)} emails sent")
                per_run = arguments.messages
                total = (arguments.warmup + per_run) * arguments.repeats
                signing_started = time.perf_counter()
                bodies = sign_bodies(cert_url, sent, total)
                signing_seconds = time.perf_counter() - signing_started
                progress(f"{total:,} notifications signed in {signing_seconds:.1f}s")
                runs: list[dict[str, Any]] = []
                for repeat in range(arguments.repeats):
                    start = repeat * (arguments.warmup + per_run)
                    bodies_file = write_bodies(
                        directory / f"run{repeat}.b64",
                        bodies[start : start + arguments.warmup + per_run],
                    )
                    order = (
                        ("sesender", "baseline") if repeat % 2 == 0 else ("baseline", "sesender")
                    )
                    pair: dict[str, Any] = {}
                    for side in order:
                        url, pid = (
                            (service_url, service.process.pid)
                            if side == "sesender"
                            else (baseline_url, bare.process.pid)
                        )
                        pair[side] = load(
                            url + RESULTS_PATH,
                            bodies_file,
                            arguments.concurrency,
                            arguments.warmup,
                            pid,
                        )
                        progress(f"repeat {repeat + 1} {side}: {pair[side]['rate']:,.0f}/s")
                    check(pair, per_run)
                    pair["ratio"] = pair["sesender"]["rate"] / pair["baseline"]["rate"]
                    pair["cpu_ratio"] = (
                        pair["baseline"]["server_cpu_ms_per_message"]
                        / pair["sesender"]["server_cpu_ms_per_message"]
                        if pair["sesender"]["server_cpu_ms_per_message"]
                        else float("nan")
                    )
                    runs.append(pair)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    best_service = max(pair["sesender"]["rate"] for pair in runs)
    best_baseline = max(pair["baseline"]["rate"] for pair in runs)
    ratio = best_service / best_baseline
    service_cpu = min(pair["sesender"]["server_cpu_ms_per_message"] for pair in runs)
    baseline_cpu = min(pair["baseline"]["server_cpu_ms_per_message"] for pair in runs)
    return {
        "messages_per_run": arguments.messages,
        "emails": arguments.emails,
        "concurrency": arguments.concurrency,
        "warmup": arguments.warmup,
        "signing_seconds": signing_seconds,
        "runs": runs,
        "sesender_rate_best": best_service,
        "baseline_rate_best": best_baseline,
        "ratio": ratio,
        "sesender_server_cpu_ms_per_message_best": service_cpu,
        "baseline_server_cpu_ms_per_message_best": baseline_cpu,
        "cpu_ratio": baseline_cpu / service_cpu if service_cpu else float("nan"),
        "client_cpu_ms_per_message_median": statistics.median(
            pair[side]["client_cpu_ms_per_message"] for pair in runs for side in SIDES
        ),
        "load_average_after": os.getloadavg(),
        "aim": AIM,
        "passed": ratio >= AIM,
    }


def check(pair: dict[str, Any], expected: int) -> None:
    """Every message answered 200; sesender recorded each one (none duplicate or unknown)."""
    for side in SIDES:
        report = pair[side]
        if report["messages"] != expected or report["statuses"] != {"200": expected}:
            raise RuntimeError(f"{side} did not answer every message with 200: {report}")
    if pair["sesender"]["results"] != {"recorded": expected}:
        raise RuntimeError(f"sesender did not record every message: {pair['sesender']}")


def report(figures: dict[str, Any]) -> str:
    rows: list[tuple[object, ...]] = [
        (
            index + 1,
            pair["sesender"]["rate"],
            pair["baseline"]["rate"],
            pair["ratio"],
            pair["sesender"]["server_cpu_ms_per_message"],
            pair["baseline"]["server_cpu_ms_per_message"],
            pair["cpu_ratio"],
        )
        for index, pair in enumerate(figures["runs"])
    ]
    rows.append(
        (
            "best",
            figures["sesender_rate_best"],
            figures["baseline_rate_best"],
            figures["ratio"],
            figures["sesender_server_cpu_ms_per_message_best"],
            figures["baseline_server_cpu_ms_per_message_best"],
            figures["cpu_ratio"],
        )
    )
    table = format_table(
        (
            "repeat",
            "sesender (msg/s)",
            "bare hypercorn + quart-trio (req/s)",
            "ratio",
            "sesender CPU ms/msg",
            "bare CPU ms/req",
            "CPU ratio",
        ),
        rows,
    )
    load = ", ".join(f"{value:.1f}" for value in figures["load_average_after"])
    summary = (
        f"{figures['messages_per_run']:,} signed SNS notifications per run, concurrency"
        f" {figures['concurrency']}, over {figures['emails']} sent emails; the load generator"
        f" spent {figures['client_cpu_ms_per_message_median']:.2f} ms CPU per request (median);"
        f" load average after the run: {load}.\n"
        f"aim: ratio >= {AIM}: {verdict(figures['passed'])} ({figures['ratio']:.2f})"
    )
    return f"{table}\n\n{summary}"


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--messages", type=int, default=5_000, help="per timed run")
    parser.add_argument("--emails", type=int, default=10, help="sent emails the events are about")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.messages = 40
        arguments.emails = 2
        arguments.concurrency = 4
        arguments.warmup = 8
        arguments.repeats = 1
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--load-generator"]:
        run_load_generator(args[1], Path(args[2]), int(args[3]), int(args[4]), int(args[5]))
        return None
    if args[:1] == ["--serve-baseline"]:
        serve_baseline()
        return None
    arguments = parse_arguments(args)
    figures = run(arguments)
    print(report(figures))
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
