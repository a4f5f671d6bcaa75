"""Server-side request forgery guard: webhook URLs may only reach public addresses.

A webhook URL is chosen by whoever holds the API key, and sesender connects to it from inside the
deployment's network; unguarded, it would reach the cloud metadata service, the database or an
admin port on loopback. So an address is refused unless it is global unicast (loopback, private,
link-local, shared, reserved, multicast and the cloud metadata addresses all fail that test), and
the check runs twice:

* when an endpoint is created or its URL changed (:func:`url_problem`), for a clear 400;
* at every connection (:class:`GuardedBackend`, an ``httpcore`` network backend): the host is
  resolved here, every address it resolves to is checked, and the connection goes to a checked
  address, never to a name resolved again later, so DNS rebinding (public at creation, private
  at delivery) gets nowhere. Redirects are never followed (see the poster).

``WEBHOOK_ALLOW_PRIVATE=true`` lifts the address check (tests deliver to loopback); the scheme
check stays.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
import trio

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses it resolves to (injected: tests resolve names as they like).
Resolver = Callable[[str, int], Awaitable[list[str]]]

#: Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Oracle): refused by the
#: global-unicast test already, named here so the refusal says what they are.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)


def address_problem(address: IpAddress) -> str | None:
    """What kind of refused address ``address`` is, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_multicast:
        return "not a public unicast address"
    return None


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, by the system resolver (in a thread: trio's)."""
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    allow_private: bool
    resolve: Resolver = system_resolve

    async def checked_addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` to connect to; raise :class:`AddressRefused` if any one of
        them is refused (a name must not mix a public address with a private one)."""
        literal = _literal(host)
        addresses = [str(literal)] if literal is not None else await self.resolve(host, port)
        if not addresses:
            raise AddressRefused(f"{host} resolves to no address")
        if not self.allow_private:
            for text in addresses:
                problem = address_problem(ipaddress.ip_address(text.split("%", 1)[0]))
                if problem is None:
                    continue
                if literal is not None:
                    raise AddressRefused(f"{text} is {problem}")
                raise AddressRefused(f"{host} resolves to {text}, {problem}")
        return addresses


class AddressRefused(httpcore.ConnectError):
    """A connection to a refused address was not attempted (an ``httpcore`` connect error, so
    the transport reports it as any failed connection: the attempt fails and is retried)."""


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def url_problem(url: str, policy: AddressPolicy) -> str | None:
    """Why ``url`` cannot be a webhook endpoint, or None (checked at creation and change)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"url is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "url must be an http or https URL"
    host = parts.hostname
    if not host:
        return "url must name a host"
    if parts.username is not None or parts.password is not None:
        return "url must not carry credentials (sign requests with the secret instead)"
    try:
        await policy.checked_addresses(host, port or (443 if parts.scheme == "https" else 80))
    except AddressRefused as exc:
        return f"url is refused: {exc}"
    except OSError as exc:
        return f"url host {host!r} cannot be resolved: {exc.strerror or exc}"
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks every host before connecting, then connects to a checked address
    (TLS still verifies the certificate for the URL's host name: httpcore sends the origin's
    name as SNI and checks it, whatever address the socket went to)."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend) -> None:
        self._policy = policy
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._policy.checked_addresses(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook endpoints")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


#: httpcore's exceptions -> httpx's, most specific first (the transport's one boundary).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


def mapped(exc: Exception, request: httpx.Request) -> Exception:
    """The httpx exception for an httpcore one (anything else unchanged)."""
    for core_type, httpx_type in _ERRORS:
        if isinstance(exc, core_type):
            return httpx_type(str(exc), request=request)
    return exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_stream():
                yield chunk
        except Exception as exc:
            raise mapped(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an ``httpcore`` connection pool that connects through
    :class:`GuardedBackend` (httpx's own transport does not take a network backend)."""

    def __init__(
        self, policy: AddressPolicy, *, max_connections: int, keepalive_expiry: float = 30.0
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=GuardedBackend(policy, httpcore.TrioBackend()),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as exc:
            raise mapped(exc, request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
