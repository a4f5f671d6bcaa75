"""``sesender keys create|list|revoke`` and ``sesender send --from/--reply-to``, against
``httpx.MockTransport`` fakes of the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sesender.cli import build_parser
from sesender.client.commands import idempotency_key
from tests.unit.client.test_commands import FakeSesender, run, send_argv

KEY = {
    "id": 3,
    "name": "newsletter app",
    "scopes": ["send"],
    "senders": ["news@example.com"],
    "prefix": "ssk_abcdefgh",
    "created_at": "2026-01-01T00:00:00.000+00:00",
    "last_used_at": None,
    "revoked_at": None,
}


class FakeKeys(FakeSesender):
    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/v1/api-keys"):
            return super().__call__(request)
        self.requests.append(request)
        if request.method == "POST":
            body = json.loads(request.content)
            self.posts.append({"body": body, "key": None})
            return httpx.Response(201, json={**KEY, **body, "key": "ssk_abcdefgh-the-rest"})
        if request.method == "DELETE":
            if request.url.path != "/v1/api-keys/3":
                return httpx.Response(404, json={"error": "No API key with id 9"})
            return httpx.Response(200, json={**KEY, "revoked_at": "2026-01-02T00:00:00.000+00:00"})
        revoked = {**KEY, "id": 2, "name": "old", "senders": None, "revoked_at": "t"}
        keys = [KEY, revoked] if request.url.params.get("revoked") == "true" else [KEY]
        return httpx.Response(200, json={"api_keys": keys})


def test_keys_create_prints_the_key_once_and_sends_scopes_and_senders() -> None:
    fake = FakeKeys()
    result = run(
        fake,
        [
            "keys",
            "create",
            "newsletter app",
            "--scope",
            "send",
            "--scope",
            "read",
            "--sender",
            "news@example.com",
        ],
    )
    assert result.code == 0, result.err
    assert fake.posts[-1]["body"] == {
        "name": "newsletter app",
        "scopes": ["read", "send"],
        "senders": ["news@example.com"],
    }
    assert "ssk_abcdefgh-the-rest" in result.lines
    assert "shown only now" in result.out


def test_keys_list_and_revoke() -> None:
    fake = FakeKeys()
    listed = run(fake, ["keys", "list", "--revoked"])
    assert listed.code == 0, listed.err
    assert listed.lines[0].split("\t")[:5] == [
        "3",
        "newsletter app",
        "send",
        "ssk_abcdefgh",
        "news@example.com",
    ]
    assert listed.lines[1].split("\t")[4] == "any sender"
    assert listed.lines[1].endswith("revoked t")
    revoked = run(fake, ["keys", "revoke", "3"])
    assert (revoked.code, revoked.lines) == (0, ["revoked key 3 (newsletter app)"])
    missing = run(fake, ["keys", "revoke", "9"])
    assert missing.code == 1
    assert "No API key with id 9" in missing.err


def test_keys_create_needs_a_scope(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["keys", "create", "x"])
    assert exited.value.code == 2
    assert "--scope" in capsys.readouterr().err


def test_send_from_and_reply_to_go_in_the_message_and_the_key(tmp_path: Path) -> None:
    fake = FakeSesender()
    html = tmp_path / "mail.html"
    html.write_text("<p>hello</p>", encoding="utf-8")
    result = run(
        fake,
        [
            *send_argv(html, "--from", "Billing <billing@example.org>"),
            *("--reply-to", "help@example.org", "--to", "a@example.org", "--no-follow"),
        ],
    )
    assert result.code == 0, result.err
    (message,) = fake.posts[0]["body"]["messages"]
    assert message["from"] == "Billing <billing@example.org>"
    assert message["reply_to"] == "help@example.org"
    plain: dict[str, Any] = {
        "topic": "t",
        "subject": "s",
        "content": "c",
        "emails": ("a@example.org",),
        "scheduled_at": None,
        "index": 0,
    }
    key = idempotency_key(**plain)
    assert idempotency_key(**plain, sender=None, reply_to=None) == key  # unchanged without them
    assert idempotency_key(**plain, sender="b@example.org") != key
    assert idempotency_key(**plain, reply_to="b@example.org") != idempotency_key(
        **plain, sender="b@example.org"
    )
