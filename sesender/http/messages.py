"""``POST /v1/messages`` (submit) and ``GET /v1/messages/{request_id}`` (one email's story)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, TypeVarTuple, Unpack

import trio
from quart import Blueprint, Response, request

from sesender.api_keys import Principal
from sesender.errors import ApiError, StoreUnavailable
from sesender.http.auth import current_principal
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
from sesender.models import IdempotencyRecord, NewIdempotencyKey, NewMessage, Scope, Submission
from sesender.senders import SenderPolicy, bare_address, key_allows

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


def parse_and_digest(raw: bytes, *, digest: bool = True) -> tuple[Any, bytes]:
    """The parsed body, and its digest when ``digest`` (only an ``Idempotency-Key`` needs it:
    for 10,000 recipients with merge data it costs about 10 ms)."""
    payload = parse_json(raw)
    return payload, body_digest(payload) if digest else b""


@messages_blueprint.post("/v1/messages")
async def submit_messages() -> Response:
    started = time.perf_counter()
    context = app_context()
    require_json()
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    key = request.headers.get("Idempotency-Key")
    payload, digest = await off_the_loop(
        len(raw), functools.partial(parse_and_digest, raw, digest=key is not None)
    )
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

    aws = context.config.backend.aws
    policy = SenderPolicy(aws.from_email, aws.allowed_senders)
    parsed = await off_the_loop(
        len(raw),
        functools.partial(
            parse_submission,
            payload,
            max_recipients=context.config.server.max_recipients_per_request,
            timezone=context.config.pipeline.schedule_timezone,
            unsubscribe_available=context.config.feedback.unsubscribe_enabled,
            senders=policy,
            track_opens=context.config.tracking.open_tracking_enabled,
            track_clicks=context.config.tracking.track_clicks,
            public_url=context.config.server.public_url,
        ),
    )
    principal = current_principal()
    if principal.senders is not None:
        check_key_senders(principal, parsed.messages, policy)
    due = due_at_ms(parsed.scheduled_at, now_ms)
    # As the original: ``scheduled`` says a non-empty ``scheduled_at`` was given, even a past one
    # (its README posts 2024-01-01 and shows true); ``due_at`` says when sending becomes due.
    scheduled = parsed.scheduled_at is not None
    waits = due > now_ms
    body: dict[str, Any] = {
        "total": parsed.total,
        "success": parsed.accepted,
        "errors": parsed.rejected_count,
        "duration_ms": 0,
        "scheduled": scheduled,
        "due_at": iso(max(due, now_ms)),
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
            Submission(
                messages=parsed.messages,
                due_at_ms=due,
                created_at_ms=now_ms,
                api_key_id=principal.key_id,
            ),
            idempotency=new_key,
            idempotency_since_ms=since_ms,
        )
    except StoreUnavailable as exc:
        raise ApiError(503, f"Storage unavailable, nothing was stored: {exc}") from exc
    if receipt.replayed is not None:
        return replay(receipt.replayed, digest)
    if receipt.stored and not waits:
        context.pipeline.notify_submitted()
    if receipt.response is not None:
        return json_response(json.loads(receipt.response))  # what a replay will return
    body["duration_ms"] = elapsed_ms(started)
    return json_response(with_first_request_id(body, receipt.first_request_id))


def check_key_senders(
    principal: Principal, messages: Sequence[NewMessage], policy: SenderPolicy
) -> None:
    """403 (nothing stored) when a message's sender is not one the key is limited to."""
    for index, message in enumerate(messages):
        address = policy.default_address if message.sender is None else bare_address(message.sender)
        if not key_allows(principal.senders, address):
            raise ApiError(
                403,
                f"messages[{index}]: this API key ({principal.name!r}) may not send from"
                f" {address!r}",
            )


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
    store = app_context().store
    detail = await store.request_detail(request_id) if request_id < 2**63 else None
    principal = current_principal()
    if detail is not None and not (
        principal.has(Scope.READ) or detail.api_key_id == (principal.key_id)
    ):
        detail = None  # a send-only key reads its own emails; the others do not exist for it
    if detail is None:
        if request_id < 2**63 and await store.was_pruned(request_id):
            raise ApiError(
                410,
                f"Email {request_id} was deleted by the retention policy (RETENTION_DAYS);"
                " its topic's statistics still count it",
            )
        raise ApiError(404, f"No email with request id {request_id}")
    return json_response(
        {
            "request_id": detail.request_id,
            "topic_id": detail.topic_id,
            "email": detail.email,
            "from": detail.sender or app_context().config.backend.aws.from_email,
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
