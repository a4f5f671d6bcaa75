"""The suppression list API: list (filtered, keyset-paged), add or replace, remove."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from sesender.addresses import check_address
from sesender.errors import ApiError
from sesender.http.context import app_context
from sesender.http.request_body import require_json
from sesender.http.responses import iso, json_response
from sesender.http.submission import is_unicode, parse_json
from sesender.models import Suppression, SuppressionEntry

suppressions_blueprint = Blueprint("suppressions", __name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_REASON = 500


def entry_json(entry: SuppressionEntry) -> dict[str, Any]:
    return {
        "email": entry.email,
        "reason": entry.reason,
        "source": entry.source,
        "detail": entry.detail,
        "created_at": iso(entry.created_at_ms),
    }


def valid_email(raw: str) -> str:
    check = check_address(raw)
    if check.normalized is None:
        raise ApiError(400, f"Invalid email address: {check.reason}")
    return check.normalized


@suppressions_blueprint.get("/v1/suppressions")
async def list_suppressions() -> Response:
    raw_limit = request.args.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    email = request.args.get("email") or None
    after = request.args.get("after") or None
    for value in (email, after):
        if value is not None and (len(value) > 320 or not value.isprintable()):
            raise ApiError(400, "email and after must be printable and at most 320 characters")
    entries = await app_context().store.list_suppressions(
        email_contains=email, after=after, limit=limit
    )
    body: dict[str, Any] = {"suppressions": [entry_json(e) for e in entries]}
    body["next"] = entries[-1].email if len(entries) == limit else None
    return json_response(body)


@suppressions_blueprint.put("/v1/suppressions/<path:email>")
async def put_suppression(email: str) -> Response:
    email = valid_email(email)
    reason = "manual"
    raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    if raw.strip():
        require_json()
        payload = parse_json(raw)
        if not isinstance(payload, dict):
            raise ApiError(400, "The body must be a JSON object")
        given = payload.get("reason", reason)
        if not isinstance(given, str) or not given.strip() or len(given) > MAX_REASON:
            raise ApiError(400, f"reason must be a non-empty string of at most {MAX_REASON}")
        if not is_unicode(given):
            raise ApiError(400, "reason must not contain lone UTF-16 surrogates")
        reason = given
    context = app_context()
    entry = await context.store.put_suppression(
        Suppression(reason=reason, source="api", email=email), now_ms=context.now_ms()
    )
    return json_response(entry_json(entry))


@suppressions_blueprint.delete("/v1/suppressions/<path:email>")
async def delete_suppression(email: str) -> Response:
    normalized = valid_email(email)
    if not await app_context().store.delete_suppression(normalized):
        raise ApiError(404, f"{normalized} is not suppressed")
    return json_response({"status": "ok", "email": normalized.lower()})
