from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ServiceProcess, base_env


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start ``sesender`` processes in ``tmp_path``; every one is killed at the end."""
    started: list[ServiceProcess] = []

    def start(*, wait: bool = True, **overrides: str) -> ServiceProcess:
        service = ServiceProcess(tmp_path, base_env(tmp_path, **overrides))
        started.append(service)
        return service.start(wait=wait)

    yield start
    for service in started:
        service.kill()
