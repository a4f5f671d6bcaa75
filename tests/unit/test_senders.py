"""ALLOWED_SENDERS, a message's ``from`` and ``reply_to``, and a key's senders."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from sesender.config import load_config
from sesender.errors import ApiError, ConfigError
from sesender.http.submission import parse_submission
from sesender.senders import SenderPolicy, key_allows, parse_sender_entry

POLICY = SenderPolicy("Newsletter <news@example.com>", ("example.org", "billing@example.net"))


def submit(**fields: object) -> tuple[str | None, str | None]:
    payload = {
        "messages": [{"emails": ["a@example.org"], "subject": "s", "content": "c", **fields}]
    }
    parsed = parse_submission(payload, max_recipients=10, timezone=ZoneInfo("UTC"), senders=POLICY)
    (message,) = parsed.messages
    return message.sender, message.reply_to


@pytest.mark.parametrize(
    ("sender", "stored"),
    [
        (None, None),
        ("Newsletter <news@example.com>", None),  # the default, as configured
        ("news@example.com", "news@example.com"),  # its address: allowed, kept as given
        ("anyone@example.org", "anyone@example.org"),  # the domain is allowed
        ("Billing <Billing@Example.NET>", "Billing <Billing@Example.NET>"),
    ],
)
def test_allowed_senders(sender: str | None, stored: str | None) -> None:
    fields = {} if sender is None else {"from": sender}
    assert submit(**fields) == (stored, None)


@pytest.mark.parametrize(
    "sender",
    [
        "ops@example.net",  # only billing@ of that domain
        "x@sub.example.org",  # a subdomain is another identity
        "x@other-company.com",
        "",
        "a@example.org, b@example.org",
        "a@example.org\r\nBcc: everyone@example.com",
        42,
    ],
)
def test_refused_senders_refuse_the_request(sender: object) -> None:
    with pytest.raises(ApiError) as caught:
        submit(**{"from": sender})
    assert caught.value.status == 400
    assert "messages[0].from" in caught.value.message


def test_reply_to_is_one_address() -> None:
    assert submit(reply_to="Help <help@anywhere.example.com>") == (
        None,
        "Help <help@anywhere.example.com>",
    )
    with pytest.raises(ApiError):
        submit(reply_to="not an address")


def test_without_a_policy_from_is_refused() -> None:
    payload = {
        "messages": [
            {"emails": ["a@example.org"], "subject": "s", "content": "c", "from": "x@example.org"}
        ]
    }
    with pytest.raises(ApiError):
        parse_submission(payload, max_recipients=10, timezone=ZoneInfo("UTC"))


def test_identities_and_key_limits() -> None:
    assert POLICY.identities() == ["news@example.com", "example.org", "billing@example.net"]
    assert key_allows(None, "x@anything.example")
    assert key_allows(("example.org",), "x@example.org")
    assert not key_allows(("billing@example.net",), "ops@example.net")
    assert parse_sender_entry(" Example.ORG ") == "example.org"
    assert parse_sender_entry("a b") is None
    assert parse_sender_entry("localhost") is None


def test_allowed_senders_setting() -> None:
    config = load_config({"ALLOWED_SENDERS": "Example.org, billing@example.net,example.org"})
    assert config.backend.aws.allowed_senders == ("example.org", "billing@example.net")
    with pytest.raises(ConfigError, match="ALLOWED_SENDERS"):
        load_config({"ALLOWED_SENDERS": "example.org, not a sender"})
