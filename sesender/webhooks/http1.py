"""One HTTP/1.1 keep-alive connection to a webhook endpoint: a trio stream, answers parsed by
``httptools``.

Why not httpx: a delivery is one small POST and a short answer, thousands a second to the same
few endpoints, and httpx with httpcore spent about 0.8 ms of CPU on each (request and response
models, header normalisation, the pool's bookkeeping, stream wrappers), and h11 driven directly
(httpcore's own HTTP/1.1 state machine, pure Python) still about 0.1 ms per request and answer.
``httptools`` is the C binding of llhttp (Node's HTTP parser; uvicorn's) and parses an answer in
about a microsecond (measured, docs/performance.md). What a webhook needs of a client, and
nothing more, is here:

* the request is written from parts that are checked: the path and ``Host`` come from httpx's URL
  parser (normalised, percent-encoded), header values are refused if they hold a control
  character (no header injection whatever a value holds);
* connecting goes through :class:`~sesender.webhooks.guard.AddressPolicy`: the host is resolved
  and every address checked *here*, and the socket goes to a checked address (DNS rebinding gets
  nowhere); TLS (``https``) verifies the certificate against the URL's host name;
* the answer's body is read only up to a limit (its start is kept for the attempt log), and a
  connection whose answer was not read to its end is closed, never reused; so is one whose
  answer said ``Connection: close`` or ended at the connection's end;
* redirects are answers like any other (the poster treats a 3xx as a failed attempt);
* timeouts are the caller's trio cancel scopes (one deadline per attempt), plus a connect
  timeout here.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from dataclasses import dataclass

import httptools
import httpx
import trio

from sesender.webhooks.guard import AddressPolicy, AddressRefused

#: Bytes asked of the socket per read: an answer head and a short body fit in one.
READ_SIZE = 16_384
#: Seconds idle after which a kept connection's socket is looked at before it is used again
#: (cheaper than looking every time; a connection closed sooner than this costs a retry).
RECHECK_AFTER_IDLE = 1.0
#: What a header value must not hold (RFC 9110 field values: no CR, LF, NUL, other controls).
_UNSAFE_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class ConnectError(Exception):
    """No connection: refused address, name not resolved, nothing listening, TLS failed."""


class ProtocolError(Exception):
    """The peer broke HTTP/1.1, or closed the connection before its answer was complete."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a URL's requests go, parsed once (by httpx's URL parser, which also normalises and
    percent-encodes the path)."""

    scheme: str
    host: str
    port: int
    #: the start of every request: request line and ``Host`` header
    request_start: bytes

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def parse_origin(url: str) -> Origin:
    """The origin of an ``http``/``https`` URL; :class:`ValueError` for anything else."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"invalid URL: {exc}") from exc
    scheme = parsed.scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"invalid URL: {scheme!r} is not http or https")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise ValueError("invalid URL: no host")
    target = parsed.raw_path or b"/"
    if b" " in target or _UNSAFE_VALUE.search(target) or _UNSAFE_VALUE.search(parsed.netloc):
        raise ValueError("invalid URL: control characters")
    return Origin(
        scheme=scheme,
        host=host,
        port=parsed.port or (443 if scheme == "https" else 80),
        request_start=b"POST " + target + b" HTTP/1.1\r\nHost: " + parsed.netloc + b"\r\n",
    )


def request_bytes(origin: Origin, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The whole request; :class:`ValueError` if a header value holds a control character."""
    parts = [origin.request_start, b"Content-Length: %d\r\n" % len(body)]
    for name, value in headers:
        if _UNSAFE_VALUE.search(value):
            raise ValueError(f"header {name.decode('ascii')} holds a control character")
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    #: the start of the body (at most what the caller asked to keep)
    kept: bytes


class _AnswerReader:
    """httptools' callbacks for one answer at a time (the parser itself lives as long as the
    connection: llhttp parses one message after another). An interim 1xx answer is skipped."""

    __slots__ = ("complete", "headers_done", "keep", "kept", "parser", "read")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.start(0)

    def start(self, keep: int) -> None:
        self.headers_done = False
        self.complete = False
        self.kept = b""
        self.keep = keep
        self.read = 0

    def on_headers_complete(self) -> None:
        self.headers_done = self.parser.get_status_code() >= 200

    def on_body(self, body: bytes) -> None:
        if len(self.kept) < self.keep:
            self.kept += body[: self.keep - len(self.kept)]
        self.read += len(body)

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True


def idle_socket_readable(sock: socket.socket) -> bool:
    """True when an idle connection's socket has something to read: EOF, a reset or stray bytes,
    either way not a connection to send the next request on (``poll``: no descriptor limit)."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed
        return True


class Http1Connection:
    """A client connection: one request at a time, kept alive between requests."""

    def __init__(self, stream: trio.abc.Stream, sock: socket.socket) -> None:
        self._stream = stream
        self._socket = sock
        self._reader = _AnswerReader()
        self._parser = self._reader.parser
        self._closed = False
        #: whether the last answer was read to its end and allows another request
        self._clean = False
        #: requests sent on this connection (the first one on a fresh connection is 1)
        self.requests = 0
        #: trio.current_time() when the last answer finished
        self.idle_since = trio.current_time()
        #: the status of the answer being read (None until its head arrived)
        self.status_code: int | None = None

    def finished_cleanly(self) -> bool:
        """The last answer was read to its end, and neither side asked to close."""
        return self._clean and not self._closed

    def reusable(self, now: float, keepalive_expiry: float) -> bool:
        """Whether the next request may go on this idle connection: finished cleanly, idle for
        less than ``keepalive_expiry``, and (when idle for a while: a peer closes idle
        connections after its own timeout, seconds at the least) not closed by the peer."""
        idle = now - self.idle_since
        return (
            idle < keepalive_expiry
            and self.finished_cleanly()
            and (idle < RECHECK_AFTER_IDLE or not idle_socket_readable(self._socket))
        )

    async def post(
        self,
        origin: Origin,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        max_response_bytes: int,
        keep: int,
    ) -> Answer:
        """POST ``body``; the status and the first ``keep`` bytes of the answer. At most
        ``max_response_bytes`` of the answer's body are read; a longer one closes the connection.
        Raises :class:`ProtocolError`, :class:`ValueError` for a header that cannot be sent, or
        trio's/the OS's errors for a broken connection."""
        data = request_bytes(origin, headers, body)
        self.requests += 1
        self.status_code = None
        self._clean = False
        reader = self._reader
        reader.start(keep)
        try:
            await self._stream.send_all(data)
            await self._read_answer(max_response_bytes)
            status = self._parser.get_status_code()
            self.status_code = status
            self._clean = reader.complete and self._parser.should_keep_alive()
            return Answer(status_code=status, kept=reader.kept)
        finally:
            if not self._clean:
                await self.aclose()
            self.idle_since = trio.current_time()

    async def _read_answer(self, max_response_bytes: int) -> None:
        reader = self._reader
        parser = self._parser
        while not reader.complete:
            data = await self._stream.receive_some(READ_SIZE)
            if not data:
                if reader.headers_done:  # an answer delimited by the connection's end
                    return
                raise ProtocolError("the receiver closed the connection before answering")
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                raise ProtocolError("the receiver switched protocols") from exc
            except httptools.HttpParserError as exc:
                raise ProtocolError(f"malformed answer: {exc}") from exc
            if reader.headers_done and self.status_code is None:
                self.status_code = parser.get_status_code()
            if reader.read >= max_response_bytes:
                return  # the rest is not read: this connection cannot carry another request

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._clean = False
        with trio.move_on_after(1) as scope:
            scope.shield = True
            await trio.aclose_forcefully(self._stream)


async def open_connection(
    origin: Origin,
    policy: AddressPolicy,
    *,
    ssl_context: ssl.SSLContext,
    connect_timeout: float,
) -> Http1Connection:
    """A new connection to ``origin``, through the address check; :class:`ConnectError` when
    none can be made."""
    try:
        with trio.fail_after(connect_timeout):
            try:
                addresses = await policy.checked_addresses(origin.host, origin.port)
            except AddressRefused as exc:
                raise ConnectError(str(exc)) from exc
            except OSError as exc:
                raise ConnectError(f"cannot resolve {origin.host}: {exc}") from exc
            failure: BaseException | None = None
            for address in addresses:  # each one checked: never a name resolved again
                try:
                    tcp = await trio.open_tcp_stream(address, origin.port)
                except OSError as exc:
                    failure = exc
                    continue
                stream: trio.abc.Stream = tcp
                if origin.tls:
                    tls = trio.SSLStream(
                        tcp, ssl_context, server_hostname=origin.host, https_compatible=True
                    )
                    try:
                        await tls.do_handshake()
                    except trio.BrokenResourceError as exc:
                        await trio.aclose_forcefully(tcp)
                        raise ConnectError(f"TLS: {exc.__cause__ or exc}") from exc
                    stream = tls
                return Http1Connection(stream, tcp.socket)  # type: ignore[arg-type]
            raise ConnectError(str(failure)) from failure
    except trio.TooSlowError as exc:
        raise ConnectError(f"connect timed out after {connect_timeout:g} s") from exc
