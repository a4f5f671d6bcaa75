"""Text no store can write verbatim is a 400 before any handler touches the store: a path that is
not percent-encoded UTF-8 (hypercorn would hand the handler U+FFFD replacements), and a lone UTF-16
surrogate in a JSON string (valid JSON, but SQLite cannot encode it: both were found by
tests/e2e/test_hostile_input.py)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from sesender.http.app import SesenderApp, is_utf8
from tests.unit.http.conftest import API_KEY

KEY = {"X-API-KEY": API_KEY}
NOT_UTF8 = {"error": "The URL path is not valid percent-encoded UTF-8"}


def test_is_utf8() -> None:
    assert is_utf8("뉴스 ok".encode())
    for data in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"):
        assert not is_utf8(data)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/topics/%FF"),
        ("DELETE", "/v1/topics/a%C0%AFb"),
        ("PUT", "/v1/suppressions/%ED%A0%80@example.com"),
        ("GET", "/v1/nothing-here-%E2%82"),
    ],
)
async def test_a_path_that_is_not_utf8_is_a_400(app: SesenderApp, method: str, path: str) -> None:
    # As hypercorn hands it over: the raw path as sent, the path decoded with replacements.
    decoded = unquote(path, errors="replace")
    scope = {"raw_path": path.encode("ascii"), "path": decoded}
    client = app.test_client()
    send = {"GET": client.get, "DELETE": client.delete, "PUT": client.put}[method]
    response = await send(decoded, headers=KEY, scope_base=scope)
    assert response.status_code == 400
    assert await response.get_json() == NOT_UTF8


async def test_a_percent_encoded_utf8_path_is_routed_as_usual(app: SesenderApp) -> None:
    scope = {"raw_path": b"/v1/nothing-here-%EB%89%B4", "path": "/v1/nothing-here-뉴"}
    response = await app.test_client().get("/v1/nothing-here-뉴", headers=KEY, scope_base=scope)
    assert (response.status_code, await response.get_json()) == (404, {"error": "Not found"})


async def test_a_suppression_reason_with_a_lone_surrogate_is_a_400(app: SesenderApp) -> None:
    response = await app.test_client().put(
        "/v1/suppressions/a@example.com",
        data=b'{"reason": "a\\ud800b"}',
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert await response.get_json() == {"error": "reason must not contain lone UTF-16 surrogates"}
