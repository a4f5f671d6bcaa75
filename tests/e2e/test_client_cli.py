"""The client commands of the ``sesender`` script against the real service, as processes."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.harness import ServiceProcess, console_script, topic_counts

pytestmark = pytest.mark.e2e

RECIPIENTS = 2_500
INVALID = 5
#: A topic id that needs quoting in a URL path (and in a shell).
TOPIC = "news/2999 #1?"


def client_env() -> dict[str, str]:
    """The caller's environment without sesender settings, plus a server configuration that would
    not load: the client commands must not read it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("API_KEY", "SESENDER_URL") and not key.startswith(("AWS_", "SENTRY_"))
    }
    env.update({"SERVER_PORT": "99999", "MAX_SEND_PER_SECOND": "abc", "SENDER_BACKEND": "nope"})
    return env


def sesender(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*console_script(), *args],
        cwd=cwd,
        env=client_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def connection(service: ServiceProcess) -> list[str]:
    return ["--url", service.url, "--api-key", service.api_key]


def write_inputs(directory: Path) -> tuple[Path, Path]:
    html = directory / "mail.html"
    html.write_text("<html><body><h1>Héllo</h1></body></html>", encoding="utf-8")
    csv_file = directory / "list.csv"
    rows = ["Name,Email"]
    for index in range(RECIPIENTS):
        if index % (RECIPIENTS // INVALID) == 7:
            rows.append(f"Broken {index},broken-{index}.example.com")
        else:
            rows.append(f"User {index},user{index}@example.com")
    csv_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return html, csv_file


def test_send_submits_a_csv_in_one_request_and_follows_it_to_the_end(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(SENDER_BACKEND="memory", MAX_SEND_PER_SECOND="1000")
    html, csv_file = write_inputs(tmp_path)
    result = sesender(
        "send",
        *connection(service),
        "--topic",
        "cli-e2e",
        "--subject",
        "Hello",
        "--html",
        str(html),
        "--recipients",
        str(csv_file),
        "--interval",
        "0.2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "topic cli-e2e: submitted 2500 recipients in 1 request:"
        " 2495 accepted, 5 rejected, 0 duplicates"
    )
    assert sum(1 for line in lines if line.startswith("  broken-")) == INVALID
    assert lines[-1] == (
        "topic cli-e2e: 2495 sent, 0 failed, 0 stopped, 0 suppressed, 0 bounced, 0 complaints"
    )
    with service.client() as client:
        counts = topic_counts(client, "cli-e2e")
    assert counts["Sent"] == RECIPIENTS - INVALID
    assert counts["Created"] == counts["Processed"] == 0


def test_wrong_key_and_server_down_are_one_line_errors(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(SENDER_BACKEND="memory")
    html, csv_file = write_inputs(tmp_path)
    send = ["send", "--topic", "t", "--subject", "s", "--html", str(html)]
    wrong = sesender(
        *send,
        "--recipients",
        str(csv_file),
        "--url",
        service.url,
        "--api-key",
        "nope",
        cwd=tmp_path,
    )
    assert wrong.returncode == 1
    assert wrong.stderr == "sesender: the server refused the API key (Invalid API Key)\n"
    with service.client() as client:
        assert topic_counts(client, "t") == {}

    with socket.socket() as probe:  # a port nobody listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down_url = f"http://127.0.0.1:{port}"
    down = sesender("stats", "t", "--url", down_url, "--api-key", "k", cwd=tmp_path)
    assert down.returncode == 1
    assert down.stderr == f"sesender: cannot reach sesender at {down_url}: connection refused\n"
    assert "Traceback" not in down.stdout + down.stderr


def test_stats_cancel_retry_and_suppressions(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(SENDER_BACKEND="memory")
    html, _ = write_inputs(tmp_path)
    scheduled = sesender(
        "send",
        *connection(service),
        "--topic",
        TOPIC,
        "--subject",
        "Soon",
        "--html",
        str(html),
        "--to",
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "--at",
        "2999-01-01T09:00:00+00:00",
        cwd=tmp_path,
    )
    assert scheduled.returncode == 0, scheduled.stderr
    assert scheduled.stdout.splitlines()[-1] == (
        f"topic {TOPIC}: scheduled for 2999-01-01T09:00:00+00:00;"
        " follow it later with: sesender stats 'news/2999 #1?'"
    )

    stats = sesender("stats", TOPIC, *connection(service), cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert "Created" in stats.stdout
    assert stats.stdout.splitlines()[-1] == "total 3, pending 3"

    cancel = sesender("cancel", TOPIC, *connection(service), cwd=tmp_path)
    assert (cancel.returncode, cancel.stdout) == (0, f"topic {TOPIC}: stopped 3\n")
    raw = sesender("stats", TOPIC, "--json", *connection(service), cwd=tmp_path)
    assert '"Stopped": 3' in raw.stdout
    retry = sesender("retry", TOPIC, *connection(service), cwd=tmp_path)
    assert (retry.returncode, retry.stdout) == (0, f"topic {TOPIC}: requeued 0\n")

    suppressions = ["suppressions"]  # the connection options belong to each action
    add = sesender(
        *suppressions,
        "add",
        "Someone@Example.com",
        "--reason",
        "asked",
        *connection(service),
        cwd=tmp_path,
    )
    assert add.returncode == 0, add.stderr
    assert add.stdout == "suppressed someone@example.com (reason: asked)\n"
    listed = sesender(
        *suppressions, "list", "--email", "example", *connection(service), cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.split("\t")[:3] == ["someone@example.com", "asked", "api"]
    remove = sesender(
        *suppressions, "remove", "someone@example.com", *connection(service), cwd=tmp_path
    )
    assert remove.returncode == 0, remove.stderr
    empty = sesender(*suppressions, "list", *connection(service), cwd=tmp_path)
    assert (empty.returncode, empty.stdout) == (0, "")
    again = sesender(
        *suppressions, "remove", "someone@example.com", *connection(service), cwd=tmp_path
    )
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "is not suppressed (HTTP 404)" in again.stderr
