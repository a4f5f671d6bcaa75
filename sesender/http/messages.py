"""``POST /v1/messages`` (submit) and ``GET /v1/messages/{request_id}`` (one email's story)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple, Unpack

import trio
from quart import Blueprint, Response, request

from sesender.errors import ApiError, StoreUnavailable
from sesender.http.context import app_context
from sesender.http.request_body import require_json
from sesender.http.responses import iso, json_response
from sesender.http.submission import (
    IDEMPOTENCY_WINDOW,
    body_digest,
    due_at_ms,
    parse_json,
    parse_submission,
)
from sesender.models import IdempotencyRecord, NewIdempotencyKey, Submission

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

messages_blueprint = Blueprint("messages", __name__)

MAX_IDEMPOTENCY_KEY = 255


#: Bodies from this size on are parsed and validated in a worker thread: 10,000 recipients take
#: about 50 ms of CPU, during which the event loop would serve nothing else. The thread still
#: holds the GIL while it works, but the loop gets its turn every switch interval (5 ms), so other
#: requests and the pipeline keep moving; small bodies stay on the loop (a thread hop costs more).
OFF_LOOP_BYTES = 64 * 1024
#: Large bodies parsed at once (per trio run): more would only queue for the same GIL while
#: holding memory.
_parsing: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("parsing")


def parsing_limiter() -> trio.CapacityLimiter:
    try:
        return _parsing.get()
    except LookupError:
        limiter = trio.CapacityLimiter(2)
        _parsing.set(limiter)
        return limiter


async def off_the_loop(size: int, function: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """Run ``function`` in a worker thread when the body is large, else right here."""
    if size < OFF_LOOP_BYTES:
        return function(*args)
    return await trio.to_thread.run_sync(function, *args, limiter=parsing_limiter())


def parse_and_digest(raw: bytes) -> tuple[Any, bytes]:
    payload = parse_json(raw)
    return payload, body_digest(payload)


@messages_blueprint.post("/v1/messages")
async def submit_messages() -> Response:
    started = time.perf_counter()
    context = app_context()
    require_json()
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    payload, digest = await off_the_loop(len(raw), parse_and_digest, raw)
    key = request.headers.get("Idempotency-Key")
    if key is not None and (
        not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable()
    ):
        raise ApiError(
            400, f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} printable characters"
        )
    now_ms = context.now_ms()
    since_ms = now_ms - int(IDEMPOTENCY_WINDOW.total_seconds() * 1000)
    if key is not None:
        existing = await context.store.find_idempotency(key, since_ms=since_ms)
        if existing is not None:
            return replay(existing, digest)

    parsed = await off_the_loop(
        len(raw),
        functools.partial(
            parse_submission,
            payload,
            max_recipients=context.config.server.max_recipients_per_request,
            timezone=context.config.pipeline.schedule_timezone,
            unsubscribe_available=context.config.feedback.unsubscribe_enabled,
            track_opens=context.config.tracking.open_tracking_enabled,
            track_clicks=context.config.tracking.track_clicks,
            public_url=context.config.server.public_url,
        ),
    )
    due = due_at_ms(parsed.scheduled_at, now_ms)
    scheduled = parsed.scheduled_at is not None and due > now_ms
    body: dict[str, Any] = {
        "total": parsed.total,
        "success": parsed.accepted,
        "errors": parsed.rejected_count,
        "duration_ms": 0,
        "scheduled": scheduled,
        "duplicates": parsed.duplicates,
        "rejected": [{"email": r.email, "reason": r.reason} for r in parsed.rejected],
    }
    if parsed.scheduled_at is not None:
        body["scheduled_at"] = parsed.scheduled_at.isoformat()
    body["duration_ms"] = elapsed_ms(started)
    new_key = None
    if key is not None:
        new_key = NewIdempotencyKey(
            key=key,
            body_digest=digest,
            created_at_ms=now_ms,
            response_for=functools.partial(stored_response, dict(body)),
        )
    try:
        receipt = await context.store.submit(
            Submission(messages=parsed.messages, due_at_ms=due, created_at_ms=now_ms),
            idempotency=new_key,
            idempotency_since_ms=since_ms,
        )
    except StoreUnavailable as exc:
        raise ApiError(503, f"Storage unavailable, nothing was stored: {exc}") from exc
    if receipt.replayed is not None:
        return replay(receipt.replayed, digest)
    if receipt.stored and not scheduled:
        context.pipeline.notify_submitted()
    if receipt.response is not None:
        return json_response(json.loads(receipt.response))  # what a replay will return
    body["duration_ms"] = elapsed_ms(started)
    return json_response(with_first_request_id(body, receipt.first_request_id))


def with_first_request_id(body: dict[str, Any], first_request_id: int | None) -> dict[str, Any]:
    """The submit response: ``body``, with ``first_request_id`` when anything was stored."""
    if first_request_id is None:
        return body
    return {**body, "first_request_id": first_request_id}


def stored_response(body: dict[str, Any], first_request_id: int | None) -> str:
    """The response saved with an ``Idempotency-Key`` (and replayed word for word): built by
    the store's transaction through this function, the one place that knows the first id."""
    return json.dumps(with_first_request_id(body, first_request_id))


def replay(record: IdempotencyRecord, digest: bytes) -> Response:
    if record.body_digest != digest:
        raise ApiError(409, "Idempotency-Key was already used with a different body")
    response = json_response(json.loads(record.response))
    response.headers["Idempotent-Replayed"] = "true"
    return response


def elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


@messages_blueprint.get("/v1/messages/<int:request_id>")
async def message_detail(request_id: int) -> Response:
    detail = await app_context().store.request_detail(request_id) if request_id < 2**63 else None
    if detail is None:
        raise ApiError(404, f"No email with request id {request_id}")
    return json_response(
        {
            "request_id": detail.request_id,
            "topic_id": detail.topic_id,
            "email": detail.email,
            "status": detail.status.label,
            "attempts": detail.attempts,
            "message_id": detail.message_id,
            "error": detail.error,
            "failure_kind": detail.failure_kind.value if detail.failure_kind else None,
            "created_at": iso(detail.created_at_ms),
            "updated_at": iso(detail.updated_at_ms),
            "due_at": iso(detail.due_at_ms),
            "sent_at": iso(detail.sent_at_ms),
            "events": [
                {
                    "type": event.event_type,
                    "count": event.count,
                    "first_at": iso(event.first_at_ms),
                    "last_at": iso(event.last_at_ms),
                    "detail": event.detail,
                }
                for event in detail.events
            ],
        }
    )
