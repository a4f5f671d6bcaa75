"""A webhook receiver on loopback for the end-to-end tests, verifying with ``standardwebhooks``.

:class:`WebhookReceiver` is a threaded stdlib HTTP server; each endpoint is a path with its own
behaviour (:class:`Behaviour`: answer 2xx, answer a status for the first N deliveries, hang until
released, redirect) and, once known, its secret. Every POST is verified with the
``standardwebhooks`` package, never with sesender's code: a delivery that does not verify is
recorded in :attr:`WebhookReceiver.rejected` and answered 400 (a test asserts there are none).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Behaviour:
    #: the status answered once the failures below are used up.
    status: int = 204
    #: answer ``failure_status`` to the first ``failures`` deliveries.
    failures: int = 0
    failure_status: int = 500
    #: hold every request until :attr:`release` is set (a receiver that hangs).
    hang: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    #: answer 302 to this location instead.
    redirect_to: str | None = None


@dataclass(frozen=True)
class Delivery:
    path: str
    event_id: str
    event_type: str
    payload: dict[str, Any]
    signatures: int


class WebhookReceiver:
    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.secrets: dict[str, str] = {}
        self.deliveries: list[Delivery] = []
        self.rejected: list[str] = []
        self.posts: Counter[str] = Counter()
        self.hanging = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        with self._lock:
            self.posts[path] += 1
            behaviour = self.behaviours.get(path, Behaviour())
            secret = self.secrets.get(path)
            failing = behaviour.failures > 0
            if failing:
                behaviour.failures -= 1
        if behaviour.hang:
            with self._lock:
                self.hanging += 1
            behaviour.release.wait(timeout=120)
            with self._lock:
                self.hanging -= 1
        if behaviour.redirect_to is not None:
            self._answer(handler, 302, b"", {"Location": behaviour.redirect_to})
            return
        headers = {key.lower(): value for key, value in handler.headers.items()}
        try:
            if secret is None:
                raise WebhookVerificationError("no secret known for this path yet")
            payload = Webhook(secret).verify(body, headers)
        except WebhookVerificationError as exc:
            with self._lock:
                self.rejected.append(f"{path}: {exc}")
            self._answer(handler, 400, b"not verified")
            return
        if failing:
            self._answer(handler, behaviour.failure_status, b"receiver is failing on purpose")
            return
        delivery = Delivery(
            path=path,
            event_id=headers["webhook-id"],
            event_type=payload["type"],
            payload=payload,
            signatures=len(headers["webhook-signature"].split(" ")),
        )
        with self._lock:
            self.deliveries.append(delivery)
        self._answer(handler, behaviour.status, b"")

    @staticmethod
    def _answer(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            handler.send_response(status)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the service gave up on this request (its timeout): nothing to answer

    def received(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.path == path]

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        for behaviour in self.behaviours.values():
            behaviour.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def ses_message(event_type: str, *, request_id: int, recipient: str, **detail: Any) -> str:
    """An SES event-publishing document (``Open``, ``Click``) for the email ``request_id``,
    matched by sesender's request-id tag (its SES message id is not needed)."""
    key = event_type.lower()
    stamp = "2026-01-15T10:00:00.000Z"
    document = {
        "eventType": event_type,
        "mail": {
            "timestamp": stamp,
            "messageId": f"unknown-{request_id}-{key}",
            "destination": [recipient],
            "tags": {"sesender_request_id": [str(request_id)]},
        },
        key: {"timestamp": stamp, **detail},
    }
    return json.dumps(document)
