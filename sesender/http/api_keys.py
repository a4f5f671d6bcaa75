"""``/v1/api-keys``: create (the key shown once), list, revoke; and ``/v1/api-keys/current``.

Rotation without downtime is: create the new key, move the clients, revoke the old one; any
number of keys are valid at once. A revoked key stops working at once on this instance and
within a second on every other (see :mod:`sesender.api_keys`).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from sesender.api_keys import generate_named_key
from sesender.errors import ApiError
from sesender.http.auth import current_principal
from sesender.http.context import app_context
from sesender.http.request_body import require_json
from sesender.http.responses import iso, json_response
from sesender.http.submission import parse_json
from sesender.models import ApiKey, NewApiKey, Scope
from sesender.senders import SenderPolicy, parse_sender_entry

api_keys_blueprint = Blueprint("api_keys", __name__)

MAX_NAME = 100
MAX_SENDERS = 100
BODY_KEYS = frozenset({"name", "scopes", "senders"})


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scopes": [scope.value for scope in Scope if scope in key.scopes],
        "senders": None if key.senders is None else list(key.senders),
        "prefix": key.prefix,
        "created_at": iso(key.created_at_ms),
        "last_used_at": iso(key.last_used_at_ms),
        "revoked_at": iso(key.revoked_at_ms),
    }


def parse_new_key(payload: Any, policy: SenderPolicy) -> tuple[str, frozenset[Scope], Any]:
    """(name, scopes, senders) of a ``POST /v1/api-keys`` body, or a 400."""
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object with name and scopes")
    unknown = sorted(set(payload) - BODY_KEYS)
    if unknown:
        raise ApiError(400, f"Unknown field(s): {', '.join(unknown)} (name, scopes, senders)")
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ApiError(400, f"name must be a non-empty string of at most {MAX_NAME} characters")
    if not name.isprintable():
        raise ApiError(400, "name must be printable")
    raw_scopes = payload.get("scopes")
    allowed = [scope.value for scope in Scope]
    if (
        not isinstance(raw_scopes, list)
        or not raw_scopes
        or not all(isinstance(s, str) and s in allowed for s in raw_scopes)
    ):
        raise ApiError(400, f"scopes must be a non-empty list of: {', '.join(allowed)}")
    scopes = frozenset(Scope(s) for s in raw_scopes)
    raw_senders = payload.get("senders")
    senders: tuple[str, ...] | None = None
    if raw_senders is not None:
        if (
            not isinstance(raw_senders, list)
            or not raw_senders
            or len(raw_senders) > MAX_SENDERS
            or not all(isinstance(s, str) for s in raw_senders)
        ):
            raise ApiError(
                400,
                f"senders must be a non-empty list of at most {MAX_SENDERS} addresses or domains"
                " (leave it out for every allowed sender)",
            )
        found: list[str] = []
        for raw in raw_senders:
            entry = parse_sender_entry(raw)
            if entry is None:
                raise ApiError(400, f"senders: {raw[:320]!r} is not an address or a domain")
            if not (policy.allows(entry) if "@" in entry else entry in policy.allowed):
                raise ApiError(
                    400, f"senders: {entry!r} is not an allowed sender (see ALLOWED_SENDERS)"
                )
            if entry not in found:
                found.append(entry)
        senders = tuple(found)
    return name.strip(), scopes, senders


@api_keys_blueprint.post("/v1/api-keys")
async def create_key() -> Response:
    context = app_context()
    require_json()
    payload = parse_json(await request.get_data(cache=False, as_text=False, parse_form_data=False))
    aws = context.config.backend.aws
    name, scopes, senders = parse_new_key(
        payload, SenderPolicy(aws.from_email, aws.allowed_senders)
    )
    key, prefix, digest = generate_named_key()
    stored = await context.store.create_api_key(
        NewApiKey(
            name=name,
            scopes=scopes,
            senders=senders,
            prefix=prefix,
            digest=digest,
            created_at_ms=context.now_ms(),
        )
    )
    context.keys.invalidate()
    return json_response({**key_json(stored), "key": key}, 201)


@api_keys_blueprint.get("/v1/api-keys")
async def list_keys() -> Response:
    include_revoked = request.args.get("revoked", "false")
    if include_revoked not in ("true", "false"):
        raise ApiError(400, "revoked must be true or false")
    keys = await app_context().store.api_keys(include_revoked=include_revoked == "true")
    return json_response({"api_keys": [key_json(key) for key in keys]})


@api_keys_blueprint.delete("/v1/api-keys/<int:key_id>")
async def revoke_key(key_id: int) -> Response:
    context = app_context()
    revoked = (
        await context.store.revoke_api_key(key_id, now_ms=context.now_ms())
        if key_id < 2**63
        else None
    )
    if revoked is None:
        raise ApiError(404, f"No API key with id {key_id}")
    context.keys.invalidate()
    return json_response(key_json(revoked))


@api_keys_blueprint.get("/v1/api-keys/current")
async def current_key() -> Response:
    """The key this request carries: the dashboard shows admin actions only to admin keys."""
    principal = current_principal()
    return json_response(
        {
            "id": principal.key_id,
            "name": principal.name,
            "scopes": [scope.value for scope in Scope if scope in principal.scopes],
            "senders": None if principal.senders is None else list(principal.senders),
        }
    )
