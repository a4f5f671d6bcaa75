"""Helpers for the SES feedback end-to-end tests: loopback HTTP servers, SNS minting, moto SES.

- :class:`LoopbackServer`: a stdlib ``ThreadingHTTPServer`` on a loopback address and a free port,
  in a thread, that records every request it gets. :func:`certificate_server` serves the test
  certificate at :data:`CERT_PATH` (the service fetches it as the ``SigningCertURL``);
  :func:`subscribe_endpoint` plays SNS's ``SubscribeURL``, answering a confirmation document.
- :class:`SnsMinter`: signs SNS messages with the test key
  (``tests/fixtures/sns/test-signing/``) through ``sesender.feedback.testing.SnsMessageSigner``,
  with ``SigningCertURL`` on the loopback certificate server and a current ``Timestamp``; it also
  adapts the SES event fixtures (both formats) to a real SES message id and recipient.
- :func:`moto_ses`: moto's ``ThreadedMotoServer`` on 127.0.0.1 as SES, identity created, state
  read back over HTTP (the service is another process).

The service must be started with ``SNS_CERT_URL_PATTERN=`` :data:`LOOPBACK_PATTERN`, which admits
both the certificate URL and a ``SubscribeURL`` on 127.0.0.1 (the pattern replaces the SNS host
rule for both; the ``Action=ConfirmSubscription&TopicArn=...&Token=...`` query rules still apply).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.server import ThreadedMotoServer

from sesender.feedback.testing import SnsMessageSigner
from tests.e2e.harness import ServiceProcess, base_env
from tests.fixtures import SNS_DIR, TEST_SIGNING_CERT, TEST_SIGNING_KEY

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_PATH = "/sns/SimpleNotificationService-test.pem"
#: SNS_CERT_URL_PATTERN for the service: any http URL on 127.0.0.1 (certificate and SubscribeURL).
LOOPBACK_PATTERN = r"http://127\.0\.0\.1:\d+/.*"
REGION = "us-east-1"
SENDER = "news@example.com"
MESSAGE_TYPE_HEADER = "x-amz-sns-message-type"

SesKind = Literal["bounce", "complaint", "delivery"]
SesFormat = Literal["notification", "event"]


def iso_now() -> str:
    """The current UTC time as SNS writes it: ``2026-01-15T10:00:05.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- loopback HTTP -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request a :class:`LoopbackServer` received."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]


Reply = tuple[int, Mapping[str, str], bytes]
Responder = Callable[[Request], Reply]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def _answer(self, method: str) -> None:
        parts = urlsplit(self.path)
        request = Request(
            method=method,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={key.lower(): value for key, value in self.headers.items()},
        )
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.owner.record(request)
        status, headers, body = self.server.owner.responder(request)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read :attr:`LoopbackServer.requests` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackServer


class LoopbackServer:
    """A threaded HTTP server on ``host``:free port; records requests, answers by ``responder``."""

    def __init__(self, responder: Responder, *, host: str = "127.0.0.1") -> None:
        self.responder = responder
        self.host = host
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._server.server_port}"

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def hits(self, path: str) -> int:
        return sum(1 for request in self.requests if request.path == path)

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def certificate_server(host: str = "127.0.0.1") -> LoopbackServer:
    """Serves the test certificate at :data:`CERT_PATH`; 404 for anything else."""
    pem = TEST_SIGNING_CERT.read_bytes()

    def respond(request: Request) -> Reply:
        if request.method == "GET" and request.path == CERT_PATH:
            return 200, {"Content-Type": "application/x-pem-file"}, pem
        return 404, {"Content-Type": "text/plain"}, b"not found"

    return LoopbackServer(respond, host=host)


CONFIRMATION_XML = (
    b'<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
    b"<ConfirmSubscriptionResult><SubscriptionArn>arn:aws:sns:us-east-1:123456789012:ses-events:"
    b"2bcfbf39-05c3-41de-beaa-fcfcc21c8f55</SubscriptionArn></ConfirmSubscriptionResult>"
    b"</ConfirmSubscriptionResponse>"
)


@dataclass
class SubscribeScript:
    """What the fake SubscribeURL answers: 200 with the confirmation XML unless ``status`` or a
    ``redirect_to`` is set for a token."""

    status: dict[str, int] = field(default_factory=dict)
    redirect_to: dict[str, str] = field(default_factory=dict)


def subscribe_endpoint(
    host: str = "127.0.0.1", script: SubscribeScript | None = None
) -> LoopbackServer:
    """A fake SNS ``SubscribeURL`` endpoint: records every request, answers like SNS."""
    plan = script or SubscribeScript()

    def respond(request: Request) -> Reply:
        token = (request.query.get("Token") or [""])[0]
        if token in plan.redirect_to:
            return 302, {"Location": plan.redirect_to[token]}, b""
        status = plan.status.get(token, 200)
        return status, {"Content-Type": "text/xml"}, CONFIRMATION_XML if status == 200 else b""

    return LoopbackServer(respond, host=host)


def subscribe_url(base_url: str, *, topic_arn: str = TOPIC_ARN, token: str) -> str:
    """A SubscribeURL in SNS's shape on ``base_url``: ``/?Action=ConfirmSubscription&...``."""
    return (
        f"{base_url}/?Action=ConfirmSubscription&TopicArn={quote(topic_arn, safe=':')}"
        f"&Token={quote(token, safe='')}"
    )


# --- SNS minting ---------------------------------------------------------------------------------


def load_test_key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(TEST_SIGNING_KEY.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


_FIXTURES: Mapping[tuple[SesKind, SesFormat], str] = {
    ("bounce", "notification"): "bounce",
    ("complaint", "notification"): "complaint",
    ("delivery", "notification"): "delivery",
    ("bounce", "event"): "event_bounce",
    ("complaint", "event"): "event_complaint",
    ("delivery", "event"): "event_delivery",
}


def load_fixture(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SNS_DIR / f"{name}.json").read_text("utf-8"))
    return document


def ses_event(
    kind: SesKind,
    fmt: SesFormat,
    *,
    ses_message_id: str,
    recipient: str,
    when: str | None = None,
    tags: Mapping[str, list[str]] | None = None,
    bounce_type: str | None = None,
) -> tuple[str, str | None]:
    """The fixture's SES event for ``kind`` in format ``fmt``, about ``recipient`` and the
    SES message ``ses_message_id``, timestamps set to ``when`` (default: now). Returns the SNS
    ``Message`` text and the fixture's SNS ``Subject`` (present for event publishing)."""
    envelope = load_fixture(_FIXTURES[(kind, fmt)])
    event: dict[str, Any] = json.loads(envelope["Message"])
    stamp = when or iso_now()
    mail = event["mail"]
    mail["messageId"] = ses_message_id
    mail["destination"] = [recipient]
    mail["timestamp"] = stamp
    if tags is not None:
        mail["tags"] = {**mail.get("tags", {}), **tags}
    detail = event[kind]
    detail["timestamp"] = stamp
    if kind == "bounce":
        for item in detail["bouncedRecipients"]:
            item["emailAddress"] = recipient
            item["diagnosticCode"] = f"smtp; 550 5.1.1 <{recipient}>: user unknown"
        if bounce_type is not None:
            detail["bounceType"] = bounce_type
    elif kind == "complaint":
        for item in detail["complainedRecipients"]:
            item["emailAddress"] = recipient
    else:
        detail["recipients"] = [recipient]
    subject = envelope.get("Subject")
    return json.dumps(event), subject if isinstance(subject, str) else None


class SnsMinter:
    """Mints test-signed SNS bodies whose ``SigningCertURL`` is ``cert_url``."""

    def __init__(self, cert_url: str, *, topic_arn: str = TOPIC_ARN) -> None:
        self.signer = SnsMessageSigner(load_test_key(), cert_url=cert_url)
        self.cert_url = cert_url
        self.topic_arn = topic_arn

    def notification(
        self,
        message: str,
        *,
        subject: str | None = None,
        message_id: str | None = None,
        timestamp: str | None = None,
    ) -> bytes:
        return self.signer.notification(
            Message=message,
            Subject=subject,
            MessageId=message_id or str(uuid.uuid4()),
            Timestamp=timestamp or iso_now(),
            TopicArn=self.topic_arn,
        )

    def ses_notification(
        self,
        kind: SesKind,
        fmt: SesFormat,
        *,
        ses_message_id: str,
        recipient: str,
        message_id: str | None = None,
        **event_options: Any,
    ) -> bytes:
        """A signed Notification carrying the adapted fixture event (see :func:`ses_event`)."""
        message, subject = ses_event(
            kind, fmt, ses_message_id=ses_message_id, recipient=recipient, **event_options
        )
        return self.notification(message, subject=subject, message_id=message_id)

    def subscription_confirmation(self, subscribe: str, *, token: str) -> bytes:
        return self.signer.subscription_confirmation(
            TopicArn=self.topic_arn,
            Token=token,
            SubscribeURL=subscribe,
            MessageId=str(uuid.uuid4()),
            Timestamp=iso_now(),
        )

    def unsubscribe_confirmation(self, subscribe: str, *, token: str) -> bytes:
        document = {
            "Type": "UnsubscribeConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": self.topic_arn,
            "Message": (
                f"You have chosen to deactivate subscription to the topic {self.topic_arn}."
                "\nTo cancel this operation and restore the subscription, visit the SubscribeURL"
                " included in this message."
            ),
            "SubscribeURL": subscribe,
            "Timestamp": iso_now(),
            "SignatureVersion": "2",
            "SigningCertURL": self.cert_url,
        }
        return json.dumps(self.signer.sign(document)).encode("utf-8")


def forge(body: bytes, **changes: Any) -> bytes:
    """``body`` with fields changed but the original Signature kept."""
    document = json.loads(body)
    document.update(changes)
    return json.dumps(document).encode("utf-8")


def flip_signature(body: bytes) -> bytes:
    """``body`` with one byte of its Signature changed (still valid base64, same length)."""
    document = json.loads(body)
    signature: str = document["Signature"]
    replacement = "A" if signature[10] != "A" else "B"
    document["Signature"] = signature[:10] + replacement + signature[11:]
    return json.dumps(document).encode("utf-8")


def post_sns(
    client: httpx.Client,
    body: bytes,
    message_type: str | None = "Notification",
) -> httpx.Response:
    """POST ``body`` to the webhook as SNS does (``text/plain``, the message-type header)."""
    headers = {"Content-Type": "text/plain; charset=UTF-8"}
    if message_type is not None:
        headers[MESSAGE_TYPE_HEADER] = message_type
    return client.post("/v1/events/results", content=body, headers=headers)


def envelope_of(body: bytes) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(body)
    return document


# --- moto as SES ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotoSes:
    url: str

    def messages(self) -> list[dict[str, Any]]:
        """Every message moto's SES recorded (read over HTTP: the service is another process)."""
        state = httpx.get(f"{self.url}/moto-api/data.json", timeout=30).json()
        messages: list[dict[str, Any]] = state.get("ses", {}).get("Message", [])
        return messages

    def count_to(self) -> dict[str, int]:
        """How many messages moto recorded for each ``To`` address."""
        counts: dict[str, int] = {}
        for message in self.messages():
            for address in message.get("destinations", {}).get("ToAddresses", []):
                counts[address] = counts.get(address, 0) + 1
        return counts

    def service_env(self, **overrides: str) -> dict[str, str]:
        """The service settings that send through this moto server."""
        env = {
            "SENDER_BACKEND": "ses",
            "AWS_ENDPOINT_URL_SESV2": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
            "AWS_SES_FROM_EMAIL": SENDER,
            # moto does not implement SendBulkEmail.
            "SES_SEND_MODE": "single",
            "MAX_SEND_PER_SECOND": "100",
            # Never fetched: the SES backend refuses a loopback SERVER_URL (the pixel and the
            # unsubscribe links point there).
            "SERVER_URL": "https://sesender.example.test",
        }
        env.update(overrides)
        return env


@contextmanager
def moto_ses(identity: str = "example.com") -> Iterator[MotoSes]:
    """A moto server on 127.0.0.1 and a free port, reset, with ``identity`` created."""
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        httpx.post(f"{url}/moto-api/reset", timeout=30).raise_for_status()
        client = boto3.client(
            "sesv2",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        try:
            client.create_email_identity(EmailIdentity=identity)
        finally:
            client.close()
        yield MotoSes(url)
    finally:
        server.stop()
        werkzeug.setLevel(level)


# --- a service shared by the tests of a module ----------------------------------------------


@contextmanager
def running_service(workdir: Path, **env: str) -> Iterator[ServiceProcess]:
    """Start the service in ``workdir`` (for module-scoped fixtures); stop it gracefully after,
    requiring exit code 0, and kill it if anything went wrong."""
    workdir.mkdir(parents=True, exist_ok=True)
    service = ServiceProcess(workdir, base_env(workdir, **env)).start()
    try:
        yield service
        assert service.stop() == 0, "\n".join(service.raw_lines[-20:])
    finally:
        service.kill()
