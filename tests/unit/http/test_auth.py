"""``X-API-KEY`` authentication: the original's exact messages, on every route but the public ones.

The check (``sesender.http.auth.check_api_key``) is a pure function; the hook that applies it is
tested through the real app and Quart's test client. The context holds only the configuration, so
a request that got past authentication into a handler needing the store would fail loudly: every
request here is answered before that (401, or a validation error that proves the key was taken).
"""

from __future__ import annotations

import re

import pytest

from sesender.config import api_key_sha256
from sesender.errors import ApiError
from sesender.http.app import PUBLIC_ENDPOINTS, SesenderApp
from sesender.http.auth import EMPTY, INVALID, MISSING, check_api_key, check_api_key_digest
from tests.unit.http.conftest import API_KEY, build_app

# -- the check ------------------------------------------------------------------------------------


def test_the_messages_are_the_original_services() -> None:
    assert MISSING == "Missing X-API-KEY header"
    assert EMPTY == "Empty API Key"
    assert INVALID == "Invalid API Key"


@pytest.mark.parametrize(
    ("presented", "message"),
    [
        (None, MISSING),
        ("", EMPTY),
        ("   ", EMPTY),
        ("\t", EMPTY),
        ("wrong", INVALID),
        (API_KEY.upper(), INVALID),
        (f" {API_KEY}", INVALID),
        (f"{API_KEY} ", INVALID),
        (API_KEY[:-1], INVALID),
        (API_KEY + "x", INVALID),
        ("ключ", INVALID),
        ("\udcff\udcfe", INVALID),  # undecodable header bytes, as surrogate escapes
    ],
)
def test_a_missing_empty_or_wrong_key_is_a_401(presented: str | None, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_api_key(presented, API_KEY)
    assert (caught.value.status, caught.value.message) == (401, message)


def test_the_right_key_passes() -> None:
    check_api_key(API_KEY, API_KEY)
    check_api_key("ключ-🔑", "ключ-🔑")


# -- the hook, through the app --------------------------------------------------------------------


def protected_requests(app: SesenderApp) -> list[tuple[str, str]]:
    """(method, url) of one request per protected rule, with sample values for its arguments."""
    requests = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint == "static":
            continue
        url = re.sub(r"<int:[^>]+>", "1", rule.rule)
        url = re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "sample", url)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            requests.append((method, url))
    return requests


def test_there_are_protected_routes_to_check(app: SesenderApp) -> None:
    urls = {url for _, url in protected_requests(app)}
    assert {"/v1/messages", "/v1/messages/1", "/v1/topics/sample", "/v1/events/counts/sent"} <= urls


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, MISSING),
        ({"X-API-KEY": ""}, EMPTY),
        ({"X-API-KEY": "wrong"}, INVALID),
        ({"x-api-key": "wrong"}, INVALID),  # header names are case-insensitive
        ({"Authorization": f"Bearer {API_KEY}"}, MISSING),
    ],
)
async def test_every_protected_route_refuses_a_bad_key_before_its_handler(
    app: SesenderApp, headers: dict[str, str], message: str
) -> None:
    client = app.test_client()
    for method, url in protected_requests(app):
        response = await client.open(url, method=method, headers=headers, json={"messages": []})
        assert response.status_code == 401, (method, url)
        assert response.content_type == "application/json"
        assert await response.get_json() == {"error": message}, (method, url)


async def test_the_right_key_reaches_the_handler(app: SesenderApp) -> None:
    client = app.test_client()
    headers = {"X-API-KEY": API_KEY}
    hours = await client.get("/v1/events/counts/sent?hours=-1", headers=headers)
    assert hours.status_code == 400
    assert await hours.get_json() == {"error": "hours must be a whole number from 0 to 8760"}
    text = await client.post("/v1/messages", headers=headers, data="hello")
    assert text.status_code == 415


@pytest.mark.parametrize("path", ["/health", "/openapi.json"])
async def test_public_routes_need_no_key(app: SesenderApp, path: str) -> None:
    response = await app.test_client().get(path, headers={"X-API-KEY": "wrong"})
    assert response.status_code == 200
    assert response.content_type == "application/json"


async def test_unknown_routes_and_methods_answer_404_and_405_without_asking_for_a_key(
    app: SesenderApp,
) -> None:
    client = app.test_client()
    missing = await client.get("/v1/nothing-here")
    assert (missing.status_code, await missing.get_json()) == (404, {"error": "Not found"})
    wrong_method = await client.put("/v1/messages")
    assert wrong_method.status_code == 405
    assert await wrong_method.get_json() == {"error": "Method not allowed"}
    assert "POST" in wrong_method.headers["Allow"]


async def test_authentication_comes_before_the_body_size_limit() -> None:
    app = build_app(MAX_REQUEST_BYTES="2048")
    client = app.test_client()
    body = {"messages": [{"emails": [], "subject": "s", "content": "x" * 4096}]}
    unauthenticated = await client.post("/v1/messages", json=body)
    assert unauthenticated.status_code == 401
    too_large = await client.post("/v1/messages", json=body, headers={"X-API-KEY": API_KEY})
    assert too_large.status_code == 413
    assert await too_large.get_json() == {"error": "Request body too large"}


def test_an_empty_digest_matches_no_key() -> None:
    """Before the start-up fills in a generated key's digest, nothing authenticates."""
    for presented in (API_KEY, "x", "ключ"):
        with pytest.raises(ApiError) as caught:
            check_api_key_digest(presented, b"")
        assert caught.value.message == INVALID
    check_api_key_digest(API_KEY, api_key_sha256(API_KEY))
