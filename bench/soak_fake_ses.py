"""A hostile fake of the SES v2 send API for the soak benchmark (stdlib only, own process).

Unlike ``bench.fake_ses`` (built for raw speed), this one behaves like a busy SES: a fraction of
``SendEmail`` calls is throttled (429 ``TooManyRequestsException``), every call takes a random
latency, and it remembers how many times each recipient was accepted, so the soak can count
duplicate sends exactly.

* ``POST /v2/email/outbound-emails``: 200 ``{"MessageId": "soak-<n>"}`` or 429;
* ``POST /v2/email/outbound-bulk-emails`` (``SendBulkEmail``): the same 429 for the whole call,
  or one result per entry, in order: ``SUCCESS`` with its own message id, or, for a fraction
  ``--entry-throttle`` of the entries, ``ACCOUNT_THROTTLED``;
* ``GET /v2/email/account``: a healthy account;
* ``GET /_soak/stats``: ``{"accepted", "throttled", "recipients", "duplicates",
  "send_email_calls", "send_bulk_email_calls", "bulk_entries"}`` (calls received; entries of
  the bulk calls answered, not throttled as a whole).

Run: ``python -m bench.soak_fake_ses --throttle 0.1 --min-latency 0.005 --max-latency 0.05``;
it prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence

from bench.fake_ses import ACCOUNT


class State:
    def __init__(
        self, throttle: float, min_latency: float, max_latency: float, entry_throttle: float = 0
    ) -> None:
        self.throttle = throttle
        self.entry_throttle = entry_throttle
        self.min_latency = min_latency
        self.max_latency = max_latency
        self.accepted = 0
        self.throttled = 0
        #: Calls received, throttled or not: ``SendEmail`` and ``SendBulkEmail``.
        self.send_email_calls = 0
        self.send_bulk_email_calls = 0
        #: Entries of the bulk calls that were answered (not throttled as a whole call).
        self.bulk_entries = 0
        self.recipients: Counter[str] = Counter()
        self.random = random.Random(7)


def http(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


THROTTLED = http("429 Too Many Requests", b'{"message": "Maximum sending rate exceeded."}').replace(
    b"\r\n\r\n", b"\r\nx-amzn-ErrorType: TooManyRequestsException\r\n\r\n", 1
)


def bulk_results(state: State, body: bytes) -> dict[str, list[dict[str, str]]]:
    """One result per entry of a ``SendBulkEmail`` request, in order; accepted recipients are
    counted like ``SendEmail``'s."""
    results = []
    entries = json.loads(body)["BulkEmailEntries"]
    state.bulk_entries += len(entries)
    for entry in entries:
        if state.random.random() < state.entry_throttle:
            state.throttled += 1
            results.append({"Status": "ACCOUNT_THROTTLED", "Error": "Maximum sending rate"})
            continue
        state.accepted += 1
        state.recipients[entry["Destination"]["ToAddresses"][0]] += 1
        results.append({"Status": "SUCCESS", "MessageId": f"soak-{state.accepted}"})
    return {"BulkEmailEntryResults": results}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: State) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            request_line = head.split(b"\r\n", 1)[0]
            if request_line.startswith(b"POST /v2/email/outbound-bulk-emails"):
                state.send_bulk_email_calls += 1
                await asyncio.sleep(state.random.uniform(state.min_latency, state.max_latency))
                if state.random.random() < state.throttle:
                    state.throttled += 1
                    writer.write(THROTTLED)
                else:
                    writer.write(http("200 OK", json.dumps(bulk_results(state, body)).encode()))
            elif request_line.startswith(b"POST /v2/email/outbound-emails"):
                state.send_email_calls += 1
                await asyncio.sleep(state.random.uniform(state.min_latency, state.max_latency))
                if state.random.random() < state.throttle:
                    state.throttled += 1
                    writer.write(THROTTLED)
                else:
                    state.accepted += 1
                    recipient = json.loads(body)["Destination"]["ToAddresses"][0]
                    state.recipients[recipient] += 1
                    writer.write(
                        http("200 OK", json.dumps({"MessageId": f"soak-{state.accepted}"}).encode())
                    )
            elif request_line.startswith(b"GET /v2/email/account"):
                writer.write(http("200 OK", ACCOUNT))
            elif request_line.startswith(b"GET /_soak/stats"):
                duplicates = sum(n - 1 for n in state.recipients.values() if n > 1)
                writer.write(
                    http(
                        "200 OK",
                        json.dumps(
                            {
                                "accepted": state.accepted,
                                "throttled": state.throttled,
                                "recipients": len(state.recipients),
                                "duplicates": duplicates,
                                "send_email_calls": state.send_email_calls,
                                "send_bulk_email_calls": state.send_bulk_email_calls,
                                "bulk_entries": state.bulk_entries,
                            }
                        ).encode(),
                    )
                )
            else:
                writer.write(http("404 Not Found", b'{"message": "not here"}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, state: State) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, state), "127.0.0.1", port, backlog=1024
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--throttle", type=float, default=0.1)
    parser.add_argument("--min-latency", type=float, default=0.005)
    parser.add_argument("--max-latency", type=float, default=0.05)
    parser.add_argument(
        "--entry-throttle",
        type=float,
        default=0.0,
        help="fraction of bulk entries answered ACCOUNT_THROTTLED",
    )
    arguments = parser.parse_args(argv)
    state = State(
        arguments.throttle, arguments.min_latency, arguments.max_latency, arguments.entry_throttle
    )
    try:
        asyncio.run(serve(arguments.port, state))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
