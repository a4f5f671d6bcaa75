"""The real process: starts on a free port, answers /health and /ready, stops cleanly."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sesender.store.schema import LATEST_VERSION
from tests.e2e.harness import ServiceProcess, base_env, console_script, wait_for


def test_health_ready_and_sigterm_exit_zero(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_service()
    with service.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ok"
        assert body["database"] == "ok"
        assert body["db"] == "connected"
        assert body["backend"] == "outbox"
        assert body["sending"] == "active"
        assert set(body["actors"]) >= {"scheduler", "rate-limiter", "sender-pool", "post-processor"}
        assert client.get("/no-such-route").json() == {"error": "Not found"}
    started = time.monotonic()
    assert service.stop(timeout=5) == 0
    assert time.monotonic() - started < 5
    assert service.find("drained") is not None


def test_invalid_configuration_exits_2_naming_every_problem(tmp_path: Path) -> None:
    env = base_env(tmp_path, MAX_SEND_PER_SECOND="abc", SERVER_PORT="99999")
    result = subprocess.run(
        console_script(),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "MAX_SEND_PER_SECOND='abc' is not a number" in result.stderr
    assert "SERVER_PORT='99999' must be between 0 and 65535" in result.stderr
    assert result.stderr.count("\n  - ") == 2


def test_python_dash_m_and_init_db(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "sesender", "init-db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sesender.db").exists()
    assert f'"applied": {list(range(1, LATEST_VERSION + 1))}' in result.stderr
    again = subprocess.run(
        [sys.executable, "-m", "sesender", "init-db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert '"applied": []' in again.stderr


@pytest.mark.parametrize("backend", ["outbox", "memory"])
def test_outbox_quick_start_generates_a_key(
    start_service: Callable[..., ServiceProcess], backend: str
) -> None:
    service = start_service(API_KEY="", SENDER_BACKEND=backend)
    line = wait_for(
        lambda: next((x for x in service.stdout_lines if "generated an API key" in x), None),
        timeout=10,
        what="the generated key on stdout",
    )
    generated_key = line.rsplit(" ", 1)[-1]
    service.env["API_KEY"] = generated_key
    with service.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/v1/topics/x", headers={"X-API-KEY": "wrong"}).status_code == 401
    assert service.stop() == 0
