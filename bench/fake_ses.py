"""A tiny, fast fake of the SES v2 HTTP API, for throughput benchmarks (stdlib only).

It answers just enough for sesender's ``ses`` backend and for boto3's ``sesv2`` client:

* ``POST /v2/email/outbound-emails`` (``SendEmail``): 200 ``{"MessageId": "fake-<n>"}``; the
  body is read and ignored (no validation, no signature check: it measures the client side);
* ``GET /v2/email/account`` (``GetAccount``): 200 with a plausible healthy production account;
* ``GET /_bench/stats``: 200 ``{"send_email": <calls so far>}``, for the benchmark's own checks;
* anything else: 404 ``NotFoundException``.

One asyncio event loop in one thread, HTTP/1.1 keep-alive, no per-request allocation beyond the
response bytes: far cheaper per request than the boto3 client calling it, so on a shared machine
it takes as little CPU from the client as a fake can. Run it as its own process::

    python -m bench.fake_ses --port 0      # prints "PORT <n>" once listening, serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

ACCOUNT = json.dumps(
    {
        "DedicatedIpAutoWarmupEnabled": False,
        "EnforcementStatus": "HEALTHY",
        "ProductionAccessEnabled": True,
        "SendQuota": {
            "Max24HourSend": 50_000_000.0,
            "MaxSendRate": 100_000.0,
            "SentLast24Hours": 0.0,
        },
        "SendingEnabled": True,
        "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
        "Details": {"MailType": "MARKETING", "WebsiteURL": "https://example.com"},
    }
).encode()
NOT_FOUND = b'{"message": "no such operation in the fake SES"}'


class Counters:
    send_email = 0


def response(status: bytes, body: bytes, *extra: bytes) -> bytes:
    headers = [
        b"HTTP/1.1 " + status,
        b"Content-Type: application/json",
        b"Content-Length: " + str(len(body)).encode(),
        b"x-amzn-RequestId: 00000000-0000-4000-8000-000000000000",
        *extra,
    ]
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


def answer(request_line: bytes) -> bytes:
    method, _, rest = request_line.partition(b" ")
    path = rest.partition(b" ")[0].partition(b"?")[0]
    if method == b"POST" and path == b"/v2/email/outbound-emails":
        Counters.send_email += 1
        return response(b"200 OK", b'{"MessageId": "fake-%016x"}' % Counters.send_email)
    if method == b"GET" and path == b"/v2/email/account":
        return response(b"200 OK", ACCOUNT)
    if method == b"GET" and path == b"/_bench/stats":
        return response(b"200 OK", json.dumps({"send_email": Counters.send_email}).encode())
    return response(b"404 Not Found", NOT_FOUND, b"x-amzn-ErrorType: NotFoundException")


def content_length(head: bytes) -> int:
    lowered = head.lower()
    start = lowered.find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    start += len(b"\r\ncontent-length:")
    end = lowered.find(b"\r\n", start)
    return int(lowered[start : end if end >= 0 else len(lowered)].strip())


class FakeSesProtocol(asyncio.Protocol):
    """One keep-alive connection: parse request heads, skip bodies, answer in order."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(buffer[:head_end])
            end = head_end + 4 + content_length(head)
            if len(buffer) < end:
                return
            del buffer[:end]
            assert self.transport is not None
            self.transport.write(answer(head.partition(b"\r\n")[0]))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FakeSesProtocol, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_ses", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args(argv)
    try:
        asyncio.run(serve(arguments.host, arguments.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
