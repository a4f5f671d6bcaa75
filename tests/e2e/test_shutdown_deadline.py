"""SIGTERM while SES calls hang: the process still exits within the shutdown deadline.

Graceful shutdown (docs/architecture.md) lets in-flight calls finish, flushes results and exits 0
*within a deadline*. An orchestrator sends SIGKILL when its own grace period ends (Docker: 10 s), so
a send that hangs must not hold the process past ``SHUTDOWN_TIMEOUT_SECONDS``; an email whose call
was still open stays ``Processed`` and is requeued at the next start (at least once).

The "SES endpoint" is a loopback TCP server that answers ``GetAccount`` at once (404, as moto
does) and never answers ``SendEmail``.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.harness import ServiceProcess, submit, wait_for

pytestmark = pytest.mark.e2e


class HangingSes:
    """Accepts connections; answers ``GET /v2/email/account`` with 404, hangs on the rest."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hanging: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hanging_count(self) -> int:
        with self._lock:
            return len(self.hanging)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    connection.close()
                    return
                data += chunk
            if data.startswith(b"GET /v2/email/account"):
                connection.sendall(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                connection.close()
                return
        except OSError:
            connection.close()
            return
        with self._lock:
            if self._closed:
                connection.close()
            else:
                self.hanging.append(connection)  # never answered

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self.listener.close()
        with self._lock:
            self._closed = True
            for connection in self.hanging:
                connection.close()
        self._thread.join(timeout=5)


@pytest.fixture
def hanging_ses() -> Iterator[HangingSes]:
    server = HangingSes()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("send_mode", ["bulk", "single"])
def test_sigterm_with_hanging_ses_calls_exits_within_the_deadline(
    start_service: Callable[..., ServiceProcess], hanging_ses: HangingSes, send_mode: str
) -> None:
    shutdown_timeout = 2.0
    service = start_service(
        SENDER_BACKEND="ses",
        SES_SEND_MODE=send_mode,
        AWS_ENDPOINT_URL_SESV2=hanging_ses.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_SES_FROM_EMAIL="news@example.com",
        AWS_READ_TIMEOUT_SECONDS="30",
        MAX_SEND_PER_SECOND="10",
        SHUTDOWN_TIMEOUT_SECONDS=str(shutdown_timeout),
        SERVER_URL="https://sesender.example.test",
    )
    with service.client() as client:
        submit(client, topic="hang", emails=[f"hang{n}@example.org" for n in range(5)])
    wait_for(lambda: hanging_ses.hanging_count() >= 3, timeout=10, what="3 hanging SES calls")
    signalled = time.monotonic()
    service.signal(signal.SIGTERM)
    try:
        code = service.wait(timeout=shutdown_timeout + 3)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"still running {time.monotonic() - signalled:.1f}s after SIGTERM with"
            f" SHUTDOWN_TIMEOUT_SECONDS={shutdown_timeout}: hanging SES calls hold the exit"
        )
    assert code == 0
    assert service.find("shutdown_deadline") is not None
