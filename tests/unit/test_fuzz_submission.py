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
