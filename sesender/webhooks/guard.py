"""Server-side request forgery guard: webhook URLs may only reach public addresses.

A webhook URL is chosen by whoever holds the API key, and sesender connects to it from inside the
deployment's network; unguarded, it would reach the cloud metadata service, the database or an
admin port on loopback. So an address is refused unless it is global unicast (loopback, private,
link-local, shared, reserved, multicast and the cloud metadata addresses all fail that test), and
the check runs twice:

* when an endpoint is created or its URL changed (:func:`url_problem`), for a clear 400;
* at every connection (:func:`~sesender.webhooks.http1.open_connection` calls
  :meth:`AddressPolicy.checked_addresses`): the host is resolved there, every address it resolves
  to is checked, and the connection goes to a checked address, never to a name resolved again
  later, so DNS rebinding (public at creation, private at delivery) gets nowhere. Redirects are
  never followed (see the poster).

``WEBHOOK_ALLOW_PRIVATE=true`` lifts the address check (tests deliver to loopback); the scheme
check stays.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

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


class AddressRefused(Exception):
    """A connection to a refused address was not attempted (the poster reports it as any failed
    connection: the attempt fails and is retried)."""


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
