"""WebhookPoster: one signed POST of one event, with httpx, reported as a value.

The boundary where httpx's exceptions stop: :meth:`post` never raises for anything the receiver
or the network does; it returns the status code or a one-line error. Each attempt is bounded by
one overall deadline (httpx's timeouts are per read, which a receiver dripping bytes would get
around); at most ``max_response_bytes`` of the answer are read (only its start is kept, for the
attempt log); redirects are never followed (a 3xx is a failed attempt).

Requests go straight to an httpx transport (an ``httpx.Request`` handed to
``handle_async_request``): ``httpx.AsyncClient`` adds cookies, auth and redirect handling that a
webhook never uses (a quarter of the CPU of a delivery, measured). Each transport
(:class:`~sesender.webhooks.guard.GuardedTransport`) holds one keep-alive connection, and a post
checks out an idle one of its endpoint (or opens one): httpcore's pool compares every queued
request with every connection it holds at each request's start and end (a fifth of the CPU with
16 connections in one pool, profiled), which a pool of one never does. An endpoint so gets at most
as many connections as it has posts in flight (``WEBHOOK_CONCURRENCY``), and never shares them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import trio

from sesender.webhooks.events import event_body
from sesender.webhooks.guard import AddressPolicy, GuardedTransport
from sesender.webhooks.models import DeliveryTarget, PendingEvent
from sesender.webhooks.signing import Signer

#: How much of an error answer the attempt log keeps.
ERROR_SNIPPET = 200


@dataclass(frozen=True, slots=True)
class PostResult:
    status_code: int | None
    error: str | None
    duration_ms: int


def _snippet(data: bytes) -> str:
    text = data[:ERROR_SNIPPET].decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


class WebhookPoster:
    def __init__(
        self,
        *,
        policy: AddressPolicy,
        timeout: float,
        connections_per_endpoint: int,
        max_response_bytes: int = 4096,
        wall_seconds: Callable[[], float] = time.time,
        user_agent: str = "sesender-webhooks/1",
    ) -> None:
        self._policy = policy
        self._timeout = timeout
        self._connections = connections_per_endpoint
        self._max_response_bytes = max_response_bytes
        self._wall_seconds = wall_seconds
        self._user_agent = user_agent
        self._signer = Signer()
        #: per (endpoint, url): every connection opened, and those not in use right now.
        self._transports: dict[tuple[str, str], list[GuardedTransport]] = {}
        self._idle: dict[tuple[str, str], list[GuardedTransport]] = {}

    def _checkout(self, target: DeliveryTarget) -> GuardedTransport:
        key = (target.endpoint_id, target.url)
        idle = self._idle.setdefault(key, [])
        if idle:
            return idle.pop()
        transport = GuardedTransport(self._policy, max_connections=1)
        self._transports.setdefault(key, []).append(transport)
        return transport

    def _checkin(self, target: DeliveryTarget, transport: GuardedTransport) -> None:
        key = (target.endpoint_id, target.url)
        if transport in self._transports.get(key, ()):  # not forgotten meanwhile
            self._idle.setdefault(key, []).append(transport)

    async def forget(self, target: DeliveryTarget) -> None:
        """Close the connections to ``target`` (its lane stopped: disabled, deleted, URL
        changed)."""
        key = (target.endpoint_id, target.url)
        self._idle.pop(key, None)
        for transport in self._transports.pop(key, []):
            await transport.aclose()

    async def aclose(self) -> None:
        self._idle.clear()
        while self._transports:
            _, transports = self._transports.popitem()
            for transport in transports:
                await transport.aclose()

    async def post(self, target: DeliveryTarget, event: PendingEvent) -> PostResult:
        body = event_body(event)
        headers = self._signer.headers(
            target.secrets, event.event_id, int(self._wall_seconds()), body
        )
        headers["content-type"] = "application/json"
        headers["user-agent"] = self._user_agent
        started = trio.current_time()
        status_code: int | None = None
        error: str | None = None
        transport = self._checkout(target)
        try:
            with trio.move_on_after(self._timeout) as deadline:
                try:
                    request = httpx.Request("POST", target.url, content=body, headers=headers)
                    response = await transport.handle_async_request(request)
                    try:
                        status_code = response.status_code
                        kept = b""
                        read = 0
                        assert isinstance(response.stream, httpx.AsyncByteStream)
                        async for chunk in response.stream:
                            if len(kept) < ERROR_SNIPPET:
                                kept += chunk[: ERROR_SNIPPET - len(kept)]
                            read += len(chunk)
                            if read >= self._max_response_bytes:
                                break
                    finally:  # bounded: closing a response only closes our side
                        with trio.move_on_after(1, shield=True):
                            await response.aclose()
                    if 300 <= status_code < 400:
                        error = f"HTTP {status_code}: redirects are not followed"
                    elif not 200 <= status_code < 300:
                        snippet = _snippet(kept)
                        error = f"HTTP {status_code}" + (f": {snippet}" if snippet else "")
                except httpx.HTTPError as exc:
                    status_code = None
                    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                except httpx.InvalidURL as exc:
                    status_code = None
                    error = f"invalid URL: {exc}"
        finally:
            self._checkin(target, transport)
        if deadline.cancelled_caught and not (status_code and 200 <= status_code < 300):
            # (a 2xx whose body was still dripping in at the deadline was delivered)
            status_code = None
            error = f"timed out after {self._timeout:g} s"
        duration_ms = round((trio.current_time() - started) * 1000)
        return PostResult(status_code=status_code, error=error, duration_ms=duration_ms)
