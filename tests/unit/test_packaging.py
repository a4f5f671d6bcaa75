"""The Dockerfile's promises and ``scripts/serve``'s install-only-when-needed, checked without
Docker: the file is read as text, the serve script runs against a fake install in a temporary
directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.strip() for line in joined.splitlines() if line.strip() and line[0] != "#"]


def test_the_base_image_is_an_exact_python_release() -> None:
    (default,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", default)
    stages = [line for line in instructions() if line.startswith("FROM ")]
    assert [line.split()[1] for line in stages] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [line.split()[1] for line in instructions() if line.startswith("USER ")]
    assert len(users) == 1
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", users[0]), users[0]


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    steps = instructions()
    first_stage, second_stage = [i for i, step in enumerate(steps) if step.startswith("FROM ")]
    build = steps[first_stage:second_stage]
    copies = [i for i, step in enumerate(build) if step.startswith("COPY ")]
    assert build[copies[0]] == "COPY pyproject.toml ./"
    install_deps = next(i for i, step in enumerate(build) if "-r /tmp/requirements.txt" in step)
    first_source = next(i for i in copies if "sesender" in build[i])
    assert copies[0] < install_deps < first_source
    assert "--no-deps" in build[-1]


def test_the_dependency_step_reads_every_dependency_from_pyproject() -> None:
    (step,) = [line for line in instructions() if "import tomllib" in line]
    (program,) = re.findall(r'python -c "([^"]+)"', step)
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    expected = project["project"]["dependencies"] + project["build-system"]["requires"]
    assert result.stdout.splitlines() == expected


def fake_checkout(directory: Path) -> Path:
    """A checkout with the real scripts/serve, a pyproject.toml and an install that records
    each run and installs a ``sesender`` that only echoes its arguments."""
    (directory / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "serve", directory / "scripts" / "serve")
    (directory / "pyproject.toml").write_text('[project]\nname = "x"\n', encoding="utf-8")
    install = directory / "scripts" / "install"
    install.write_text(
        '#!/usr/bin/env bash\nset -e\ncd "$(dirname "$0")/.."\necho installed >> install.log\n'
        "mkdir -p .venv/bin\nprintf '#!/bin/sh\\necho \"ran $*\"\\n' > .venv/bin/sesender\n"
        "chmod +x .venv/bin/sesender\n",
        encoding="utf-8",
    )
    install.chmod(0o755)
    return directory / "scripts" / "serve"


def installs(directory: Path) -> int:
    log = directory / "install.log"
    return len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0


def test_serve_installs_only_when_pyproject_changed(tmp_path: Path) -> None:
    serve = fake_checkout(tmp_path)

    def run() -> str:
        env = {"PATH": os.environ["PATH"]}
        return subprocess.run(
            [str(serve), "--version"], capture_output=True, text=True, check=True, env=env
        ).stdout

    assert run() == "ran --version\n"
    assert installs(tmp_path) == 1
    assert run() == "ran --version\n"
    assert run() == "ran --version\n"
    assert installs(tmp_path) == 1  # nothing changed: straight to the service
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["trio"]\n', encoding="utf-8"
    )
    assert run() == "ran --version\n"
    assert installs(tmp_path) == 2
    (tmp_path / ".venv" / "bin" / "sesender").unlink()  # a broken venv is reinstalled
    assert run() == "ran --version\n"
    assert installs(tmp_path) == 3
