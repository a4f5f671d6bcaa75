"""Runs one benchmark of ``bench/`` in quick mode as its own process, for the smoke tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_quick(name: str, results_dir: Path, *options: str) -> tuple[str, dict[str, Any]]:
    """Run ``python -m bench.<name> --quick`` (and ``options``); return its stdout and its
    results file.

    Fails the test with the process's output unless it exits 0.
    """
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            f"bench.{name}",
            "--quick",
            *options,
            "--results-dir",
            str(results_dir),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result: dict[str, Any] = json.loads((results_dir / f"{name}.json").read_text("utf-8"))
    return completed.stdout, result
