"""Soak: does anything get lost, duplicated or leaked over a long, busy, hostile run?

What runs, all on loopback, each in its own process:

* a hostile fake SES (``bench.soak_fake_ses``): 10% of sends throttled with 429, 5-50 ms of random
  latency per call, and an exact count of how many times each recipient was accepted;
* the real service (``sesender`` console script) with the ``ses`` backend pointed at it, at
  ``--rate`` (500/s), ``SES_SEND_MODE=--send-mode`` (bulk), the SNS certificate served from a
  loopback server;
* this driver, which submits ``--emails`` (200,000) over several topics through the HTTP API and,
  while they are sent: opens pixels of sent emails, posts test-signed SNS delivery events for
  sent emails (the webhook), cancels one topic midway, asks for a retry of failed emails at the
  end, and times API calls (topic statistics, pixel) all along; it samples the service's RSS
  every second.

It reports the service's CPU time per 1,000 emails (its SES client process included), the share of
the window its event-loop thread waited for a CPU (the load), recipients per SES call, every email
in a terminal state (Created + Processed == 0 and per-topic counts add up to what was accepted),
duplicate sends (fake SES accepted a recipient more than once; expected 0 without crashes), the
achieved send rate (emails Sent over the window from the first submission until nothing is pending;
it passes at ``--min-rate``, by default 0.9 x the target), RSS and anonymous RSS over time (first vs
last quarter: bounded pipes mean a flat heap; RSS itself also grows with the SQLite file SQLite
maps), and p50/p99 latency of the API calls. Topics' batches alternate, so the cancel at 30% stops a
topic that is partly sent; ``MAX_ATTEMPTS=3`` lets about 0.1% of emails fail on throttling, which
the retry at the end requeues.

``--short`` is a one-minute version (20,000 emails). Not run by CI.

    python -m bench.soak            # 200,000 emails at 500/s, SES_SEND_MODE=bulk
    python -m bench.soak --rate 3000 --min-rate 2000   # the bulk engine's aim (issue 13)
    python -m bench.soak --short    # 20,000 emails: about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.ceiling import process_tree_cpu_seconds
from bench.common import (
    REPO_DIR,
    RESULTS_DIR,
    format_table,
    machine_info,
    verdict,
    write_result,
)
from bench.idle import event_loop_counters
from sesender.feedback.testing import SnsMessageSigner
from sesender.tracking import TokenSigner, derive_secret
from tests.fixtures import TEST_SIGNING_CERT, TEST_SIGNING_KEY

API_KEY = "soak-key"
TOPICS = ("soak-news", "soak-promo", "soak-digest", "soak-cancelled")


def start_process(arguments: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        arguments, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def serve_certificate() -> tuple[ThreadingHTTPServer, str]:
    pem = TEST_SIGNING_CERT.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(pem)))
            self.end_headers()
            self.wfile.write(pem)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/SimpleNotificationService-soak.pem"


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(RSS, anonymous RSS) in MB. RSS also counts the pages of the database file that SQLite
    maps (``mmap_size``) and so grows with the file; the anonymous part is the heap: a leak or an
    unbounded queue shows there."""
    values: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssAnon"):
                values[name] = int(rest.split()[0]) / 1024
    except OSError:
        return None
    if len(values) != 2:
        return None
    return values["VmRSS"], values["RssAnon"]


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rates_by_quarter(progress: Sequence[tuple[float, int]]) -> list[float]:
    """Sends per second in each quarter of the sending window (does the rate hold over time?)."""
    if len(progress) < 5:
        return []
    end = progress[-1][0]
    rates = []
    for index in range(4):
        low, high = end * index / 4, end * (index + 1) / 4
        inside = [(t, sent) for t, sent in progress if low <= t <= high]
        if len(inside) < 2:
            return []
        (t0, s0), (t1, s1) = inside[0], inside[-1]
        rates.append((s1 - s0) / (t1 - t0) if t1 > t0 else 0.0)
    return rates


def delivery_event(ses_message_id: str, recipient: str) -> str:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {
            "eventType": "Delivery",
            "mail": {"timestamp": now, "messageId": ses_message_id, "destination": [recipient]},
            "delivery": {
                "timestamp": now,
                "recipients": [recipient],
                "processingTimeMillis": 10,
                "smtpResponse": "250 ok",
            },
        }
    )


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sesender-soak-"))
    fake = start_process(
        [
            sys.executable,
            "-m",
            "bench.soak_fake_ses",
            "--throttle",
            str(arguments.throttle),
            "--entry-throttle",
            str(arguments.entry_throttle),
        ]
    )
    assert fake.stdout is not None
    fake_port = int(fake.stdout.readline().split()[1])
    cert_server, cert_url = serve_certificate()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "SNS_", "SES_"))
    }
    env.update(
        {
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": "0",
            "API_KEY": API_KEY,
            "DATABASE_PATH": str(workdir / "soak.db"),
            "SENDER_BACKEND": "ses",
            "SES_SEND_MODE": arguments.send_mode,
            "AWS_ENDPOINT_URL_SESV2": f"http://127.0.0.1:{fake_port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_SES_FROM_EMAIL": "soak@example.com",
            "SERVER_URL": "https://soak.example.test",
            "MAX_SEND_PER_SECOND": str(arguments.rate),
            # 3 attempts with 10% throttling: about 0.1% of emails fail, for the retry to requeue.
            "MAX_ATTEMPTS": "3",
            "RETRY_BASE_SECONDS": "0.5",
            "RETRY_MAX_SECONDS": "5",
            "SNS_CERT_URL_PATTERN": r"http://127\.0\.0\.1:\d+/.*\.pem",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
        }
    )
    service = start_process([str(Path(sys.executable).with_name("sesender"))], env)
    assert service.stderr is not None
    url = ""
    while not url:
        line = service.stderr.readline()
        if not line:
            raise SystemExit("the service did not start")
        if '"listening"' in line or "listening on" in line:
            url = json.loads(line)["urls"][0] if line.startswith("{") else ""
    stderr_lines: list[str] = []
    threading.Thread(target=lambda: stderr_lines.extend(service.stderr or []), daemon=True).start()
    key = serialization.load_pem_private_key(TEST_SIGNING_KEY.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    signer = SnsMessageSigner(key, cert_url=cert_url)
    pixel_signer = TokenSigner(derive_secret(API_KEY))
    rng = random.Random(11)

    rss: list[tuple[float, float, float]] = []  # (seconds, RSS, anonymous RSS)
    latencies: dict[str, list[float]] = {"topic_stats": [], "pixel": [], "webhook": []}
    stop = threading.Event()

    def sample_rss() -> None:
        started = time.monotonic()
        while not stop.is_set():
            value = memory_mb(service.pid)
            if value is not None:
                rss.append((time.monotonic() - started, *value))
            stop.wait(1.0)

    threading.Thread(target=sample_rss, daemon=True).start()
    client = httpx.Client(base_url=url, headers={"X-API-KEY": API_KEY}, timeout=60)
    accepted: dict[str, int] = dict.fromkeys(TOPICS, 0)
    cpu_start = process_tree_cpu_seconds(service.pid)
    waiting_start = event_loop_counters(service.pid)[2]
    load_start = os.getloadavg()
    ranges: list[tuple[int, int]] = []
    started = time.monotonic()
    per_topic = arguments.emails // len(TOPICS)
    batch = max(1, min(10_000, per_topic // 5))  # at least 5 rounds of batches
    # Batches of the topics alternate, so the topic cancelled at 30% is partly sent by then.
    for start in range(0, per_topic, batch):
        for topic_index, topic in enumerate(TOPICS):
            count = min(batch, per_topic - start)
            emails = [f"u{topic_index}-{start + i}@example.com" for i in range(count)]
            body = {
                "messages": [
                    {
                        "topic_id": topic,
                        "emails": emails,
                        "subject": "Soak",
                        "content": "<html><body><p>soak</p></body></html>",
                    }
                ]
            }
            response = client.post("/v1/messages", json=body)
            response.raise_for_status()
            result = response.json()
            accepted[topic] += result["success"]
            first = result.get("first_request_id")
            if first:
                ranges.append((first, first + result["success"] - 1))
    submitted_at = time.monotonic()
    progress: list[tuple[float, int]] = []  # (seconds since the submissions, Sent so far)

    cancelled = False
    stopped = 0
    sns_posted = 0
    while True:
        # Measure the API while sending.
        begin = time.perf_counter()
        counts = {t: client.get(f"/v1/topics/{t}").json()["request_counts"] for t in TOPICS}
        latencies["topic_stats"].append((time.perf_counter() - begin) / len(TOPICS))
        sent_so_far = sum(c.get("Sent", 0) for c in counts.values())
        progress.append((time.monotonic() - submitted_at, sent_so_far))
        pending = sum(c.get("Created", 0) + c.get("Processed", 0) for c in counts.values())
        if not cancelled and sent_so_far > arguments.emails * 0.3:
            stopped = client.delete(f"/v1/topics/{TOPICS[-1]}").json()["stopped"]
            cancelled = True
        # Opens and SES delivery events for some sent emails.
        for _ in range(5):
            low, high = rng.choice(ranges)
            request_id = rng.randint(low, high)
            begin = time.perf_counter()
            client.get(
                "/v1/events/open", params={"request_id": pixel_signer.sign("open", request_id)}
            )
            latencies["pixel"].append(time.perf_counter() - begin)
            detail = client.get(f"/v1/messages/{request_id}").json()
            if detail.get("message_id"):
                envelope = signer.notification(
                    MessageId=f"soak-sns-{sns_posted}",
                    Message=delivery_event(detail["message_id"], detail["email"]),
                    Timestamp=datetime.now(UTC)
                    .isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                )
                begin = time.perf_counter()
                response = client.post(
                    "/v1/events/results",
                    content=envelope,
                    headers={
                        "x-amz-sns-message-type": "Notification",
                        "Content-Type": "text/plain; charset=UTF-8",
                    },
                )
                latencies["webhook"].append(time.perf_counter() - begin)
                response.raise_for_status()
                sns_posted += 1
        if cancelled and pending == 0:
            break
        if time.monotonic() - started > arguments.timeout:
            break
        time.sleep(0.5)
    finished_sending = time.monotonic()
    cpu_sending = process_tree_cpu_seconds(service.pid) - cpu_start
    waiting_sending = event_loop_counters(service.pid)[2] - waiting_start
    load_end = os.getloadavg()
    retried = {t: client.post(f"/v1/topics/{t}/retry").json()["requeued"] for t in TOPICS}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        counts = {t: client.get(f"/v1/topics/{t}").json() for t in TOPICS}
        if all(
            c["request_counts"].get("Created", 0) + c["request_counts"].get("Processed", 0) == 0
            for c in counts.values()
        ):
            break
        time.sleep(0.5)
    fake_stats = httpx.get(f"http://127.0.0.1:{fake_port}/_soak/stats").json()
    metrics = client.get("/metrics").text
    stop.set()
    client.close()
    service.terminate()
    exit_code = service.wait(timeout=60)
    fake.terminate()
    fake.wait(timeout=10)
    cert_server.shutdown()

    request_counts = {t: counts[t]["request_counts"] for t in TOPICS}
    terminal = {"Sent", "Failed", "Stopped", "Suppressed"}
    all_terminal = all(
        sum(v for k, v in c.items() if k in terminal) == accepted[t]
        and c.get("Created", 0) + c.get("Processed", 0) == 0
        for t, c in request_counts.items()
    )
    total_sent = sum(c.get("Sent", 0) for c in request_counts.values())
    # From the first submission: emails are sent while the later ones are still being posted.
    window = finished_sending - started
    quarter_rates = rates_by_quarter(progress)
    achieved = total_sent / window if window > 0 else 0.0
    quarter = max(1, len(rss) // 4)
    rss_first = statistics.mean(v for _, v, _ in rss[:quarter]) if rss else float("nan")
    rss_last = statistics.mean(v for _, v, _ in rss[-quarter:]) if rss else float("nan")
    anon_first = statistics.mean(a for _, _, a in rss[:quarter]) if rss else float("nan")
    anon_last = statistics.mean(a for _, _, a in rss[-quarter:]) if rss else float("nan")
    delivery_total = sum(c["result_counts"].get("Delivery", 0) for c in counts.values())
    attempts = re.search(r"^sesender_send_attempts_total (\S+)$", metrics, re.M)
    result = {
        "machine": machine_info(),
        "emails": arguments.emails,
        "rate_target": arguments.rate,
        "accepted": accepted,
        "request_counts": request_counts,
        "all_terminal": all_terminal,
        "duplicates": fake_stats["duplicates"],
        "fake_ses": fake_stats,
        "send_attempts": float(attempts.group(1)) if attempts else None,
        "stopped_by_cancel": stopped,
        "retried": retried,
        "sns_events_posted": sns_posted,
        "delivery_results": delivery_total,
        "achieved_rate": achieved,
        "rate_by_quarter": quarter_rates,
        "sending_window_s": window,
        "submitting_s": submitted_at - started,
        "service_cpu_seconds": cpu_sending,
        "service_cpu_seconds_per_1000_emails": 1000 * cpu_sending / max(1, total_sent),
        "event_loop_waiting_for_cpu_share": waiting_sending / window if window > 0 else 0.0,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "send_mode": arguments.send_mode,
        "recipients_per_ses_call": (fake_stats["send_email_calls"] + fake_stats["bulk_entries"])
        / max(1, fake_stats["send_email_calls"] + fake_stats["send_bulk_email_calls"]),
        "rss_mb_first_quarter": rss_first,
        "rss_mb_last_quarter": rss_last,
        "anon_mb_first_quarter": anon_first,
        "anon_mb_last_quarter": anon_last,
        "rss_samples": rss[:: max(1, len(rss) // 60)],
        "latency_ms": {
            name: {
                "p50": percentile(v, 0.5) * 1000,
                "p99": percentile(v, 0.99) * 1000,
                "count": len(v),
            }
            for name, v in latencies.items()
        },
        "exit_code": exit_code,
        "errors_logged": sum('"level": "error"' in line for line in stderr_lines),
    }
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emails", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument(
        "--min-rate",
        type=float,
        default=None,
        help="the achieved rate that passes (default 0.9 x --rate)",
    )
    parser.add_argument(
        "--send-mode", choices=("bulk", "single"), default="bulk", help="SES_SEND_MODE"
    )
    parser.add_argument("--throttle", type=float, default=0.1, help="share of calls answered 429")
    parser.add_argument(
        "--entry-throttle",
        type=float,
        default=0.0,
        help="share of bulk entries answered ACCOUNT_THROTTLED",
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--short", action="store_true", help="20,000 emails: about a minute")
    arguments = parser.parse_args(argv)
    if arguments.short:
        arguments.emails = 20_000
    min_rate = arguments.min_rate if arguments.min_rate is not None else 0.9 * arguments.rate
    result = run(arguments)
    rows = [
        ["every email terminal", result["all_terminal"], verdict(result["all_terminal"])],
        ["duplicate sends", result["duplicates"], verdict(result["duplicates"] == 0)],
        [
            "achieved rate (/s)",
            f"{result['achieved_rate']:.1f} (target {arguments.rate:g}, aim >= {min_rate:g})",
            verdict(result["achieved_rate"] >= min_rate),
        ],
        [
            "service CPU s per 1,000 emails (while sending)",
            f"{result['service_cpu_seconds_per_1000_emails']:.3f}",
            "",
        ],
        [
            "recipients per SES call (answered calls and entries)",
            f"{result['recipients_per_ses_call']:.1f}",
            "",
        ],
        [
            "service event loop waiting for a CPU (share of the window)",
            f"{result['event_loop_waiting_for_cpu_share']:.0%}",
            "",
        ],
        [
            "load average at start / end (1 min)",
            f"{result['load_average_start'][0]:.2f} / {result['load_average_end'][0]:.2f}",
            "",
        ],
        [
            "RSS first / last quarter (MB)",
            f"{result['rss_mb_first_quarter']:.1f} / {result['rss_mb_last_quarter']:.1f}",
            "",
        ],
        [
            "anonymous RSS first / last quarter (MB)",
            f"{result['anon_mb_first_quarter']:.1f} / {result['anon_mb_last_quarter']:.1f}",
            verdict(result["anon_mb_last_quarter"] <= 1.25 * result["anon_mb_first_quarter"]),
        ],
        ["p99 topic stats (ms)", f"{result['latency_ms']['topic_stats']['p99']:.1f}", ""],
        ["p99 pixel (ms)", f"{result['latency_ms']['pixel']['p99']:.1f}", ""],
        ["p99 webhook (ms)", f"{result['latency_ms']['webhook']['p99']:.1f}", ""],
        ["stopped by the cancel", result["stopped_by_cancel"], ""],
        ["requeued by retry", sum(result["retried"].values()), ""],
        [
            "SNS events posted / Delivery results",
            f"{result['sns_events_posted']} / {result['delivery_results']}",
            "",
        ],
        [
            "rate by quarter of the window (/s)",
            " / ".join(f"{rate:.0f}" for rate in result["rate_by_quarter"]) or "-",
            "",
        ],
        ["exit code after SIGTERM", result["exit_code"], verdict(result["exit_code"] == 0)],
    ]
    print(format_table(["measure", "value", "verdict"], rows))
    print(json.dumps(result["request_counts"], indent=1))
    write_result("soak-short" if arguments.short else "soak", RESULTS_DIR, arguments, result)


if __name__ == "__main__":
    main()
