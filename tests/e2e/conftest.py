from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ServiceProcess, base_env
from tests.e2e.sns_support import CERT_PATH, LoopbackServer, SnsMinter, certificate_server

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this directory ``e2e``: each one starts processes (the service, or a
    benchmark's), so ``-m "not e2e"`` must leave them all out without each file remembering to."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


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
        # Shown by pytest only when the test failed: a service that died or stopped answering
        # says why in its own log, which the test's assertion cannot show.
        print(service.report(), file=sys.stderr)
        service.kill()


@pytest.fixture(scope="module")
def cert_server() -> Iterator[LoopbackServer]:
    """A loopback server for the test SNS signing certificate (one per module)."""
    with certificate_server() as server:
        yield server


@pytest.fixture(scope="module")
def minter(cert_server: LoopbackServer) -> SnsMinter:
    """Mints SNS messages signed with the test key, pointing at ``cert_server``."""
    return SnsMinter(cert_server.base_url + CERT_PATH)
