"""A lean webhook receiver for ``bench/webhook_delivery.py``: asyncio, HTTP/1.1 keep-alive,
every delivery verified with the ``standardwebhooks`` package.

Run as its own process (``python -m bench.webhook_receiver``); it prints ``{"port": N}`` once
listening. ``PUT /secrets`` (JSON ``{path: secret}``) tells it the endpoints' secrets; a POST to
a known path is verified and counted (204), one that does not verify is counted as rejected (400);
``GET /stats`` answers the counts, the number of distinct event ids, and the times of the first
and last delivery. It parses only what a benchmark needs (request line, Content-Length), so that
the receiver costs little next to the service being measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

RESPONSE_204 = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class Receiver:
    def __init__(self) -> None:
        self.webhooks: dict[str, Webhook] = {}
        self.delivered = 0
        self.rejected = 0
        self.event_ids: set[str] = set()
        self.types: dict[str, int] = {}
        self.first: float | None = None
        self.last: float | None = None

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "rejected": self.rejected,
            "distinct": len(self.event_ids),
            "types": self.types,
            "first": self.first,
            "last": self.last,
            "now": time.monotonic(),
        }

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "GET" and path == "/stats":
            return _json(200, self.stats())
        if method == "PUT" and path == "/secrets":
            for endpoint_path, secret in json.loads(body).items():
                self.webhooks[endpoint_path] = Webhook(secret)
            return _json(200, {"ok": True})
        webhook = self.webhooks.get(path)
        if method != "POST" or webhook is None:
            return _json(404, {"error": "unknown path"})
        try:
            payload = webhook.verify(body, headers)
        except WebhookVerificationError:
            self.rejected += 1
            return _json(400, {"error": "not verified"})
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.delivered += 1
        self.event_ids.add(headers["webhook-id"])
        kind = payload["type"]
        self.types[kind] = self.types.get(kind, 0) + 1
        return RESPONSE_204

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                writer.write(self.handle(method, path, headers, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _json(status: int, document: Any) -> bytes:
    body = json.dumps(document).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def main() -> None:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
