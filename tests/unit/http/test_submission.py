"""``POST /v1/messages`` body parsing (sesender/http/submission.py): pure functions, no I/O."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sesender.errors import ApiError
from sesender.http import messages
from sesender.http.submission import (
    IDEMPOTENCY_WINDOW,
    REJECTED_LIST_CAP,
    body_digest,
    due_at_ms,
    parse_json,
    parse_scheduled_at,
    parse_submission,
)
from sesender.senders import SenderPolicy
from tests.unit.http.conftest import API_KEY, build_app

SEOUL = ZoneInfo("Asia/Seoul")

#: The original service's README example, verbatim.
ORIGINAL_EXAMPLE = """{
  "messages": [
    {
      "topic_id": "newsletter_2024_01",
      "emails": ["user1@example.com", "user2@example.com"],
      "subject": "1월 뉴스레터",
      "content": "<h1>안녕하세요!</h1><p>...</p>"
    }
  ],
  "scheduled_at": "2024-01-01 09:00:00"
}"""


def message(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "topic_id": "t",
        "emails": ["a@example.com"],
        "subject": "Hello",
        "content": "<p>Hi</p>",
    }
    base.update(overrides)
    return base


def parse(payload: Any, *, max_recipients: int = 10_000, zone: ZoneInfo | None = None) -> Any:
    return parse_submission(
        payload, max_recipients=max_recipients, timezone=zone or ZoneInfo("UTC")
    )


def refused(payload: Any, **kwargs: Any) -> str:
    with pytest.raises(ApiError) as caught:
        parse(payload, **kwargs)
    assert caught.value.status == 400
    return caught.value.message


# -- JSON -----------------------------------------------------------------------------------------


def test_parse_json_reads_utf8_json() -> None:
    assert parse_json(ORIGINAL_EXAMPLE.encode()) == json.loads(ORIGINAL_EXAMPLE)


@pytest.mark.parametrize("raw", [b"", b"{", b"{'a': 1}", b"\xff\xfe\x00", b"[1, 2"])
def test_parse_json_refuses_what_is_not_json_with_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(raw)
    assert caught.value.status == 400
    assert caught.value.message.startswith("Invalid JSON body")


# -- the original's example -----------------------------------------------------------------------


def test_the_original_example_parses_in_utc_by_default() -> None:
    parsed = parse(json.loads(ORIGINAL_EXAMPLE))
    assert parsed.total == 2
    assert parsed.accepted == 2
    assert parsed.rejected_count == 0
    assert parsed.duplicates == 0
    (only,) = parsed.messages
    assert only.topic_id == "newsletter_2024_01"
    assert only.subject == "1월 뉴스레터"
    assert only.body == "<h1>안녕하세요!</h1><p>...</p>"
    assert only.emails == ("user1@example.com", "user2@example.com")
    assert parsed.scheduled_at == datetime(2024, 1, 1, 9, tzinfo=ZoneInfo("UTC"))


def test_the_original_format_is_read_in_the_configured_zone() -> None:
    parsed = parse(json.loads(ORIGINAL_EXAMPLE), zone=SEOUL)
    assert parsed.scheduled_at is not None
    assert parsed.scheduled_at.astimezone(UTC) == datetime(2024, 1, 1, 0, tzinfo=UTC)


# -- scheduled_at ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_absent_or_empty_scheduled_at_means_now(value: Any) -> None:
    assert parse_scheduled_at(value, SEOUL) is None
    payload: dict[str, Any] = {"messages": [message()]}
    if value is not None:
        payload["scheduled_at"] = value
    assert parse(payload).scheduled_at is None


def test_iso_8601_with_an_offset_is_taken_as_is() -> None:
    parsed = parse_scheduled_at("2030-06-01T09:00:00+09:00", ZoneInfo("UTC"))
    assert parsed == datetime(2030, 6, 1, tzinfo=UTC)
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(hours=9)
    zulu = parse_scheduled_at("2030-06-01T09:00:00Z", SEOUL)
    assert zulu == datetime(2030, 6, 1, 9, tzinfo=UTC)


def test_iso_8601_without_an_offset_is_read_in_the_configured_zone() -> None:
    parsed = parse_scheduled_at("2030-06-01T09:00:00", SEOUL)
    assert parsed == datetime(2030, 6, 1, 0, tzinfo=UTC)


def test_surrounding_white_space_is_ignored() -> None:
    assert parse_scheduled_at(" 2030-06-01 09:00:00 ", SEOUL) == datetime(
        2030, 6, 1, 9, tzinfo=SEOUL
    )


@pytest.mark.parametrize(
    "value",
    ["tomorrow", "2024-13-01 00:00:00", "2024-02-30 09:00:00", "2024-01-01 25:00:00", "1/1/2024"],
)
def test_an_unreadable_scheduled_at_is_a_400_not_a_silent_send_now(value: str) -> None:
    message_text = refused({"messages": [message()], "scheduled_at": value})
    assert message_text.startswith(f"scheduled_at {value!r} is not")


@pytest.mark.parametrize("value", [12345, 1.5, True, ["2024-01-01 09:00:00"], {"at": "now"}])
def test_a_scheduled_at_that_is_not_a_string_is_a_400(value: Any) -> None:
    assert refused({"messages": [message()], "scheduled_at": value}) == (
        "scheduled_at must be a string"
    )


def test_due_at_is_now_without_a_schedule_and_the_epoch_time_with_one() -> None:
    now_ms = 1_800_000_000_000
    assert due_at_ms(None, now_ms) == now_ms
    past = datetime(2024, 1, 1, 9, tzinfo=UTC)
    assert due_at_ms(past, now_ms) == int(past.timestamp() * 1000)
    assert due_at_ms(past, now_ms) < now_ms  # the handler reports scheduled=false for it
    future = datetime(2030, 1, 1, tzinfo=UTC)
    assert due_at_ms(future, now_ms) == 1_893_456_000_000
    before_epoch = datetime(1960, 1, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert due_at_ms(before_epoch, now_ms) == 0


# -- shape ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ([], "The body must be a JSON object with a 'messages' list"),
        ("messages", "The body must be a JSON object with a 'messages' list"),
        (None, "The body must be a JSON object with a 'messages' list"),
        ({}, "'messages' must be a non-empty list"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": {"a": 1}}, "'messages' must be a non-empty list"),
        ({"messages": ["x"]}, "messages[0] must be an object"),
        ({"messages": [message(), 3]}, "messages[1] must be an object"),
        ({"messages": [message(emails="a@example.com")]}, "messages[0].emails must be a list"),
        ({"messages": [{"subject": "s", "content": "c"}]}, "messages[0].emails must be a list"),
    ],
)
def test_a_wrong_shape_is_refused_whole(payload: Any, expected: str) -> None:
    assert refused(payload).startswith(expected)


@pytest.mark.parametrize("field", ["subject", "content"])
@pytest.mark.parametrize("value", [None, "", "   ", 7, ["x"]])
def test_subject_and_content_must_be_non_empty_strings(field: str, value: Any) -> None:
    payload = {"messages": [message(**{field: value})]}
    if value is None:
        del payload["messages"][0][field]
    assert refused(payload) == f"messages[0].{field} must be a non-empty string"


@pytest.mark.parametrize("subject", ["a\nb", "a\rb", "line\r\n", "x" * 999])
def test_the_subject_is_one_line_of_at_most_998_characters(subject: str) -> None:
    assert refused({"messages": [message(subject=subject)]}).startswith(
        "messages[0].subject must be one line of at most 998"
    )


def test_a_998_character_subject_and_multi_line_content_are_fine() -> None:
    parsed = parse({"messages": [message(subject="x" * 998, content="<p>a</p>\r\n<p>b</p>")]})
    assert parsed.messages[0].subject == "x" * 998


@pytest.mark.parametrize("field", ["subject", "content"])
def test_nul_characters_are_refused(field: str) -> None:
    assert refused({"messages": [message(**{field: "a\x00b"})]}) == (
        "messages[0] must not contain NUL characters"
    )


@pytest.mark.parametrize("field", ["topic_id", "subject", "content"])
def test_lone_surrogates_are_refused(field: str) -> None:
    """JSON allows ``"\\ud800"``; SQLite cannot store it (it was a 500)."""
    assert refused({"messages": [message(**{field: "a\ud800b"})]}) == (
        f"messages[0].{field} must not contain lone UTF-16 surrogates"
    )


def test_topic_id_defaults_to_empty() -> None:
    without = message()
    del without["topic_id"]
    parsed = parse({"messages": [without, message(topic_id=None)]})
    assert [m.topic_id for m in parsed.messages] == ["", ""]


@pytest.mark.parametrize("topic_id", [7, ["t"], {"t": 1}])
def test_topic_id_must_be_a_string(topic_id: Any) -> None:
    assert refused({"messages": [message(topic_id=topic_id)]}) == (
        "messages[0].topic_id must be a string"
    )


@pytest.mark.parametrize("topic_id", ["t" * 257, "a\nb", "tab\there", "del\x7f"])
def test_topic_id_is_short_and_has_no_control_characters(topic_id: str) -> None:
    assert refused({"messages": [message(topic_id=topic_id)]}).startswith(
        "messages[0].topic_id must be at most 256 characters"
    )


def test_a_256_character_unicode_topic_id_is_fine() -> None:
    assert parse({"messages": [message(topic_id="뉴" * 256)]}).messages[0].topic_id == "뉴" * 256


# -- recipients -----------------------------------------------------------------------------------


def test_more_recipients_than_allowed_is_refused_whole_counting_invalid_ones() -> None:
    payload = {
        "messages": [
            message(emails=["a@example.com", "b@example.com"]),
            message(emails=["not an address", 5]),
        ]
    }
    assert refused(payload, max_recipients=3) == (
        "Too many recipients: 4 in one request (at most 3)"
    )
    assert parse(payload, max_recipients=4).total == 4


def test_the_recipient_limit_is_checked_before_any_address_is_validated() -> None:
    payload = {"messages": [message(emails=["x"] * 11), message(subject="")]}
    assert refused(payload, max_recipients=10).startswith("Too many recipients: 12")


def test_invalid_addresses_are_counted_and_listed_and_the_valid_ones_accepted() -> None:
    emails = [
        "good@example.com",
        "no-at-sign",
        "two@@example.com",
        "a\r\nBcc: x@example.com",
        "",
        42,
        None,
        "also.good+tag@example.org",
    ]
    parsed = parse({"messages": [message(emails=emails)]})
    assert parsed.total == 8
    assert parsed.accepted == 2
    assert parsed.rejected_count == 6
    assert parsed.messages[0].emails == ("good@example.com", "also.good+tag@example.org")
    assert [r.email for r in parsed.rejected] == [
        "no-at-sign",
        "two@@example.com",
        "a\r\nBcc: x@example.com",
        "",
        "42",
        "None",
    ]
    assert parsed.rejected[4].reason == "not a string"
    assert all(r.reason for r in parsed.rejected)


def test_the_rejected_list_is_capped_but_every_error_is_counted() -> None:
    parsed = parse({"messages": [message(emails=[f"bad{i}" for i in range(250)])]})
    assert parsed.rejected_count == 250
    assert len(parsed.rejected) == REJECTED_LIST_CAP
    assert parsed.accepted == 0


def test_rejected_addresses_are_truncated_in_the_response() -> None:
    parsed = parse({"messages": [message(emails=["x" * 5000])]})
    assert parsed.rejected[0].email == "x" * 320


def test_duplicates_within_a_message_are_sent_once_but_not_across_messages() -> None:
    parsed = parse(
        {
            "messages": [
                message(
                    emails=["a@example.com", "A@Example.COM", " a@example.com ", "b@example.com"]
                ),
                message(topic_id="other", emails=["a@example.com"]),
            ]
        }
    )
    assert parsed.total == 5
    assert parsed.duplicates == 2
    assert parsed.accepted == 3
    assert parsed.messages[0].emails == ("a@example.com", "b@example.com")
    assert parsed.messages[1].emails == ("a@example.com",)


def test_addresses_are_normalised() -> None:
    parsed = parse({"messages": [message(emails=["  user@EXAMPLE.com\n", "ok@bücher.example"])]})
    assert parsed.messages[0].emails[0] == "user@example.com"
    assert parsed.accepted == 2


def test_an_empty_email_list_is_accepted_with_nothing_to_send() -> None:
    parsed = parse({"messages": [message(emails=[])]})
    assert (parsed.total, parsed.accepted, parsed.rejected_count) == (0, 0, 0)


# -- idempotency digest ---------------------------------------------------------------------------


def test_the_body_digest_ignores_key_order_and_white_space() -> None:
    first = json.loads(ORIGINAL_EXAMPLE)
    reordered = json.loads(json.dumps(dict(reversed(list(first.items()))), indent=4))
    assert body_digest(first) == body_digest(reordered)
    changed = json.loads(ORIGINAL_EXAMPLE)
    changed["messages"][0]["emails"].append("user3@example.com")
    assert body_digest(first) != body_digest(changed)
    assert body_digest({"s": "\ud800"}) != body_digest({"s": "x"})  # lone surrogates hash too


# -- large bodies are parsed off the event loop, with the same answers ---------------------------


@pytest.mark.parametrize("size", ["small", "large"])
async def test_large_bodies_are_parsed_in_a_thread_with_the_same_answers(
    size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies of OFF_LOOP_BYTES and more go to a worker thread; errors raised there are the same
    JSON 400s (the context has no store: these requests must be answered before it)."""
    threads: list[bool] = []
    digests: list[bool] = []
    real = messages.parse_and_digest

    def spy(raw: bytes, *, digest: bool = True) -> Any:
        threads.append(threading.current_thread() is not threading.main_thread())
        digests.append(digest)
        return real(raw, digest=digest)

    monkeypatch.setattr(messages, "parse_and_digest", spy)
    count = 10 if size == "small" else 3000  # about 0.3 KB or 90 KB
    emails = [f"someone.with.a.long.name{n}@example.org" for n in range(count)]
    body = {"messages": [{"topic_id": "t", "emails": emails, "content": "<p>x</p>"}]}
    app = build_app()
    app.context.now_ms = lambda: 0  # type: ignore[misc]
    client = app.test_client()
    headers = {"X-API-KEY": API_KEY}
    response = await client.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == 400
    assert await response.get_json() == {"error": "messages[0].subject must be a non-empty string"}
    broken = json.dumps(body).encode()[:-1]
    response = await client.post(
        "/v1/messages", data=broken, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in (await response.get_json())["error"]
    assert threads == [size == "large"] * 2
    assert digests == [False, False]  # no Idempotency-Key: the body's digest is not needed


# -- tracking choices ------------------------------------------------------------------------------


def test_tracking_choices_default_to_the_settings_and_a_message_overrides_them() -> None:
    content = (
        '<p><a href="https://a.example/?x=1&amp;y=2">a</a> <a href="mailto:m@example.com">m</a>'
        ' <a href="https://sesender.example/v1/unsubscribe">own</a></p>'
    )
    payload = {
        "messages": [
            message(content=content),
            message(content=content, track_clicks=True, track_opens=False),
            message(content=content, track_clicks=None, track_opens=None),
        ]
    }
    default, chosen, null = parse_submission(
        payload,
        max_recipients=10,
        timezone=ZoneInfo("UTC"),
        track_opens=True,
        track_clicks=False,
        public_url="https://sesender.example",
    ).messages
    assert (default.track_opens, default.track_clicks, default.links) == (True, False, ())
    assert (chosen.track_opens, chosen.track_clicks) == (False, True)
    assert chosen.links == ("https://a.example/?x=1&y=2",)
    assert (null.track_opens, null.track_clicks) == (True, False)
    (on,) = parse_submission(
        {"messages": [message(content=content)]},
        max_recipients=10,
        timezone=ZoneInfo("UTC"),
        track_clicks=True,
        public_url="https://sesender.example",
    ).messages
    assert on.track_clicks is True
    assert on.links == ("https://a.example/?x=1&y=2",)


@pytest.mark.parametrize("field", ["track_opens", "track_clicks"])
@pytest.mark.parametrize("value", ["true", 1, 0, [], {}])
def test_a_tracking_choice_that_is_not_a_boolean_is_a_400(field: str, value: Any) -> None:
    problem = refused({"messages": [message(**{field: value})]})
    assert problem == f"messages[0].{field} must be true or false"


# -- issue 20: gaps that mutation testing found ----------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("not-an-address", "An email address must have an @-sign."),
        ("a@b", "The part after the @-sign is not valid. It should have a period."),
        ("x@exa mple.com", "The part after the @-sign contains invalid characters: SPACE."),
        ("", "The email address is empty."),
    ],
)
def test_a_refused_address_says_why(address: str, reason: str) -> None:
    """The reason is email-validator's own sentence, not a generic "invalid"."""
    parsed = parse({"messages": [message(emails=[address])]})
    assert [(item.email, item.reason) for item in parsed.rejected] == [(address, reason)]


@pytest.mark.parametrize("item", [7, None, 1.5, ["a@example.com"], True])
def test_a_recipient_that_is_not_a_string_says_so(item: Any) -> None:
    parsed = parse({"messages": [message(emails=[item, "ok@example.com"])]})
    assert [(entry.email, entry.reason) for entry in parsed.rejected] == [
        (str(item), "not a string")
    ]
    assert parsed.accepted == 1


def test_a_long_non_string_recipient_is_cut_to_320_characters() -> None:
    parsed = parse({"messages": [message(emails=[["x" * 400]])]})
    assert parsed.rejected[0].email == str(["x" * 400])[:320]
    assert len(parsed.rejected[0].email) == 320


def test_the_idempotency_window_is_24_hours() -> None:
    assert timedelta(hours=24) == IDEMPOTENCY_WINDOW


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"emails": "a@example.com"},
            "messages[0].emails must be a list of addresses or"
            ' {"email": ..., "data": {...}} objects',
        ),
        (
            {"topic_id": "t" * 257},
            "messages[0].topic_id must be at most 256 characters without control characters",
        ),
        (
            {"subject": "s" * 999},
            "messages[0].subject must be one line of at most 998 characters",
        ),
    ],
)
def test_shape_errors_say_exactly_what_is_expected(change: dict[str, Any], expected: str) -> None:
    assert refused({"messages": [message(**change)]}) == expected


def test_refused_addresses_add_up_across_messages_and_the_list_stays_capped() -> None:
    parsed = parse(
        {
            "messages": [
                message(emails=[f"bad{i}" for i in range(80)]),
                message(emails=[f"worse{i}" for i in range(80)] + ["ok@example.com"]),
            ]
        }
    )
    assert parsed.rejected_count == 160
    assert len(parsed.rejected) == REJECTED_LIST_CAP
    assert parsed.rejected[-1].email == f"worse{REJECTED_LIST_CAP - 81}"
    assert parsed.accepted == 1


def test_unsubscribe_links_are_available_unless_told_otherwise() -> None:
    body = {"messages": [message(content="<a href='{{unsubscribe_url}}'>x</a>", data={})]}
    assert parse(body).accepted == 1
    with pytest.raises(ApiError, match="unsubscribe"):
        parse_submission(
            body, max_recipients=10, timezone=ZoneInfo("UTC"), unsubscribe_available=False
        )


def test_by_default_opens_are_tracked_and_clicks_are_not() -> None:
    """The defaults of parse_submission are the service's defaults (TRACK_OPENS on,
    TRACK_CLICKS off) for a message that does not choose."""
    content = '<p><a href="https://a.example/">a</a></p>'
    (chosen,) = parse({"messages": [message(content=content)]}).messages
    assert (chosen.track_opens, chosen.track_clicks, chosen.links) == (True, False, ())


def test_an_allowed_sender_is_kept_and_a_refused_one_is_named_by_its_message() -> None:
    policy = SenderPolicy("News <news@example.com>", ("example.org",))
    payload = {
        "messages": [
            message(),
            message(**{"from": "Sales <sales@example.org>"}, reply_to="help@example.org"),
        ]
    }
    parsed = parse_submission(
        payload, max_recipients=10, timezone=ZoneInfo("UTC"), senders=policy
    ).messages
    assert [m.sender for m in parsed] == [None, "Sales <sales@example.org>"]
    assert [m.reply_to for m in parsed] == [None, "help@example.org"]
    payload["messages"].append(message(**{"from": "x@elsewhere.example"}))
    with pytest.raises(ApiError, match=r"^messages\[2\]\.from 'x@elsewhere\.example' is not"):
        parse_submission(payload, max_recipients=10, timezone=ZoneInfo("UTC"), senders=policy)
