"""``sesender reset-api-key`` as a process: a new key, stored as its digest and printed once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from sesender.config import api_key_sha256
from sesender.store.service_secrets import API_KEY_SHA256
from tests.e2e.harness import console_script

pytestmark = pytest.mark.e2e


def reset(workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "DATABASE_PATH"}}
    environment.update(env)
    return subprocess.run(
        [*console_script(), "reset-api-key"],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stored_digest(path: Path) -> bytes | None:
    connection = sqlite3.connect(path)
    try:
        row = connection.execute(
            "SELECT value FROM service_secrets WHERE name = ?", (API_KEY_SHA256,)
        ).fetchone()
    finally:
        connection.close()
    return None if row is None else bytes(row[0])


def test_it_stores_the_digest_of_the_key_it_prints(tmp_path: Path) -> None:
    database = tmp_path / "keys.db"
    keys = []
    for _ in range(2):
        result = reset(tmp_path, DATABASE_PATH=str(database))
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip().rsplit(" ", 1)[-1]
        assert stored_digest(database) == api_key_sha256(key)
        keys.append(key)
    assert keys[0] != keys[1]


def test_it_refuses_when_api_key_is_set(tmp_path: Path) -> None:
    result = reset(tmp_path, API_KEY="explicit", DATABASE_PATH=str(tmp_path / "keys.db"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "API_KEY is set" in result.stderr
    assert not (tmp_path / "keys.db").exists()
