"""A loopback TCP proxy that can take its upstream away: connection refused, then back.

Stopping the upstream server itself is not the same fault: an HTTP server's keep-alive
connections can outlive its listener, and a restarted server loses its state. This proxy owns the
port the service connects to. :meth:`OutageProxy.go_down` closes the listening socket (new
connections are refused by the kernel) and resets every open connection; :meth:`come_back`
listens again on the same port. Threads, not trio: the tests that use it are synchronous.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType


class OutageProxy:
    def __init__(self, upstream: tuple[str, int], *, host: str = "127.0.0.1") -> None:
        self._upstream = upstream
        self._host = host
        self._port = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    # -- up and down ----------------------------------------------------------------------------

    def come_back(self) -> None:
        """Listen (again) on the proxy's port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._host, self._port))
        listener.listen(64)
        self._port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def go_down(self) -> None:
        """Refuse new connections and reset the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            listener.close()
        for connection in connections:
            reset(connection)

    # -- forwarding -----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by go_down
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    reset(client)
                    reset(upstream)
                    return
                self._connections.update((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        pumps = [
            threading.Thread(target=pump, args=(source, target), daemon=True)
            for source, target in ((client, upstream), (upstream, client))
        ]
        for thread in pumps:
            thread.start()
        for thread in pumps:
            thread.join()
        with self._lock:
            self._connections.difference_update((client, upstream))
        client.close()
        upstream.close()

    # -- context manager ------------------------------------------------------------------------

    def __enter__(self) -> OutageProxy:
        self.come_back()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.go_down()


def pump(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction until end of file or a reset, then pass the end of file on."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def reset(connection: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a vanished host's connection ends for the client.

    Shut down first: a pump thread blocked in ``recv`` on the socket keeps it open through a
    plain ``close`` (the kernel releases it only when that call returns), so a connection whose
    request was forwarded and whose answer had not come back stayed open, and its client waited
    for its whole read timeout (15 s) instead of seeing the connection end. ``shutdown`` wakes
    those calls; the last reference's close then aborts the connection.
    """
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()
