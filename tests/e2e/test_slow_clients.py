"""Slow clients cannot hold the server: hypercorn's read timeout closes a connection that
dribbles its request, and the service keeps answering everyone else meanwhile."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from tests.e2e.harness import ServiceProcess


def test_a_dribbling_client_is_cut_off_and_others_are_served(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service(HTTP_READ_TIMEOUT_SECONDS="1", HTTP_KEEP_ALIVE_TIMEOUT_SECONDS="1")
    address = urlsplit(service.url)
    slow = [
        socket.create_connection((address.hostname, address.port), timeout=10) for _ in range(20)
    ]
    try:
        for connection in slow:
            connection.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")  # never finished
        # While 20 slow requests hang, others are answered at once.
        with service.client() as client:
            started = time.monotonic()
            assert client.get("/health").json() == {"status": "ok"}
            assert time.monotonic() - started < 1
        # Each slow connection is closed by the server within the read timeout (plus slack):
        # reading reaches end of file (possibly after a 408 answer) instead of timing out.
        started = time.monotonic()
        for connection in slow:
            connection.settimeout(10)
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
            assert received == b"" or received.startswith(b"HTTP/1.1 408"), received[:80]
        elapsed = time.monotonic() - started
        assert elapsed < 6, f"slow connections were held for {elapsed:.1f}s"
    finally:
        for connection in slow:
            connection.close()
    assert service.stop() == 0
