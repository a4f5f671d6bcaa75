"""The webhook endpoints API: create (the secret is shown once), list, read, change, delete,
rotate the secret, send a test event, list attempts and events, resend a finished event.

A URL is checked here (http or https, and every address its host resolves to must be public unless
``WEBHOOK_ALLOW_PRIVATE``) and again by the deliverer at every connection. No answer but the one
that creates a secret (creation, rotation) ever contains a secret.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from quart import Blueprint, Response, request

from sesender.errors import ApiError
from sesender.http.context import app_context
from sesender.http.request_body import require_json
from sesender.http.responses import iso, json_response
from sesender.http.submission import is_unicode, parse_json
from sesender.webhooks.events import EVENT_TYPES, TEST_EVENT_TYPE, iso_utc
from sesender.webhooks.guard import url_problem
from sesender.webhooks.models import Endpoint, EndpointChanges, EventState, NewEndpoint
from sesender.webhooks.signing import new_secret

webhooks_blueprint = Blueprint("webhooks", __name__)

MAX_URL = 2000
MAX_DESCRIPTION = 500
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: How long the previous secret keeps signing after a rotation.
ROTATION_GRACE_MS = 24 * 3_600_000
#: How far back ``GET .../attempts`` looks.
ATTEMPTS_WINDOW_MS = 7 * 86_400_000


def endpoint_status(endpoint: Endpoint) -> str:
    if not endpoint.enabled:
        return "disabled"
    return "failing" if endpoint.failing_since_ms is not None else "healthy"


def endpoint_json(endpoint: Endpoint, now_ms: int) -> dict[str, Any]:
    grace = endpoint.previous_secret_until_ms
    return {
        "id": endpoint.endpoint_id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "enabled": endpoint.enabled,
        "status": endpoint_status(endpoint),
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": iso(endpoint.failing_since_ms),
        "last_error": endpoint.last_error,
        "last_error_at": iso(endpoint.last_error_at_ms),
        "last_attempt_at": iso(endpoint.last_attempt_at_ms),
        "last_success_at": iso(endpoint.last_success_at_ms),
        "pending": endpoint.pending,
        "failed": endpoint.failed,
        "previous_secret_expires_at": iso(grace) if grace is not None and grace > now_ms else None,
        "created_at": iso(endpoint.created_at_ms),
        "updated_at": iso(endpoint.updated_at_ms),
    }


async def _body() -> dict[str, Any]:
    require_json()
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    payload = parse_json(raw)
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object")
    return payload


def _check_fields(payload: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ApiError(400, f"Unknown field(s): {', '.join(unknown)[:200]}")


async def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "url must be a non-empty string")
    url = value.strip()
    if len(url) > MAX_URL or not url.isprintable() or not url.isascii():
        raise ApiError(400, f"url must be printable ASCII of at most {MAX_URL} characters")
    problem = await url_problem(url, app_context().webhook_policy)
    if problem is not None:
        raise ApiError(400, problem)
    return url


def _event_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "event_types must be a non-empty list of event type names")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise ApiError(
            400,
            f"Unknown event type(s): {', '.join(unknown)[:200]}; known: {', '.join(EVENT_TYPES)}",
        )
    return tuple(t for t in EVENT_TYPES if t in value)


def _description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION or not is_unicode(value):
        raise ApiError(400, f"description must be a string of at most {MAX_DESCRIPTION}")
    return value


async def _found(endpoint_id: str) -> Endpoint:
    endpoint = await app_context().store.get_webhook(endpoint_id)
    if endpoint is None:
        raise ApiError(404, "No such webhook endpoint")
    return endpoint


def _limit() -> int:
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


@webhooks_blueprint.post("/v1/webhooks")
async def create_webhook() -> Response:
    payload = await _body()
    _check_fields(payload, frozenset({"url", "event_types", "description"}))
    event_types = _event_types(payload["event_types"]) if "event_types" in payload else EVENT_TYPES
    description = _description(payload.get("description", ""))
    url = await _url(payload.get("url"))  # last: it may resolve a name
    context = app_context()
    secret = new_secret()
    endpoint = await context.store.create_webhook(
        NewEndpoint(
            endpoint_id="ep_" + secrets.token_hex(12),
            url=url,
            event_types=event_types,
            description=description,
            secret=secret,
        ),
        now_ms=context.now_ms(),
    )
    context.webhook_refresh()
    body = endpoint_json(endpoint, context.now_ms())
    body["secret"] = secret  # shown once: never returned again
    return json_response(body, 201)


@webhooks_blueprint.get("/v1/webhooks")
async def list_webhooks() -> Response:
    context = app_context()
    endpoints = await context.store.list_webhooks()
    now = context.now_ms()
    return json_response({"webhooks": [endpoint_json(e, now) for e in endpoints]})


@webhooks_blueprint.get("/v1/webhooks/<endpoint_id>")
async def get_webhook(endpoint_id: str) -> Response:
    return json_response(endpoint_json(await _found(endpoint_id), app_context().now_ms()))


@webhooks_blueprint.patch("/v1/webhooks/<endpoint_id>")
async def update_webhook(endpoint_id: str) -> Response:
    payload = await _body()
    _check_fields(payload, frozenset({"url", "event_types", "description", "enabled"}))
    enabled = payload.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ApiError(400, "enabled must be true or false")
    await _found(endpoint_id)
    changes = EndpointChanges(
        url=await _url(payload["url"]) if "url" in payload else None,
        event_types=_event_types(payload["event_types"]) if "event_types" in payload else None,
        description=_description(payload["description"]) if "description" in payload else None,
        enabled=enabled,
    )
    context = app_context()
    endpoint = await context.store.update_webhook(endpoint_id, changes, now_ms=context.now_ms())
    if endpoint is None:
        raise ApiError(404, "No such webhook endpoint")
    context.webhook_refresh()
    return json_response(endpoint_json(endpoint, context.now_ms()))


@webhooks_blueprint.delete("/v1/webhooks/<endpoint_id>")
async def delete_webhook(endpoint_id: str) -> Response:
    context = app_context()
    if not await context.store.delete_webhook(endpoint_id):
        raise ApiError(404, "No such webhook endpoint")
    context.webhook_refresh()
    return json_response({"status": "ok", "id": endpoint_id})


@webhooks_blueprint.post("/v1/webhooks/<endpoint_id>/rotate-secret")
async def rotate_secret(endpoint_id: str) -> Response:
    context = app_context()
    now = context.now_ms()
    secret = new_secret()
    endpoint = await context.store.rotate_webhook_secret(
        endpoint_id, secret, keep_until_ms=now + ROTATION_GRACE_MS, now_ms=now
    )
    if endpoint is None:
        raise ApiError(404, "No such webhook endpoint")
    context.webhook_refresh()
    body = endpoint_json(endpoint, now)
    body["secret"] = secret  # the new secret, shown once
    return json_response(body)


@webhooks_blueprint.post("/v1/webhooks/<endpoint_id>/test")
async def send_test_event(endpoint_id: str) -> Response:
    context = app_context()
    now = context.now_ms()
    event_id = "evt_" + secrets.token_hex(16)
    detail = json.dumps({"message": "a test event from sesender", "sent_at": iso_utc(now)})
    if not await context.store.queue_webhook_event(
        endpoint_id, event_id=event_id, event_type=TEST_EVENT_TYPE, detail=detail, now_ms=now
    ):
        raise ApiError(404, "No such webhook endpoint")
    context.webhook_refresh()
    return json_response({"status": "queued", "event_id": event_id}, 202)


@webhooks_blueprint.get("/v1/webhooks/<endpoint_id>/attempts")
async def list_attempts(endpoint_id: str) -> Response:
    limit = _limit()
    await _found(endpoint_id)
    context = app_context()
    attempts = await context.store.webhook_attempts(
        endpoint_id, since_ms=context.now_ms() - ATTEMPTS_WINDOW_MS, limit=limit
    )
    return json_response(
        {
            "attempts": [
                {
                    "event_id": a.event_id,
                    "event_type": a.event_type,
                    "attempt": a.attempt,
                    "attempted_at": iso(a.attempted_at_ms),
                    "duration_ms": a.duration_ms,
                    "status_code": a.status_code,
                    "outcome": a.outcome,
                    "error": a.error,
                }
                for a in attempts
            ]
        }
    )


@webhooks_blueprint.get("/v1/webhooks/<endpoint_id>/events")
async def list_events(endpoint_id: str) -> Response:
    limit = _limit()
    raw_state = request.args.get("state")
    states = {state.label: state for state in EventState}
    if raw_state is not None and raw_state not in states:
        raise ApiError(400, f"state must be one of: {', '.join(states)}")
    await _found(endpoint_id)
    events = await app_context().store.webhook_events(
        endpoint_id, state=states[raw_state] if raw_state else None, limit=limit
    )
    return json_response(
        {
            "events": [
                {
                    "event_id": e.event_id,
                    "event_type": e.event_type,
                    "state": e.state.label,
                    "attempts": e.attempts,
                    "occurred_at": iso(e.occurred_at_ms),
                    "next_attempt_at": iso(e.due_at_ms) if e.state is EventState.PENDING else None,
                    "finished_at": iso(e.finished_at_ms),
                    "last_error": e.last_error,
                    "request_id": e.request_id,
                    "topic_id": e.topic_id,
                }
                for e in events
            ]
        }
    )


@webhooks_blueprint.post("/v1/webhooks/<endpoint_id>/events/<event_id>/resend")
async def resend_event(endpoint_id: str, event_id: str) -> Response:
    context = app_context()
    await _found(endpoint_id)
    if not await context.store.resend_webhook_event(endpoint_id, event_id, now_ms=context.now_ms()):
        raise ApiError(404, "No finished event with that id for this endpoint")
    context.webhook_refresh()
    return json_response({"status": "queued", "event_id": event_id}, 202)
