"""Starts the real service as a process on a free loopback port, for black-box tests.

The process is the console script (``sesender``) with ``LOG_FORMAT=json``; the harness reads its
stderr on a thread, learns the bound URL from the ``listening`` log line, and keeps every line for
assertions. Waiting is always "poll a condition with a deadline", never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx

# Re-exported: the end-to-end tests import it from here with the rest of the harness.
from tests.waiting import wait_for as wait_for

STARTUP_TIMEOUT = 30.0


def console_script() -> list[str]:
    """The installed ``sesender`` script next to this interpreter (falls back to -m)."""
    script = Path(sys.executable).with_name("sesender")
    if script.exists():
        return [str(script)]
    found = shutil.which("sesender")
    return [found] if found else [sys.executable, "-m", "sesender"]


class ServiceProcess:
    """One running ``sesender`` process."""

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.lines: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    @property
    def api_key(self) -> str:
        return self.env["API_KEY"]

    def start(self, *, wait: bool = True) -> ServiceProcess:
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "SENTRY_", "SES_", "SNS_"))
        }
        environment.update(self.env)
        self.process = subprocess.Popen(
            console_script(),
            cwd=self.workdir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        if wait:
            # The listening line, or True if the process exited before writing it.
            event = wait_for(
                lambda: self.find("listening") or self._exited_early(),
                timeout=STARTUP_TIMEOUT,
                what="the listening log line",
            )
            if not isinstance(event, dict):
                self.process.wait(timeout=10)
                self._close_pipes()
                raise AssertionError(
                    f"sesender exited with {self.process.returncode}:\n" + "\n".join(self.raw_lines)
                )
            self.url = event["urls"][0].replace("0.0.0.0", "127.0.0.1")
        return self

    def _exited_early(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def _read_stderr(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.raw_lines.append(line.rstrip("\n"))
                with contextlib.suppress(json.JSONDecodeError):
                    self.lines.append(json.loads(line))

    def _read_stdout(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.stdout_lines.append(line.rstrip("\n"))

    def find(self, event: str) -> dict[str, Any] | None:
        with self._lock:
            for line in self.lines:
                if line.get("event") == event:
                    return line
        return None

    def events(self, event: str) -> list[dict[str, Any]]:
        """Every JSON log line of this process whose ``event`` is ``event``, in order."""
        with self._lock:
            return [line for line in self.lines if line.get("event") == event]

    def report(self, lines: int = 60) -> str:
        """Whether the process still runs (or how it ended) and the last ``lines`` of its log."""
        if self.process is None:
            return "sesender: never started"
        code = self.process.poll()
        state = "still running" if code is None else f"exited with {code}"
        with self._lock:
            tail = self.raw_lines[-lines:]
        return f"sesender at {self.url or '(no URL)'}: {state}; last log lines:\n" + "\n".join(tail)

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"X-API-KEY": self.env.get("API_KEY", "")}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def signal(self, number: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        self._close_pipes()
        return code

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        """Let the readers reach end of file, then close the pipes (no ResourceWarning)."""
        assert self.process is not None
        for reader in self._readers:
            reader.join(timeout=10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)


def base_env(workdir: Path, **overrides: str) -> dict[str, str]:
    env = {
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": "0",
        "API_KEY": "test-key",
        "DATABASE_PATH": str(workdir / "sesender.db"),
        "OUTBOX_DIR": str(workdir / "outbox"),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "SCHEDULER_INTERVAL_SECONDS": "1",
    }
    env.update(overrides)
    return env


# -- API helpers ---------------------------------------------------------------------------------


def submit(
    client: httpx.Client,
    *,
    topic: str,
    emails: Iterable[str],
    subject: str = "Hello",
    content: str = "<html><body><p>Hello!</p></body></html>",
) -> range:
    """POST one message to ``emails``; every address must be accepted. Returns the request ids.

    The store inserts one message's recipients in one transaction with consecutive ids, starting
    at the response's ``first_request_id``.
    """
    recipients = list(emails)
    response = client.post(
        "/v1/messages",
        json={
            "messages": [
                {"topic_id": topic, "emails": recipients, "subject": subject, "content": content}
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] == len(recipients), body
    assert body["errors"] == 0, body
    first = body["first_request_id"]
    return range(first, first + len(recipients))


def topic_counts(client: httpx.Client, topic: str) -> dict[str, int]:
    response = client.get(f"/v1/topics/{topic}")
    assert response.status_code == 200, response.text
    counts: dict[str, int] = response.json()["request_counts"]
    return counts


def wait_topic(
    client: httpx.Client,
    topic: str,
    *,
    timeout: float,
    status: str = "Sent",
    count: int,
    interval: float = 0.1,
) -> dict[str, int]:
    """Poll the topic's statistics until ``count`` of its emails have ``status``."""
    last: dict[str, int] = {}

    def reached() -> bool:
        nonlocal last
        last = topic_counts(client, topic)
        return last.get(status, 0) >= count

    try:
        wait_for(reached, timeout=timeout, interval=interval, what=f"{count} {status} in {topic}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last counts {last}") from None
    return last


def message_details(client: httpx.Client, request_ids: Iterable[int]) -> list[dict[str, Any]]:
    """``GET /v1/messages/{id}`` for each id (all must exist)."""
    details = []
    for request_id in request_ids:
        response = client.get(f"/v1/messages/{request_id}")
        assert response.status_code == 200, response.text
        details.append(response.json())
    return details


# -- outbox ----------------------------------------------------------------------------------------


def outbox_files(directory: Path) -> list[Path]:
    """The finished ``.eml`` files (the backend's temporary files are dot-files)."""
    if not directory.exists():
        return []
    return [path for path in directory.iterdir() if path.suffix == ".eml" and path.name[0] != "."]


def count_outbox(directory: Path) -> int:
    return len(outbox_files(directory))


def outbox_headers(directory: Path) -> list[Any]:
    """The parsed headers of every ``.eml`` file in ``directory``."""
    parser = BytesHeaderParser(policy=default_policy)
    headers = []
    for path in outbox_files(directory):
        with path.open("rb") as file:
            headers.append(parser.parse(file))
    return headers


def outbox_recipients(directory: Path) -> Counter[str]:
    """How many files each recipient (the ``To:`` header) got."""
    return Counter(str(message["To"]) for message in outbox_headers(directory))
