"""WebhookPoster: one signed POST of one event, reported as a value.

The boundary where network and HTTP errors stop: :meth:`post` never raises for anything the
receiver or the network does; it returns the status code or a one-line error. Each attempt is
bounded by one overall deadline (a per-read timeout is what a receiver dripping bytes would get
around); at most ``max_response_bytes`` of the answer are read (only its start is kept, for the
attempt log); redirects are never followed (a 3xx is a failed attempt).

Requests go over :class:`~sesender.webhooks.http1.Http1Connection` (a trio stream, answers
parsed by httptools, the address check at every connect): a fifth of the CPU per post that httpx
with httpcore's pool took (docs/performance.md). Each endpoint keeps its idle keep-alive
connections in a stack; a post takes one (or opens one) and gives it back when its answer was
read to the end, so an endpoint has at most as many connections as posts in flight
(``WEBHOOK_CONCURRENCY``), and never shares them.
Idle connections older than ``keepalive_expiry`` are closed rather than reused (receivers close
idle connections on their own schedule). A request on a reused connection that the receiver had
closed meanwhile fails before any answer: it goes again once, at once, on a new connection.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from sesender.webhooks.events import event_body
from sesender.webhooks.guard import AddressPolicy
from sesender.webhooks.http1 import (
    Answer,
    ConnectError,
    Http1Connection,
    Origin,
    ProtocolError,
    open_connection,
    parse_origin,
)
from sesender.webhooks.models import DeliveryTarget, PendingEvent
from sesender.webhooks.signing import Signer

#: How much of an error answer the attempt log keeps.
ERROR_SNIPPET = 200
#: Errors of a connection that broke under a request (trio's, the OS's, the peer's HTTP).
_BROKEN = (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(frozen=True, slots=True)
class PostResult:
    status_code: int | None
    error: str | None
    duration_ms: int


def _snippet(data: bytes) -> str:
    text = data[:ERROR_SNIPPET].decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


def _describe(exc: BaseException) -> str:
    name = "ConnectError" if isinstance(exc, ConnectError) else type(exc).__name__
    return f"{name}: {exc}" if str(exc) else name


@dataclass(slots=True)
class _EndpointConnections:
    origin: Origin
    idle: list[Http1Connection]
    every: set[Http1Connection]


class WebhookPoster:
    def __init__(
        self,
        *,
        policy: AddressPolicy,
        timeout: float,
        max_response_bytes: int = 4096,
        wall_seconds: Callable[[], float] = time.time,
        user_agent: str = "sesender-webhooks/1",
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        keepalive_expiry: float = 30.0,
    ) -> None:
        self._policy = policy
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._wall_seconds = wall_seconds
        self._static_headers = [
            (b"content-type", b"application/json"),
            (b"user-agent", user_agent.encode("ascii")),
        ]
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._connect_timeout = min(connect_timeout, timeout)
        self._keepalive_expiry = keepalive_expiry
        self._signer = Signer()
        #: per (endpoint, url): every connection open, and those not in use right now.
        self._endpoints: dict[tuple[str, str], _EndpointConnections] = {}

    def _endpoint(self, target: DeliveryTarget) -> _EndpointConnections:
        key = (target.endpoint_id, target.url)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = _EndpointConnections(origin=parse_origin(target.url), idle=[], every=set())
            self._endpoints[key] = endpoint
        return endpoint

    async def _checkout(self, endpoint: _EndpointConnections) -> Http1Connection:
        now = trio.current_time()
        while endpoint.idle:
            connection = endpoint.idle.pop()
            if connection.reusable(now, self._keepalive_expiry):
                return connection
            endpoint.every.discard(connection)
            await connection.aclose()
        connection = await open_connection(
            endpoint.origin,
            self._policy,
            ssl_context=self._ssl_context,
            connect_timeout=self._connect_timeout,
        )
        endpoint.every.add(connection)
        return connection

    def _checkin(self, endpoint: _EndpointConnections, connection: Http1Connection) -> None:
        if connection in endpoint.every:  # not forgotten meanwhile
            endpoint.idle.append(connection)

    async def forget(self, target: DeliveryTarget) -> None:
        """Close the connections to ``target`` (its lane stopped: disabled, deleted, URL
        changed)."""
        endpoint = self._endpoints.pop((target.endpoint_id, target.url), None)
        if endpoint is not None:
            await self._close(endpoint)

    async def aclose(self) -> None:
        while self._endpoints:
            _, endpoint = self._endpoints.popitem()
            await self._close(endpoint)

    @staticmethod
    async def _close(endpoint: _EndpointConnections) -> None:
        endpoint.idle.clear()
        connections, endpoint.every = endpoint.every, set()
        for connection in connections:
            await connection.aclose()

    async def _exchange(
        self,
        endpoint: _EndpointConnections,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        in_flight: list[Http1Connection],
    ) -> Answer:
        """One request and its answer, on a kept connection or a new one (once more on a new
        one if a kept connection turns out to have been closed by the receiver). The connection
        in use is left in ``in_flight``: the caller's deadline may cut the answer short."""
        while True:
            connection = await self._checkout(endpoint)
            in_flight[:] = [connection]
            reused = connection.requests > 0
            try:
                answer = await connection.post(
                    endpoint.origin,
                    headers,
                    body,
                    max_response_bytes=self._max_response_bytes,
                    keep=ERROR_SNIPPET,
                )
            except _BROKEN:
                endpoint.every.discard(connection)
                await connection.aclose()
                if reused and connection.status_code is None:  # closed while it was idle
                    continue
                raise
            except BaseException:  # cancelled (the deadline): the connection is mid-request
                endpoint.every.discard(connection)
                await connection.aclose()
                raise
            if connection.finished_cleanly():
                self._checkin(endpoint, connection)
            else:
                endpoint.every.discard(connection)
                await connection.aclose()
            return answer

    async def post(self, target: DeliveryTarget, event: PendingEvent) -> PostResult:
        body = event_body(event)
        headers = [
            *self._signer.raw_headers(
                target.secrets, event.event_id, int(self._wall_seconds()), body
            ),
            *self._static_headers,
        ]
        started = trio.current_time()
        status_code: int | None = None
        error: str | None = None
        in_flight: list[Http1Connection] = []
        with trio.move_on_after(self._timeout) as deadline:
            try:
                answer = await self._exchange(self._endpoint(target), body, headers, in_flight)
            except ValueError as exc:  # the URL (checked at creation: only an old row)
                error = str(exc)
            except (ConnectError, *_BROKEN) as exc:
                error = _describe(exc)
            else:
                status_code = answer.status_code
                if 300 <= status_code < 400:
                    error = f"HTTP {status_code}: redirects are not followed"
                elif not 200 <= status_code < 300:
                    snippet = _snippet(answer.kept)
                    error = f"HTTP {status_code}" + (f": {snippet}" if snippet else "")
        if deadline.cancelled_caught:
            answered = in_flight[0].status_code if in_flight else None
            if answered is not None and 200 <= answered < 300:
                # a 2xx whose body was still dripping in at the deadline was delivered
                status_code, error = answered, None
            else:
                status_code, error = None, f"timed out after {self._timeout:g} s"
        duration_ms = round((trio.current_time() - started) * 1000)
        return PostResult(status_code=status_code, error=error, duration_ms=duration_ms)
