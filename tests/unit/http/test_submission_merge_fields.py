"""``POST /v1/messages`` with merge fields (recipient objects, message data): parsing only."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sesender.errors import ApiError
from sesender.http.submission import (
    REJECTED_LIST_CAP,
    ParsedSubmission,
    body_digest,
    parse_submission,
)

SUBJECT = "Hello {{ first_name }}"
CONTENT = "<p>Your plan: {{plan}}</p><p>{{ email }} {{unsubscribe_url}}</p>"


def message(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "topic_id": "t",
        "emails": [{"email": "ada@example.com", "data": {"first_name": "Ada", "plan": "pro"}}],
        "subject": SUBJECT,
        "content": CONTENT,
    }
    base.update(overrides)
    return base


def parse(*messages: dict[str, Any], unsubscribe: bool = True) -> ParsedSubmission:
    return parse_submission(
        {"messages": list(messages)},
        max_recipients=10_000,
        timezone=ZoneInfo("UTC"),
        unsubscribe_available=unsubscribe,
    )


def rejected(parsed: ParsedSubmission) -> dict[str, str]:
    return {r.email: r.reason for r in parsed.rejected}


def test_a_plain_message_with_braces_is_not_a_template() -> None:
    """No data and only string recipients: sent exactly as given, as by the original service."""
    parsed = parse(message(emails=["a@example.com"], subject="{{x}}", content="<p>{{ y }}</p>"))
    (only,) = parsed.messages
    assert only.data is None
    assert (only.subject, only.body) == ("{{x}}", "<p>{{ y }}</p>")
    assert parsed.accepted == 1
    assert parsed.rejected_count == 0


def test_recipient_objects_carry_the_fields_the_template_uses() -> None:
    parsed = parse(
        message(
            emails=[
                {"email": " ada@example.com ", "data": {"first_name": "Ada", "plan": "pro"}},
                {"email": "bob@example.com", "data": {"first_name": "Bob", "unused": 7}},
                "cy@example.com",
            ],
            data={"plan": "free", "first_name": "friend"},
        )
    )
    (only,) = parsed.messages
    assert only.emails == ("ada@example.com", "bob@example.com", "cy@example.com")
    # Only the fields the template uses are kept; the recipient's own value wins.
    assert only.data == (
        {"first_name": "Ada", "plan": "pro"},
        {"first_name": "Bob", "plan": "free"},
        {"first_name": "friend", "plan": "free"},
    )
    assert (only.subject, only.body) == (SUBJECT, CONTENT)  # stored unrendered


def test_message_data_alone_makes_a_template() -> None:
    parsed = parse(
        message(emails=["a@example.com"], subject="Hi {{n}}", content="<p>x</p>", data={"n": 3})
    )
    assert parsed.messages[0].data == ({"n": "3"},)


def test_a_template_without_fields_still_stores_empty_values() -> None:
    parsed = parse(message(subject="Hi", content="<p>Hi</p>", data={}))
    assert parsed.messages[0].data == ({},)


def test_a_recipient_without_a_needed_field_is_refused_by_name_and_others_go_ahead() -> None:
    parsed = parse(
        message(
            emails=[
                {"email": "ada@example.com", "data": {"first_name": "Ada", "plan": "pro"}},
                {"email": "bob@example.com", "data": {"first_name": "Bob"}},
                {"email": "cy@example.com"},
            ]
        )
    )
    assert parsed.messages[0].emails == ("ada@example.com",)
    assert parsed.rejected_count == 2
    assert parsed.accepted == 1
    assert rejected(parsed) == {
        "bob@example.com": "no value for merge field plan",
        "cy@example.com": "no value for merge fields first_name, plan",
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"first_name": "A\r\nBcc: x@example.com", "plan": "p"}, "used in the subject"),
        ({"first_name": "A\nB", "plan": "p"}, "line break"),
        ({"first_name": "A", "plan": ["x"]}, "data.plan must be a string, number or boolean"),
        ({"first_name": "A", "plan": {"x": 1}}, "not an object"),
        ({"first_name": "A", "plan": None}, "not null"),
        ({"first_name": "A", "plan": "x" * 1001}, "longer than 1000"),
        ({"first_name": "A", "plan": "p", "bad name": 1}, "'bad name'"),
        ({"first_name": "A", "plan": "p", "email": "x@example.com"}, "provided by sesender"),
        ({f"f{n}": "v" for n in range(51)}, "at most 50"),
        ("not an object", "data must be an object"),
        (["x"], "data must be an object"),
    ],
)
def test_hostile_recipient_data_refuses_that_recipient_with_a_reason(
    data: Any, reason: str
) -> None:
    parsed = parse(
        message(emails=[{"email": "bad@example.com", "data": data}, "good@example.com"]),
        message(emails=["other@example.com"], data={"first_name": "X", "plan": "p"}),
    )
    assert reason in rejected(parsed)["bad@example.com"]
    assert parsed.messages[0].emails == ()  # good@ has no first_name: refused too
    assert parsed.messages[1].emails == ("other@example.com",)


def test_a_line_break_in_a_value_only_the_html_uses_is_accepted() -> None:
    parsed = parse(message(data={"first_name": "Ada", "plan": "pro\nplus"}))
    assert parsed.messages[0].data == ({"first_name": "Ada", "plan": "pro"},)  # own data wins
    parsed = parse(message(emails=["a@example.com"], data={"first_name": "Ada", "plan": "a\nb"}))
    assert parsed.messages[0].data == ({"first_name": "Ada", "plan": "a\nb"},)


def test_a_merged_subject_over_998_characters_is_refused() -> None:
    parsed = parse(message(emails=["a@example.com"], data={"first_name": "x" * 995, "plan": "p"}))
    assert "longer than 998" in rejected(parsed)["a@example.com"]


@pytest.mark.parametrize(
    ("item", "shown", "reason"),
    [
        ({"data": {"first_name": "A"}}, '{"data": {"first_name": "A"}}', "email must be a string"),
        ({"email": 5}, '{"email": 5}', "email must be a string"),
        ({"email": "a@example.com", "Data": {}}, "a@example.com", "unknown key 'Data'"),
        ({"email": "not an address"}, "not an address", ""),
        (7, "7", "not a string or an object"),
        (None, "None", "not a string or an object"),
    ],
)
def test_malformed_recipient_objects_are_rejected_not_fatal(
    item: Any, shown: str, reason: str
) -> None:
    parsed = parse(message(emails=[item, "ok@example.com"], data={"first_name": "A", "plan": "p"}))
    assert parsed.messages[0].emails == ("ok@example.com",)
    assert reason in rejected(parsed)[shown]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([], "messages[0].data must be an object"),
        ({"x": [1]}, "messages[0].data.x must be"),
        ({"unsubscribe_url": "https://x"}, "provided by sesender"),
    ],
)
def test_unusable_message_data_refuses_the_request(data: Any, reason: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(message(data=data))
    assert caught.value.status == 400
    assert reason in caught.value.message


def test_data_null_is_the_same_as_no_data() -> None:
    parsed = parse(message(emails=["a@example.com"], subject="{{x}}", data=None))
    assert parsed.messages[0].data is None


def test_unsubscribe_url_in_a_template_needs_unsubscribe_enabled() -> None:
    assert parse(message(), unsubscribe=True).accepted == 1
    with pytest.raises(ApiError) as caught:
        parse(message(), unsubscribe=False)
    assert caught.value.status == 400
    assert "{{unsubscribe_url}}" in caught.value.message
    assert "UNSUBSCRIBE_ENABLED" in caught.value.message
    # Without that placeholder a template is fine either way; {{email}} is always provided.
    fine = message(content="<p>{{ email }} {{plan}}</p>")
    assert parse(fine, unsubscribe=False).messages[0].data == (
        {"first_name": "Ada", "plan": "pro"},
    )


def test_duplicates_keep_the_first_recipient_and_its_data() -> None:
    parsed = parse(
        message(
            emails=[
                {"email": "ada@example.com", "data": {"first_name": "Ada", "plan": "pro"}},
                {"email": "ADA@example.com", "data": {"first_name": "Other", "plan": "free"}},
                "ada@example.com",
            ]
        )
    )
    assert parsed.duplicates == 2
    assert parsed.messages[0].emails == ("ada@example.com",)
    assert parsed.messages[0].data == ({"first_name": "Ada", "plan": "pro"},)


def test_a_refused_recipient_does_not_hide_a_later_valid_duplicate() -> None:
    parsed = parse(
        message(
            emails=[
                {"email": "ada@example.com", "data": {"first_name": "Ada"}},
                {"email": "ada@example.com", "data": {"first_name": "Ada", "plan": "pro"}},
            ]
        )
    )
    assert parsed.messages[0].emails == ("ada@example.com",)
    assert parsed.rejected_count == 1
    assert parsed.duplicates == 0


def test_the_rejected_list_is_capped_but_every_refusal_is_counted() -> None:
    items = [{"email": f"u{n}@example.com"} for n in range(REJECTED_LIST_CAP + 20)]
    parsed = parse(message(emails=items))
    assert parsed.rejected_count == REJECTED_LIST_CAP + 20
    assert len(parsed.rejected) == REJECTED_LIST_CAP


def test_the_idempotency_digest_covers_data() -> None:
    first = {"messages": [message()]}
    changed = {"messages": [message()]}
    changed["messages"][0]["emails"][0]["data"]["plan"] = "free"
    defaults = {"messages": [message(data={"plan": "x"})]}
    assert len({body_digest(first), body_digest(changed), body_digest(defaults)}) == 3


def test_a_template_message_keeps_its_topic() -> None:
    parsed = parse(message(topic_id="welcome"))
    assert [m.topic_id for m in parsed.messages] == ["welcome"]
