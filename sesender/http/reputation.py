"""The reputation guard's operator side: its state, and the two resumes only an operator makes.

- ``GET /v1/reputation``: the window's counts and rates, the thresholds, what is held;
- ``POST /v1/sending/resume``: lift the guard's hold on all sending;
- ``POST /v1/topics/{topic_id}/resume``: lift a topic's hold and requeue its ``Held`` emails;
- ``POST /v1/reputation/resume-topic`` with ``{"topic_id": ...}``: the same for any topic id,
  the empty one included (the original's default topic, which no path can name).

A resume is a decision (the guard never lifts a hold by itself); the window starts again after
it, so the same bounces do not hold the same scope again at once.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from sesender.errors import ApiError, StoreUnavailable
from sesender.http.context import app_context
from sesender.http.request_body import require_json
from sesender.http.responses import json_response
from sesender.http.submission import is_unicode, parse_json
from sesender.pipeline.reputation_guard import ReputationGuard

reputation_blueprint = Blueprint("reputation", __name__)


def guard_or_error() -> ReputationGuard:
    guard = app_context().pipeline.guard
    if guard is None:
        raise ApiError(404, "The reputation guard is not running in this service")
    return guard


@reputation_blueprint.get("/v1/reputation")
async def reputation() -> Response:
    context = app_context()
    guard = guard_or_error()
    settings = context.config.guard
    stats = guard.statistics()
    account: dict[str, Any] | None = None
    if stats.account is not None:
        account = {
            "sends": stats.account.sends,
            "bounces": stats.account.bounces,
            "complaints": stats.account.complaints,
            "bounce_rate": round(stats.account.bounce_rate, 6),
            "complaint_rate": round(stats.account.complaint_rate, 6),
        }
    monitor = context.pipeline.account_monitor.statistics()
    return json_response(
        {
            "enabled": settings.enabled,
            "window_seconds": settings.window,
            "thresholds": {
                "bounce_rate": settings.bounce_rate,
                "complaint_rate": settings.complaint_rate,
                "min_sends": settings.min_sends,
                "topic_min_sends": settings.topic_min_sends,
            },
            "account": account,
            "sending_held": stats.account_held,
            "sending_held_reason": stats.account_hold_reason or None,
            "held_topics": [
                {"topic_id": topic_id, "reason": reason}
                for topic_id, reason in sorted(stats.held_topics.items())
            ],
            "ses_account": {
                "max_send_rate": monitor.account_max_send_rate,
                "enforcement_status": monitor.enforcement_status,
            },
        }
    )


@reputation_blueprint.post("/v1/sending/resume")
async def resume_sending() -> Response:
    guard = guard_or_error()
    try:
        resumed = await guard.resume_account()
    except StoreUnavailable as exc:
        raise ApiError(503, f"Storage unavailable, nothing was resumed: {exc}") from exc
    gate = app_context().pipeline.gate_statistics()
    return json_response(
        {
            "status": "ok",
            "resumed": resumed,
            "sending": "paused" if gate.paused else "active",
            "sending_paused_reason": gate.reason or None,
        }
    )


@reputation_blueprint.post("/v1/topics/<path:topic_id>/resume")
async def resume_topic(topic_id: str) -> Response:
    return await resumed_topic_response(topic_id)


@reputation_blueprint.post("/v1/reputation/resume-topic")
async def resume_topic_by_body() -> Response:
    require_json()
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    payload = parse_json(raw)
    if not isinstance(payload, dict) or not isinstance(payload.get("topic_id"), str):
        raise ApiError(400, 'The body must be a JSON object with a string "topic_id"')
    topic_id: str = payload["topic_id"]
    if not is_unicode(topic_id):
        raise ApiError(400, "topic_id must not contain lone UTF-16 surrogates")
    return await resumed_topic_response(topic_id)


async def resumed_topic_response(topic_id: str) -> Response:
    guard = guard_or_error()
    try:
        released = await guard.resume_topic(topic_id)
    except StoreUnavailable as exc:
        raise ApiError(503, f"Storage unavailable, nothing was resumed: {exc}") from exc
    return json_response({"status": "ok", "held": released is not None, "resumed": released or 0})
