"""A tiny, fast fake of the SES v2 HTTP API, for throughput benchmarks (stdlib only).

It answers just enough for sesender's ``ses`` backend and for boto3's ``sesv2`` client:

* ``POST /v2/email/outbound-emails`` (``SendEmail``): 200 ``{"MessageId": "fake-<n>"}``; the
  body is read and ignored (no validation, no signature check: it measures the client side)
  unless ``--reject`` or ``--record`` needs it;
* ``POST /v2/email/outbound-bulk-emails`` (``SendBulkEmail``): 200 with one
  ``BulkEmailEntryResults`` item per entry, in order (``SUCCESS`` and a message id each); when
  no option below can refuse, throttle or record an entry, the entries are counted in the body's
  bytes without parsing it (``all_entries_succeed``), as cheap as the answer can be;
* ``GET /v2/email/account`` (``GetAccount``): 200 with a plausible healthy production account;
* ``GET /_bench/stats``: 200 ``{"send_email": <calls>, "send_bulk_email": <calls>,
  "bulk_entries": <entries>, "peak_delayed": <sends>}``, for the benchmark's own checks
  (``peak_delayed``: the most sends waiting for their answer at once, with ``--latency``);
* ``GET /_bench/messages`` (with ``--record``): every message sent so far as SES would render
  it (``to``, ``subject``, ``html``, ``text``, ``headers``, ``tags``, ``message_id``, ``bulk``);
  ``?since=N`` only those after the first N, and ``&wait=SECONDS`` waits up to that long for one
  to arrive when there is none yet (a long poll: a test plays SES's feedback as messages are sent,
  without polling on a timer);
* ``POST /_bench/account`` with a JSON object: fields merged into what ``GetAccount`` answers
  from then on (``SendQuota`` merged field by field), e.g. ``{"SendingEnabled": false}``,
  ``{"EnforcementStatus": "SHUTDOWN"}`` or ``{"SendQuota": {"MaxSendRate": 5}}``; ``{}`` after
  ``POST /_bench/account/reset`` is the healthy account again;
* anything else: 404 ``NotFoundException``.

For tests: ``--unverified-sender ADDRESS`` refuses every send from ADDRESS as SES refuses an
unverified identity (``MessageRejected``, or ``MESSAGE_REJECTED`` for each bulk entry, naming it).
``--reject PREFIX`` makes every recipient whose address starts with ``PREFIX`` refused
(``MESSAGE_REJECTED`` in a bulk answer, ``400 MessageRejected`` for ``SendEmail``);
``--throttle-every N`` answers every Nth send call ``429 TooManyRequestsException``;
``--entry-throttle-every N`` answers every Nth bulk entry ``ACCOUNT_THROTTLED`` (the call itself
succeeds); ``--pause-after N`` pauses the account once N recipients were accepted: ``SendEmail``
answers ``400 SendingPausedException``, every bulk entry ``ACCOUNT_SENDING_PAUSED`` and
``GetAccount`` ``"SendingEnabled": false`` until ``POST /_bench/resume`` (``GET /_bench/account``
says whether it is paused and which recipients the pause refused); ``--latency SECONDS`` (or
``--latency-ms N``) answers every send that long after reading it, like a provider's round trip
(what it accepts is recorded at once: a client killed while waiting leaves sent emails it never
heard about). A bulk template is rendered the way SES
documents simple substitution: ``{{name}}`` replaced by the entry's value for ``name`` (then the
defaults), as given.

One asyncio event loop in one thread, HTTP/1.1 keep-alive, no per-request allocation beyond the
response bytes: far cheaper per request than the boto3 client calling it, so on a shared machine
it takes as little CPU from the client as a fake can. Run it as its own process::

    python -m bench.fake_ses --port 0      # prints "PORT <n>" once listening, serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


THROTTLED = b'{"message": "Maximum sending rate exceeded."}'
REJECTED = b'{"message": "Email address is not verified."}'
PAUSED = b'{"message": "Sending paused for this account."}'
#: How each entry of a ``SendBulkEmail`` body begins its destination (see all_entries_succeed).
ENTRY_KEY = b'"Destination":'
PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")


@dataclass
class Settings:
    reject_prefix: str | None = None
    throttle_every: int = 0
    entry_throttle_every: int = 0
    pause_after: int | None = None
    record: bool = False
    #: Seconds before each answer to a send (``--latency``), like a real provider's round trip.
    latency: float = 0.0
    #: Senders SES refuses as not verified (``--unverified-sender``), compared in lower case.
    unverified_senders: tuple[str, ...] = ()


@dataclass
class State:
    settings: Settings = field(default_factory=Settings)
    send_email: int = 0
    send_bulk_email: int = 0
    bulk_entries: int = 0
    message_ids: int = 0
    #: Sends whose answer ``--latency`` holds back now, and the most at once so far.
    delayed: int = 0
    peak_delayed: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    paused: bool = False
    refused_while_paused: list[str] = field(default_factory=list)
    #: ``POST /_bench/account``: what GetAccount answers on top of ACCOUNT.
    account_overrides: dict[str, Any] = field(default_factory=dict)
    #: Long polls of ``/_bench/messages`` waiting for a message: (connection, since, timer).
    waiters: list[tuple[FakeSesProtocol, int, asyncio.TimerHandle]] = field(default_factory=list)

    def next_id(self) -> str:
        self.message_ids += 1
        return f"fake-{self.message_ids:016x}"

    def throttled(self) -> bool:
        every = self.settings.throttle_every
        return every > 0 and (self.send_email + self.send_bulk_email) % every == 0

    def rejected(self, address: str) -> bool:
        prefix = self.settings.reject_prefix
        return prefix is not None and address.startswith(prefix)

    def unverified(self, sender: str) -> str | None:
        """SES's refusal of an unverified sender (naming it, as SES does), or None."""
        lowered = sender.lower()
        for address in self.settings.unverified_senders:
            if address in lowered:
                return (
                    "Email address is not verified. The following identities failed the check"
                    f" in region US-EAST-1: {address}"
                )
        return None

    def every_entry_succeeds(self) -> bool:
        """Whether no setting can refuse, throttle or record an entry (a benchmark's fake)."""
        settings = self.settings
        return (
            settings.reject_prefix is None
            and not settings.unverified_senders
            and not settings.record
            and not settings.entry_throttle_every
            and settings.pause_after is None
            and not self.paused
        )

    def entry_throttled(self) -> bool:
        every = self.settings.entry_throttle_every
        return every > 0 and self.bulk_entries % every == 0

    def refused_for_pause(self, address: str) -> bool:
        """Whether the paused account refuses ``address`` (pausing it once the
        ``--pause-after`` count of accepted recipients is reached)."""
        pause_after = self.settings.pause_after
        if pause_after is not None and self.message_ids >= pause_after:
            self.paused = True
            self.settings.pause_after = None
        if self.paused:
            self.refused_while_paused.append(address)
        return self.paused

    def account(self) -> bytes:
        if not self.paused and not self.account_overrides:
            return ACCOUNT
        account = json.loads(ACCOUNT)
        for key, value in self.account_overrides.items():
            if key == "SendQuota" and isinstance(value, dict):
                account["SendQuota"].update(value)
            else:
                account[key] = value
        if self.paused:
            account["SendingEnabled"] = False
        return json.dumps(account).encode()

    def messages_since(self, since: int) -> bytes:
        return response(b"200 OK", json.dumps(self.messages[since:]).encode())

    def answer_waiters(self) -> None:
        """Answer the long polls that have a message to see now."""
        waiting = []
        for connection, since, timer in self.waiters:
            if len(self.messages) > since:
                timer.cancel()
                connection.write_if_open(self.messages_since(since))
            else:
                waiting.append((connection, since, timer))
        self.waiters = waiting


STATE = State()


def response(status: bytes, body: bytes, *extra: bytes) -> bytes:
    headers = [
        b"HTTP/1.1 " + status,
        b"Content-Type: application/json",
        b"Content-Length: " + str(len(body)).encode(),
        b"x-amzn-RequestId: 00000000-0000-4000-8000-000000000000",
        *extra,
    ]
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


def error(status: bytes, code: bytes, body: bytes) -> bytes:
    return response(status, body, b"x-amzn-ErrorType: " + code)


def send_email(body: bytes) -> bytes:
    STATE.send_email += 1
    if STATE.throttled():
        return error(b"429 Too Many Requests", b"TooManyRequestsException", THROTTLED)
    settings = STATE.settings
    plain = settings.pause_after is None and not STATE.paused
    checks = settings.reject_prefix is not None or settings.unverified_senders
    if not checks and not settings.record and plain:
        return response(b"200 OK", b'{"MessageId": "%s"}' % STATE.next_id().encode())
    request = json.loads(body)
    (to,) = request["Destination"]["ToAddresses"]
    if STATE.refused_for_pause(to):
        return error(b"400 Bad Request", b"SendingPausedException", PAUSED)
    refusal = STATE.unverified(request["FromEmailAddress"])
    if refusal is not None:
        return error(
            b"400 Bad Request", b"MessageRejected", json.dumps({"message": refusal}).encode()
        )
    if STATE.rejected(to):
        return error(b"400 Bad Request", b"MessageRejected", REJECTED)
    message_id = STATE.next_id()
    if settings.record:
        simple = request["Content"]["Simple"]
        STATE.messages.append(
            {
                "message_id": message_id,
                "at": time.time(),
                "bulk": False,
                "from": request["FromEmailAddress"],
                "reply_to": request.get("ReplyToAddresses", []),
                "to": to,
                "subject": simple["Subject"]["Data"],
                "html": simple["Body"]["Html"]["Data"],
                "text": simple["Body"].get("Text", {}).get("Data"),
                "headers": simple.get("Headers", []),
                "tags": request.get("EmailTags", []),
            }
        )
    return response(b"200 OK", json.dumps({"MessageId": message_id}).encode())


def all_entries_succeed(body: bytes) -> bytes:
    """The answer to a bulk call whose every entry succeeds, without parsing the request: one
    ``SUCCESS`` per entry, in order. The entries are counted by their ``"Destination":`` keys:
    in JSON a string's own quotes are escaped, so those bytes occur only where an entry's
    destination is (the entries hold the only destinations of a ``SendBulkEmail`` request).
    A benchmark's fake then costs about a tenth of the CPU per recipient of a parsed call."""
    count = body.count(ENTRY_KEY)
    STATE.bulk_entries += count
    results = b",".join(
        b'{"Status":"SUCCESS","MessageId":"%s"}' % STATE.next_id().encode() for _ in range(count)
    )
    return response(b"200 OK", b'{"BulkEmailEntryResults":[' + results + b"]}")


def substitute(template: str, values: dict[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), "")), template)


def send_bulk_email(body: bytes) -> bytes:
    STATE.send_bulk_email += 1
    if STATE.throttled():
        return error(b"429 Too Many Requests", b"TooManyRequestsException", THROTTLED)
    if STATE.every_entry_succeeds():
        return all_entries_succeed(body)
    request = json.loads(body)
    template = request["DefaultContent"]["Template"]
    content = template.get("TemplateContent", {})
    defaults = json.loads(template.get("TemplateData") or "{}")
    refusal = STATE.unverified(request["FromEmailAddress"])
    results = []
    for entry in request["BulkEmailEntries"]:
        STATE.bulk_entries += 1
        (to,) = entry["Destination"]["ToAddresses"]
        if refusal is not None:
            results.append({"Status": "MESSAGE_REJECTED", "Error": refusal})
            continue
        if STATE.refused_for_pause(to):
            results.append(
                {"Status": "ACCOUNT_SENDING_PAUSED", "Error": "Sending paused for this account."}
            )
            continue
        if STATE.rejected(to):
            results.append(
                {"Status": "MESSAGE_REJECTED", "Error": "Email address is not verified."}
            )
            continue
        if STATE.entry_throttled():
            results.append(
                {"Status": "ACCOUNT_THROTTLED", "Error": "Maximum sending rate exceeded."}
            )
            continue
        message_id = STATE.next_id()
        results.append({"Status": "SUCCESS", "MessageId": message_id})
        if STATE.settings.record:
            replacement = entry.get("ReplacementEmailContent", {}).get("ReplacementTemplate", {})
            values = {**defaults, **json.loads(replacement.get("ReplacementTemplateData") or "{}")}
            STATE.messages.append(
                {
                    "message_id": message_id,
                    "at": time.time(),
                    "bulk": True,
                    "call": STATE.send_bulk_email,
                    "from": request["FromEmailAddress"],
                    "reply_to": request.get("ReplyToAddresses", []),
                    "to": to,
                    "subject": substitute(content.get("Subject", ""), values),
                    "html": substitute(content.get("Html", ""), values),
                    "text": substitute(content.get("Text", ""), values),
                    "headers": entry.get("ReplacementHeaders", template.get("Headers", [])),
                    "tags": entry.get("ReplacementTags", request.get("DefaultEmailTags", [])),
                }
            )
    return response(b"200 OK", json.dumps({"BulkEmailEntryResults": results}).encode())


def answer(request_line: bytes, body: bytes) -> bytes:
    method, _, rest = request_line.partition(b" ")
    path = rest.partition(b" ")[0].partition(b"?")[0]
    if method == b"POST" and path == b"/v2/email/outbound-emails":
        return send_email(body)
    if method == b"POST" and path == b"/v2/email/outbound-bulk-emails":
        return send_bulk_email(body)
    if method == b"GET" and path == b"/v2/email/account":
        return response(b"200 OK", STATE.account())
    if method == b"GET" and path == b"/_bench/account":
        account = {"paused": STATE.paused, "refused": STATE.refused_while_paused}
        return response(b"200 OK", json.dumps(account).encode())
    if method == b"POST" and path == b"/_bench/account":
        STATE.account_overrides.update(json.loads(body or b"{}"))
        return response(b"200 OK", STATE.account())
    if method == b"POST" and path == b"/_bench/account/reset":
        STATE.account_overrides.clear()
        return response(b"200 OK", STATE.account())
    if method == b"POST" and path == b"/_bench/resume":
        STATE.paused = False
        return response(b"200 OK", b'{"paused": false}')
    if method == b"GET" and path == b"/_bench/stats":
        stats = {
            "send_email": STATE.send_email,
            "send_bulk_email": STATE.send_bulk_email,
            "bulk_entries": STATE.bulk_entries,
            "peak_delayed": STATE.peak_delayed,
        }
        return response(b"200 OK", json.dumps(stats).encode())
    if method == b"GET" and path == b"/_bench/messages":
        return response(b"200 OK", json.dumps(STATE.messages).encode())
    return error(b"404 Not Found", b"NotFoundException", NOT_FOUND)


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
            body = bytes(buffer[head_end + 4 : end])
            del buffer[:end]
            assert self.transport is not None
            request_line = head.partition(b"\r\n")[0]
            if request_line.startswith(b"GET /_bench/messages?"):
                self.long_poll(request_line)
                continue
            reply = answer(request_line, body)
            if STATE.waiters and b"/outbound-" in request_line:
                STATE.answer_waiters()
            if STATE.settings.latency and b"/outbound-" in request_line:
                # boto3 sends one request at a time per connection, so answers keep their order.
                STATE.delayed += 1
                STATE.peak_delayed = max(STATE.peak_delayed, STATE.delayed)
                asyncio.get_running_loop().call_later(
                    STATE.settings.latency, self.answer_late, reply
                )
            else:
                self.transport.write(reply)

    def answer_late(self, reply: bytes) -> None:
        STATE.delayed -= 1
        self.write_if_open(reply)

    def long_poll(self, request_line: bytes) -> None:
        """``GET /_bench/messages?since=N[&wait=SECONDS]``: the messages after the first N, at
        once if there are any, else when one arrives or the wait is over (then ``[]``)."""
        target = request_line.split(b" ")[1].decode()
        query = parse_qs(urlsplit(target).query)
        since = int(query.get("since", ["0"])[0])
        wait = float(query.get("wait", ["0"])[0])
        if wait <= 0 or len(STATE.messages) > since:
            self.write_if_open(STATE.messages_since(since))
            return
        loop = asyncio.get_running_loop()

        def give_up() -> None:
            STATE.waiters = [w for w in STATE.waiters if w[0] is not self or w[1] != since]
            self.write_if_open(STATE.messages_since(since))

        STATE.waiters.append((self, since, loop.call_later(wait, give_up)))

    def write_if_open(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)


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
    parser.add_argument("--reject", metavar="PREFIX", help="refuse recipients starting with it")
    parser.add_argument("--throttle-every", type=int, default=0, metavar="N")
    parser.add_argument("--entry-throttle-every", type=int, default=0, metavar="N")
    parser.add_argument("--pause-after", type=int, metavar="N", help="pause the account after N")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, metavar="N", help="--latency in milliseconds"
    )
    parser.add_argument("--record", action="store_true", help="keep messages for /_bench/messages")
    parser.add_argument(
        "--unverified-sender",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="refuse sends from ADDRESS as SES refuses an unverified identity (repeatable)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds before answering each send"
    )
    arguments = parser.parse_args(argv)
    STATE.settings = Settings(
        reject_prefix=arguments.reject,
        throttle_every=arguments.throttle_every,
        entry_throttle_every=arguments.entry_throttle_every,
        pause_after=arguments.pause_after,
        record=arguments.record,
        latency=arguments.latency or arguments.latency_ms / 1000,
        unverified_senders=tuple(a.lower() for a in arguments.unverified_sender),
    )
    try:
        asyncio.run(serve(arguments.host, arguments.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
