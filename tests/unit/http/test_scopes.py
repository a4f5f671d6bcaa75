"""The route table of scopes covers the app, and the hook applies it: 403 / 401 / through.

A route added anywhere (another blueprint, another engineer's branch) without an entry in
``ROUTE_SCOPES`` fails :func:`test_every_route_of_the_app_has_a_decision`; until it gets one, the
hook opens it to admin keys only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest
from quart import Blueprint

from sesender.api_keys import KeyRing
from sesender.http.app import PUBLIC_ENDPOINTS, SesenderApp, create_app
from sesender.http.scopes import ADMIN, PUBLIC, ROUTE_SCOPES, SEND_OR_READ, access_for
from sesender.models import ApiKey, Scope
from sesender.store.base import ApiKeyStore
from tests.unit.http.conftest import API_KEY, ConfigOnlyContext

AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}


def app_routes(app: SesenderApp) -> dict[tuple[str, str], str]:
    return {
        (method, rule.rule): rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - AUTOMATIC_METHODS
    }


def test_every_route_of_the_app_has_a_decision_and_the_table_no_stale_entry(
    app: SesenderApp,
) -> None:
    routes = app_routes(app)
    missing = sorted(f"{m} {r}" for m, r in routes.keys() - ROUTE_SCOPES.keys())
    stale = sorted(f"{m} {r}" for m, r in ROUTE_SCOPES.keys() - routes.keys())
    assert not missing, f"routes without an entry in sesender/http/scopes.py: {missing}"
    assert not stale, f"ROUTE_SCOPES names routes the app does not have: {stale}"


def test_public_endpoints_are_exactly_the_public_routes(app: SesenderApp) -> None:
    public = {endpoint for key, endpoint in app_routes(app).items() if ROUTE_SCOPES[key] == PUBLIC}
    assert public == PUBLIC_ENDPOINTS


def test_admin_may_call_every_route_and_head_and_options_follow_the_rule() -> None:
    assert all(Scope.ADMIN in access for access in ROUTE_SCOPES.values() if access != PUBLIC)
    assert access_for("HEAD", "/v1/topics") == access_for("GET", "/v1/topics")
    assert access_for("OPTIONS", "/v1/unsubscribe") == PUBLIC
    assert access_for("OPTIONS", "/v1/topics") == SEND_OR_READ
    assert access_for("GET", "/v1/not-in-the-table") is None


class OneKey:
    """An ApiKeyStore holding one named key with the given scopes."""

    def __init__(self, key: str, scopes: set[Scope]) -> None:
        from sesender.api_keys import key_digest

        self.key = ApiKey(
            id=7,
            name="monitoring",
            scopes=frozenset(scopes),
            senders=None,
            prefix=key[:12],
            digest=key_digest(key),
            created_at_ms=0,
            last_used_at_ms=None,
            revoked_at_ms=None,
        )

    async def api_keys(self, *, include_revoked: bool) -> list[ApiKey]:
        return [self.key]

    async def touch_api_keys(self, used: Sequence[tuple[int, int]]) -> None:
        pass


def app_with(store: OneKey, *extra: Blueprint) -> SesenderApp:
    from sesender.config import load_config

    config = load_config({"API_KEY": API_KEY})
    context: Any = ConfigOnlyContext(config)
    context.keys = KeyRing(
        cast(ApiKeyStore, store), configured_digest=config.server.api_key_digest, now_ms=lambda: 0
    )
    app = create_app(context)
    for blueprint in extra:
        app.register_blueprint(blueprint)
    return app


async def test_a_key_without_the_scope_gets_403_an_unknown_one_401() -> None:
    app = app_with(OneKey("ssk_reader", {Scope.READ}))
    client = app.test_client()
    refused = await client.delete(
        "/v1/suppressions/a@example.org", headers={"X-API-KEY": "ssk_reader"}
    )
    assert refused.status_code == 403
    assert "lacks the scope this route needs: admin" in (await refused.get_json())["error"]
    refused = await client.post(
        "/v1/messages", headers={"X-API-KEY": "ssk_reader"}, json={"messages": []}
    )
    assert refused.status_code == 403
    unknown = await client.get("/v1/api-keys/current", headers={"X-API-KEY": "ssk_nobody"})
    assert unknown.status_code == 401
    assert await unknown.get_json() == {"error": "Invalid API Key"}
    current = await client.get("/v1/api-keys/current", headers={"X-API-KEY": "ssk_reader"})
    assert await current.get_json() == {
        "id": 7,
        "name": "monitoring",
        "scopes": ["read"],
        "senders": None,
    }
    configured = await client.get("/v1/api-keys/current", headers={"X-API-KEY": API_KEY})
    assert (await configured.get_json())["scopes"] == ["admin"]


@pytest.mark.parametrize(("key", "status"), [("ssk_reader", 403), (API_KEY, 200)])
async def test_a_route_missing_from_the_table_is_open_to_admin_keys_only(
    key: str, status: int
) -> None:
    extra = Blueprint("extra", __name__)

    @extra.get("/v1/new-feature")
    async def new_feature() -> dict[str, str]:
        return {"status": "ok"}

    app = app_with(OneKey("ssk_reader", {Scope.READ}), extra)
    answer = await app.test_client().get("/v1/new-feature", headers={"X-API-KEY": key})
    assert answer.status_code == status
    assert frozenset({Scope.ADMIN}) == ADMIN
