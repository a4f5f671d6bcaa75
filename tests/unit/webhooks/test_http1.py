"""The webhook HTTP/1.1 client (``sesender/webhooks/http1.py`` through the poster): keep-alive,
the answer's limits, a kept connection the receiver closed, HTTPS, header injection.

Each test runs a scripted receiver on loopback inside the test's trio run: it parses requests
with ``h11`` (a different HTTP implementation from the client's) and answers with exact bytes, so
each connection-level behaviour is what the test says it is. Accepted connections are counted:
reuse is asserted, not assumed.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook

from sesender.webhooks.guard import AddressPolicy
from sesender.webhooks.http1 import idle_socket_readable, parse_origin, request_bytes
from sesender.webhooks.models import DeliveryTarget, PendingEvent
from sesender.webhooks.poster import PostResult, WebhookPoster

SECRET = "whsec_" + "QUJD" * 8
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]


@dataclass
class ScriptedReceiver:
    """Answers request n with ``answer(n)`` (raw bytes); closes the connection after it when
    ``close_after(n)``."""

    answer: Callable[[int], bytes] = lambda n: NO_CONTENT
    close_after: Callable[[int], bool] = lambda n: False
    connections: int = 0
    requests: list[Received] = field(default_factory=list)

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        connection = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        return
                    connection.receive_data(bytes(data))
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                    body = b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    number = len(self.requests)
                    self.requests.append(Received(body, headers))
                    try:
                        await stream.send_all(self.answer(number))
                    except trio.BrokenResourceError:
                        return  # the client stopped reading (an answer over its limit)
                    if self.close_after(number):
                        return
                    # the client state is DONE: read the next request on the same connection
                    connection = h11.Connection(h11.SERVER)
                else:
                    return


@asynccontextmanager
async def serving(
    receiver: ScriptedReceiver, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        serve: list[trio.abc.Listener[trio.abc.Stream]] = list(listeners)
        if ssl_context is not None:
            serve = [trio.SSLListener(listener, ssl_context) for listener in listeners]
        nursery.start_soon(trio.serve_listeners, receiver.handle, serve)
        yield port
        nursery.cancel_scope.cancel()


def event(number: int = 1) -> PendingEvent:
    return PendingEvent(
        row_id=number,
        event_id=f"evt_{number}",
        endpoint_id="ep_1",
        event_type="email.sent",
        request_id=number,
        topic_id="t",
        email="a@example.com",
        message_id=f"m-{number}",
        suppressed=None,
        detail=None,
        occurred_at_ms=1_768_471_200_000,
        attempts=0,
    )


def poster(**settings: object) -> WebhookPoster:
    return WebhookPoster(
        policy=AddressPolicy(allow_private=True),
        timeout=5,
        max_response_bytes=1024,
        **settings,  # type: ignore[arg-type]
    )


async def post_many(
    port: int, count: int, *, scheme: str = "http", **settings: object
) -> list[PostResult]:
    client = poster(**settings)
    target = DeliveryTarget("ep_1", f"{scheme}://127.0.0.1:{port}/hook?x=1", (SECRET,))
    try:
        return [await client.post(target, event(n)) for n in range(1, count + 1)]
    finally:
        await client.aclose()


async def test_one_connection_carries_every_post_and_each_verifies() -> None:
    receiver = ScriptedReceiver()
    async with serving(receiver) as port:
        results = await post_many(port, 5)
    assert [r.status_code for r in results] == [204] * 5
    assert [r.error for r in results] == [None] * 5
    assert receiver.connections == 1
    for number, request in enumerate(receiver.requests, start=1):
        payload = Webhook(SECRET).verify(request.body, request.headers)
        assert payload["id"] == f"evt_{number}"
        assert request.headers["host"] == f"127.0.0.1:{port}"
        assert request.headers["content-type"] == "application/json"


async def test_connection_close_in_an_answer_opens_a_new_connection() -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    receiver = ScriptedReceiver(answer=lambda n: closing, close_after=lambda n: True)
    async with serving(receiver) as port:
        results = await post_many(port, 3)
    assert [r.status_code for r in results] == [200] * 3
    assert receiver.connections == 3


async def test_a_kept_connection_the_receiver_closed_is_retried_on_a_new_one() -> None:
    # Closed after each answer without saying so: the next post finds a dead kept connection.
    receiver = ScriptedReceiver(close_after=lambda n: True)
    async with serving(receiver) as port:
        results = await post_many(port, 3)
    assert [(r.status_code, r.error) for r in results] == [(204, None)] * 3
    assert receiver.connections == 3
    assert len(receiver.requests) == 3


async def test_a_long_answer_is_read_only_up_to_the_limit_and_not_reused() -> None:
    long_body = b"x" * 100_000
    long_answer = b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n" + long_body
    receiver = ScriptedReceiver(answer=lambda n: long_answer if n == 0 else NO_CONTENT)
    async with serving(receiver) as port:
        first, second = await post_many(port, 2)
    assert first.status_code == 500
    assert first.error == "HTTP 500: " + "x" * 200  # the snippet the attempt log keeps
    assert (second.status_code, second.error) == (204, None)
    assert receiver.connections == 2  # the half-read answer's connection was not reused


async def test_an_answer_ended_by_the_connection_close_is_understood() -> None:
    unframed = b"HTTP/1.1 503 Busy\r\n\r\ntry later"
    receiver = ScriptedReceiver(answer=lambda n: unframed, close_after=lambda n: True)
    async with serving(receiver) as port:
        (result,) = await post_many(port, 1)
    assert (result.status_code, result.error) == (503, "HTTP 503: try later")


async def test_an_interim_answer_is_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + NO_CONTENT
    receiver = ScriptedReceiver(answer=lambda n: interim)
    async with serving(receiver) as port:
        results = await post_many(port, 2)
    assert [(r.status_code, r.error) for r in results] == [(204, None)] * 2
    assert receiver.connections == 1


async def test_a_malformed_answer_is_a_failed_attempt() -> None:
    receiver = ScriptedReceiver(
        answer=lambda n: b"HTTP/1.1 abc\r\n\r\n", close_after=lambda n: True
    )
    async with serving(receiver) as port:
        (result,) = await post_many(port, 1)
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("ProtocolError: malformed answer")


async def test_a_refused_connection_is_a_connect_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there now
    (result,) = await post_many(port, 1)
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("ConnectError: ")


def test_header_values_with_control_characters_are_refused() -> None:
    origin = parse_origin("http://hooks.example.com/in")
    request = request_bytes(origin, [(b"webhook-id", b"evt_1")], b"{}")
    assert request.startswith(b"POST /in HTTP/1.1\r\nHost: hooks.example.com\r\n")
    assert request.endswith(b"Content-Length: 2\r\nwebhook-id: evt_1\r\n\r\n{}")
    with pytest.raises(ValueError, match="control character"):
        request_bytes(origin, [(b"webhook-id", b"evt\r\nx-injected: 1")], b"{}")
    # a path is percent-encoded by the URL parser, never sent raw; control characters refused
    assert parse_origin("http://h.example/a b<c>").request_start.startswith(b"POST /a%20b%3Cc%3E")
    with pytest.raises(ValueError, match="non-printable"):
        parse_origin("http://h.example/a\r\nx-injected: 1")
    with pytest.raises(ValueError, match="not http or https"):
        parse_origin("ftp://hooks.example.com/")


def certificate_authority() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 signed by a test CA, and a client context trusting only
    that CA (made with ``cryptography``; the server's files live only while being loaded)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sesender test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as directory:  # ssl loads a chain only from files
        cert_file = Path(directory) / "cert.pem"
        key_file = Path(directory) / "key.pem"
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(
        cadata=ca.public_bytes(serialization.Encoding.PEM).decode("ascii")
    )
    return server, client


async def test_https_verifies_the_certificate_and_keeps_the_connection() -> None:
    server_context, client_context = certificate_authority()
    receiver = ScriptedReceiver()
    async with serving(receiver, server_context) as port:
        results = await post_many(port, 3, scheme="https", ssl_context=client_context)
        assert [(r.status_code, r.error) for r in results] == [(204, None)] * 3
        assert receiver.connections == 1
        Webhook(SECRET).verify(receiver.requests[0].body, receiver.requests[0].headers)
        # the system's trust store does not know the test CA: refused before any request
        (untrusted,) = await post_many(port, 1, scheme="https")
    assert untrusted.status_code is None
    assert untrusted.error is not None
    assert untrusted.error.startswith("ConnectError: TLS: ")
    assert "certificate verify failed" in untrusted.error
    assert len(receiver.requests) == 3


def test_an_idle_connection_closed_by_its_peer_is_seen_before_reuse() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        assert not idle_socket_readable(ours)  # open and quiet: reusable
        theirs.close()
        assert idle_socket_readable(ours)  # EOF waiting: not reusable
    assert idle_socket_readable(ours)  # closed
