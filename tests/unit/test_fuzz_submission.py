"""Arbitrary JSON into the submission parser: a clean 400 (ApiError) or a valid parse, never
anything else, and never an address that fails the library's own validation."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.errors import ApiError
from sesender.http.submission import parse_submission

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
ADDRESS = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=15), st.text(max_size=15)),
    st.sampled_from(
        [
            "a@example.com",
            "A@EXAMPLE.com",
            "a\r\nBcc: x@y.com@example.com",
            "x@-bad.com",
            "\x00@example.com",
        ]
    ),
)
MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "topic_id": st.one_of(st.text(max_size=300), JSON),
        "emails": st.one_of(st.lists(st.one_of(ADDRESS, JSON), max_size=8), JSON),
        "subject": st.one_of(st.text(max_size=50), JSON),
        "content": st.one_of(st.text(max_size=50), JSON),
    },
)
BODY = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"messages": st.one_of(st.lists(MESSAGE, max_size=3), JSON)},
        optional={"scheduled_at": st.one_of(st.text(max_size=30), JSON)},
    ),
)


@settings(max_examples=200, deadline=None)
@given(BODY)
def test_any_json_is_a_400_or_a_valid_submission(payload: object) -> None:
    try:
        parsed = parse_submission(payload, max_recipients=5, timezone=ZoneInfo("UTC"))
    except ApiError as error:
        refused: ApiError | None = error
    else:
        refused = None
    if refused is not None:
        assert refused.status == 400
        assert refused.message
        return
    assert parsed.accepted + parsed.rejected_count + parsed.duplicates == parsed.total
    assert parsed.total <= 5
    for message in parsed.messages:
        assert "\r" not in message.subject
        assert "\n" not in message.subject
        assert message.subject.strip()
        assert message.body.strip()
        for email in message.emails:
            try:
                validate_email(email, check_deliverability=False)
            except EmailNotValidError as exc:  # pragma: no cover - the assertion below fails
                raise AssertionError(f"accepted an invalid address {email!r}") from exc
            assert "\r" not in email
            assert "\n" not in email


# -- merge fields: recipient objects and message data ---------------------------------------------

NAME = st.one_of(
    st.sampled_from(["first_name", "plan", "email", "unsubscribe_url", "x"]),
    st.text(max_size=8),
)
VALUE = st.one_of(
    JSON,
    st.text(max_size=20),
    st.sampled_from(["<b>x</b>", "a\r\nBcc: y@example.com", "\x00", "\ud800", "x" * 1001]),
    st.floats(),
)
DATA = st.one_of(st.dictionaries(NAME, VALUE, max_size=5), JSON)
RECIPIENT = st.one_of(
    ADDRESS,
    st.fixed_dictionaries({"email": ADDRESS}, optional={"data": DATA}),
    st.dictionaries(st.sampled_from(["email", "data", "Data", "name"]), JSON, max_size=3),
)
TEMPLATE_TEXT = st.sampled_from(
    ["Hi {{first_name}}", "{{ plan }} {{x}}", "{{email}}", "<p>{{unsubscribe_url}}</p>", "plain"]
)
TEMPLATE_MESSAGE = st.fixed_dictionaries(
    {
        "emails": st.lists(RECIPIENT, max_size=6),
        "subject": TEMPLATE_TEXT,
        "content": TEMPLATE_TEXT,
    },
    optional={"data": st.one_of(DATA, st.none())},
)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEMPLATE_MESSAGE, min_size=1, max_size=2), st.booleans())
def test_any_merge_data_is_refused_or_gives_clean_values(
    messages: list[dict[str, object]], unsubscribe: bool
) -> None:
    try:
        parsed = parse_submission(
            {"messages": messages},
            max_recipients=20,
            timezone=ZoneInfo("UTC"),
            unsubscribe_available=unsubscribe,
        )
    except ApiError as error:
        refused: ApiError | None = error
    else:
        refused = None
    if refused is not None:
        assert refused.status == 400
        assert refused.message
        return
    assert parsed.accepted + parsed.rejected_count + parsed.duplicates == parsed.total
    for rejected in parsed.rejected:
        assert rejected.reason
    for raw, message in zip(messages, parsed.messages, strict=True):
        is_template = raw.get("data") is not None or any(
            isinstance(item, dict)
            for item in raw["emails"]  # type: ignore[attr-defined]
        )
        if not is_template:
            assert message.data is None
            continue
        assert message.data is not None
        assert len(message.data) == len(message.emails)
        for values in message.data:
            for name, value in values.items():
                assert name not in ("email", "unsubscribe_url")
                assert isinstance(value, str)
                assert len(value) <= 1000
                assert "\x00" not in value
                value.encode("utf-8")
                if f"{{{{{name}}}}}" in message.subject or f"{{{{ {name} }}}}" in message.subject:
                    assert "\r" not in value
                    assert "\n" not in value
