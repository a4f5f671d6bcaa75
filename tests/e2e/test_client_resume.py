"""``sesender send`` run again resumes instead of mailing everyone twice, against the real service.

The CLI derives each request's Idempotency-Key from the topic, subject, HTML, schedule, recipients
and batch, so a second run with the same file is answered from the server's record (nothing stored
or sent again), ``--resend`` stores everything anew, and a run killed halfway (here: while a
request the server had already stored was waiting for its answer) is completed by a re-run with
each email sent exactly once. Emails are counted where they land: the outbox files.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    ServiceProcess,
    console_script,
    count_outbox,
    outbox_recipients,
    topic_counts,
    wait_for,
)
from tests.e2e.test_client_cli import client_env, connection, sesender

pytestmark = pytest.mark.e2e

TOPIC = "march-newsletter"
FORWARDED_HEADERS = ("Content-Type", "X-API-KEY", "Idempotency-Key")


def write_inputs(directory: Path, count: int) -> tuple[Path, Path]:
    html = directory / "march.html"
    html.write_text("<html><body><p>March news</p></body></html>", encoding="utf-8")
    listing = directory / "readers.txt"
    listing.write_text("".join(f"reader{i}@example.com\n" for i in range(count)), "utf-8")
    return html, listing


def send_args(html: Path, listing: Path, *extra: str) -> list[str]:
    return [
        "send",
        "--topic",
        TOPIC,
        "--subject",
        "March news",
        "--html",
        str(html),
        "--recipients",
        str(listing),
        "--batch-size",
        "100",
        "--interval",
        "0.2",
        *extra,
    ]


def stored(service: ServiceProcess) -> int:
    with service.client() as client:
        return sum(topic_counts(client, TOPIC).values())


def test_a_rerun_sends_nothing_twice_and_resend_sends_everything_again(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(MAX_SEND_PER_SECOND="1000")
    outbox = tmp_path / "outbox"
    html, listing = write_inputs(tmp_path, 300)
    argv = [*send_args(html, listing), *connection(service)]

    first = sesender(*argv, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "replayed" not in first.stdout
    wait_for(lambda: count_outbox(outbox) == 300, timeout=30, what="300 outbox files")

    again = sesender(*argv, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1] == (
        f"topic {TOPIC}: 3 of 3 requests had been accepted by an earlier run"
        " (replayed, not sent again); 0 newly accepted"
    )
    assert again.stdout.splitlines()[-1].startswith(f"topic {TOPIC}: 300 sent, 0 failed")
    assert stored(service) == 300
    recipients = outbox_recipients(outbox)
    assert len(recipients) == 300
    assert set(recipients.values()) == {1}

    resent = sesender(*argv, "--resend", cwd=tmp_path)
    assert resent.returncode == 0, resent.stderr
    assert "replayed" not in resent.stdout
    assert stored(service) == 600
    wait_for(lambda: count_outbox(outbox) == 600, timeout=30, what="600 outbox files")
    recipients = outbox_recipients(outbox)
    assert len(recipients) == 300
    assert set(recipients.values()) == {2}


class StallingProxy:
    """A loopback HTTP proxy in front of the service. It answers the first ``answered`` POSTs;
    later ones it still forwards (the service stores them) but never answers, so a client killed
    while waiting there never learned that its last request had been accepted."""

    def __init__(self, target: str, *, answered: int) -> None:
        self.target = target
        self.answered = answered
        self.forwarded = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    name: value
                    for name in FORWARDED_HEADERS
                    if (value := self.headers.get(name)) is not None
                }
                response = httpx.post(proxy.target + self.path, content=body, headers=headers)
                with proxy._lock:
                    proxy.forwarded += 1
                    stall = proxy.forwarded > proxy.answered
                if stall:
                    proxy.release.wait(timeout=60)
                    self.close_connection = True
                    return
                self.send_response(response.status_code)
                for name in ("Content-Type", "Idempotent-Replayed"):
                    if name in response.headers:
                        self.send_header(name, response.headers[name])
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads :attr:`StallingProxy.forwarded`."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def count(self) -> int:
        with self._lock:
            return self.forwarded


@contextmanager
def stalling_proxy(target: str, *, answered: int) -> Iterator[StallingProxy]:
    proxy = StallingProxy(target, answered=answered)
    thread = threading.Thread(target=proxy.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.release.set()
        proxy.server.shutdown()
        proxy.server.server_close()


def test_a_run_killed_halfway_is_completed_by_a_rerun_with_each_email_once(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(MAX_SEND_PER_SECOND="1000")
    outbox = tmp_path / "outbox"
    html, listing = write_inputs(tmp_path, 1000)
    with stalling_proxy(service.url, answered=4) as proxy:
        cli = subprocess.Popen(
            [
                *console_script(),
                *send_args(html, listing, "--no-follow"),
                "--url",
                proxy.url,
                "--api-key",
                service.api_key,
            ],
            cwd=tmp_path,
            env=client_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: proxy.count() >= 5, timeout=60, what="the fifth request")
            cli.send_signal(signal.SIGKILL)
        finally:
            cli.kill()
            cli.communicate(timeout=30)
        assert cli.returncode == -signal.SIGKILL
        assert proxy.count() == 5
    # The fifth batch was stored though its client never heard back; nothing after it was sent.
    assert stored(service) == 500

    rerun = sesender(*send_args(html, listing), *connection(service), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    lines = rerun.stdout.splitlines()
    assert lines[0] == (
        f"topic {TOPIC}: submitted 1000 recipients in 10 requests:"
        " 1000 accepted, 0 rejected, 0 duplicates"
    )
    assert lines[1] == (
        f"topic {TOPIC}: 5 of 10 requests had been accepted by an earlier run"
        " (replayed, not sent again); 5 newly accepted"
    )
    assert lines[-1].startswith(f"topic {TOPIC}: 1000 sent, 0 failed")
    assert stored(service) == 1000
    wait_for(lambda: count_outbox(outbox) >= 1000, timeout=30, what="1000 outbox files")
    recipients = outbox_recipients(outbox)
    assert len(recipients) == 1000
    assert set(recipients.values()) == {1}
