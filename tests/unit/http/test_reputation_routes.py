"""The reputation routes' validation, answered before the guard is reached (the real app, a
context holding only the configuration); the routes' effects are tested end to end in
tests/e2e/test_reputation_guard.py."""

from __future__ import annotations

import pytest

from sesender.http.app import SesenderApp
from tests.unit.http.conftest import API_KEY

HEADERS = {"X-API-KEY": API_KEY}


async def test_resume_topic_by_body_wants_json(app: SesenderApp) -> None:
    response = await app.test_client().post(
        "/v1/reputation/resume-topic", data="topic_id=x", headers=HEADERS
    )
    assert response.status_code == 415
    assert (await response.get_json()) == {"error": "Content-Type must be application/json"}


@pytest.mark.parametrize(
    "body", ['["x"]', "{}", '{"topic_id": 7}', '{"topic_id": null}', '{"topic": "x"}']
)
async def test_resume_topic_by_body_wants_a_string_topic_id(app: SesenderApp, body: str) -> None:
    response = await app.test_client().post(
        "/v1/reputation/resume-topic",
        data=body,
        headers={**HEADERS, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "topic_id" in (await response.get_json())["error"]


async def test_the_reputation_routes_need_the_key(app: SesenderApp) -> None:
    client = app.test_client()
    for method, path in (
        ("POST", "/v1/sending/resume"),
        ("POST", "/v1/topics/t/resume"),
        ("POST", "/v1/reputation/resume-topic"),
        ("GET", "/v1/reputation"),
    ):
        response = await client.open(path, method=method, json=None)
        assert response.status_code == 401, path
