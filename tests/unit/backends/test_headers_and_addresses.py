"""Custom-header rules (SES v2 limits, injection), 7-bit address normalisation, and the one check
of both together that the SES and outbox backends share."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.backends.addresses import PLAIN_ADDRESS, ascii_address, parsed_ascii_address
from sesender.backends.base import OutgoingEmail
from sesender.backends.headers import (
    explain_custom_headers,
    require_single_line,
    validate_custom_headers,
)
from sesender.backends.outbox import build_message
from sesender.backends.sendable import check_sendable
from sesender.backends.ses import build_send_email_request
from sesender.errors import PermanentSendError

UNSUBSCRIBE = (
    ("List-Unsubscribe", "<https://example.com/v1/unsubscribe?token=abc>"),
    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
)


@pytest.mark.parametrize(
    "headers",
    [
        (),
        UNSUBSCRIBE,
        tuple((f"X-Custom-{n}", "value") for n in range(15)),
        (("X", "v" * 995),),
        (("N" * 126, "v" * 870),),
        (("X-Spaces", "a value with spaces"),),
    ],
)
def test_valid_headers_pass(headers: tuple[tuple[str, str], ...]) -> None:
    validate_custom_headers(headers)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        (tuple((f"X-Custom-{n}", "value") for n in range(16)), "at most 15"),
        ((("X:Colon", "v"),), "invalid header name"),
        ((("X Space", "v"),), "invalid header name"),
        ((("", "v"),), "invalid header name"),
        ((("N" * 127, "v"),), "invalid header name"),
        ((("X-Ünicode", "v"),), "invalid header name"),
        ((("X-Empty", ""),), "invalid value"),
        ((("X-Long", "v" * 996),), "invalid value"),
        ((("X-Accent", "café"),), "invalid value"),
        ((("X-Tab", "a\tb"),), "invalid value"),
        ((("N" * 126, "v" * 871),), "together exceed 996"),
        ((("Bcc", "everyone@example.com"),), "cannot be set"),
        ((("message-id", "<x@y>"),), "cannot be set"),
        ((("CONTENT-TYPE", "text/plain"),), "cannot be set"),
        ((*UNSUBSCRIBE, ("list-unsubscribe", "<https://x>")), "appears twice"),
        ((("X-Inject", "a\r\nBcc: victim@example.com"),), "line break"),
        ((("X-Inject", "a\nBcc: victim@example.com"),), "line break"),
        ((("X-Inject\r\nBcc", "v"),), "line break"),
    ],
)
def test_invalid_headers_fail_permanently(
    headers: tuple[tuple[str, str], ...], problem: str
) -> None:
    with pytest.raises(PermanentSendError, match=problem) as caught:
        validate_custom_headers(headers)
    assert caught.value.code == "InvalidHeaders"


# Names and values near every rule's edge: SES's own, builtin ones, forbidden and single-use
# names in any case, control and non-ASCII characters, lengths around the limits.
HEADER_TEXT = st.one_of(
    st.sampled_from(
        [
            "X-Custom",
            "List-Unsubscribe",
            "list-UNSUBSCRIBE",
            "List-Unsubscribe-Post",
            "Bcc",
            "Message-ID",
            "X:Colon",
            "X Space",
            "",
            "a\r\nBcc: x",
            "café",
            "a\tb",
            "a\x7fb",
            "N" * 126,
            "N" * 127,
            "v" * 870,
            "v" * 871,
            "v" * 995,
            "v" * 996,
        ]
    ),
    st.text(max_size=12),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x80), max_size=20),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(HEADER_TEXT, HEADER_TEXT), max_size=17))
def test_the_fast_check_refuses_exactly_what_the_full_check_refuses(
    pairs: list[tuple[str, str]],
) -> None:
    """``validate_custom_headers`` decides the names once per set and the values by ``str``
    methods; ``explain_custom_headers`` runs every rule in order: the same headers pass, and
    the same first problem is reported, asked once or twice (the names' verdict is cached)."""
    headers = tuple(pairs)
    expected: str | None = None
    try:
        explain_custom_headers(headers)
    except PermanentSendError as error:
        expected = str(error)
    for _ in range(2):
        if expected is None:
            validate_custom_headers(headers)
        else:
            with pytest.raises(PermanentSendError) as caught:
                validate_custom_headers(headers)
            assert str(caught.value) == expected


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\r\nb"])
def test_require_single_line(value: str) -> None:
    with pytest.raises(PermanentSendError, match="subject contains a line break"):
        require_single_line("subject", value)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@example.org", "user@example.org"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("user@BÜCHER.de", "user@xn--bcher-kva.de"),
        ("News <news@example.com>", "News <news@example.com>"),
        ("Grüße <news@bücher.de>", "=?utf-8?b?R3LDvMOfZQ==?= <news@xn--bcher-kva.de>"),
        ("../../etc/passwd@x.com", "../../etc/passwd@x.com"),
    ],
)
def test_ascii_address(address: str, expected: str) -> None:
    assert ascii_address(address, field="recipient") == expected


@pytest.mark.parametrize(
    "address",
    [
        "user@example.org",
        "First.Last+tag%x_y-z@mail.example-host.org",
        "a@b",
        "user1234@EXAMPLE.ORG",
        "a.b.c@d.e.f",
    ],
)
def test_plain_addresses_skip_the_parse_and_give_what_it_gives(address: str) -> None:
    assert PLAIN_ADDRESS.fullmatch(address)
    assert ascii_address(address, field="recipient") == parsed_ascii_address(
        address, field="recipient"
    )


@pytest.mark.parametrize(
    "address",
    [
        "a..b@example.org",
        ".a@example.org",
        "a.@example.org",
        "a@b..c",
        "a b@example.org",
        "News <news@example.com>",
        "user@bücher.de",
        "a@b@c",
        "user@example.org ",
    ],
)
def test_other_addresses_take_the_full_parse(address: str) -> None:
    assert PLAIN_ADDRESS.fullmatch(address) is None


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("", "not exactly one address"),
        ("a@example.org, b@example.org", "not exactly one address"),
        ("no-domain", "has no domain"),
        ("josé@example.org", "non-ASCII local part"),
        ("user@-bad-.ü", "not a valid internationalised domain"),
        ("user\x00@example.org", "control characters"),
        ("user@example.org\r\nBcc: x@y", "control characters"),
    ],
)
def test_unusable_addresses_fail_permanently(address: str, problem: str) -> None:
    with pytest.raises(PermanentSendError, match=problem) as caught:
        ascii_address(address, field="recipient")
    assert caught.value.code == "InvalidAddress"


SENDABLE = OutgoingEmail(
    request_id=1,
    topic_id="t",
    sender="News <news@example.com>",
    recipient="reader@bücher.example",
    subject="Hello",
    html="<p>hi</p>",
    headers=UNSUBSCRIBE,
)


def test_a_sendable_email_gives_the_addresses_ses_takes() -> None:
    assert check_sendable(SENDABLE) == ("News <news@example.com>", "reader@xn--bcher-kva.example")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"sender": "not an address"}, "sender"),
        ({"recipient": "rëader@example.com"}, "non-ASCII local part"),
        ({"recipient": "a@example.com, b@example.com"}, "not exactly one address"),
        ({"subject": "hi\r\nBcc: everyone@example.com"}, "subject contains a line break"),
        ({"headers": (("Bcc", "everyone@example.com"),)}, "cannot be set as a custom header"),
    ],
)
def test_ses_and_outbox_refuse_the_same_emails_the_same_way(
    changes: dict[str, object], problem: str
) -> None:
    """One check for both backends that build real messages: what SES would refuse, the outbox
    refuses too, with the same message."""
    email = dataclasses.replace(SENDABLE, **changes)  # type: ignore[arg-type]
    with pytest.raises(PermanentSendError, match=problem) as by_check:
        check_sendable(email)
    with pytest.raises(PermanentSendError) as by_ses:
        build_send_email_request(email)
    with pytest.raises(PermanentSendError) as by_outbox:
        build_message(email, unique="u", date=datetime(2026, 1, 1, tzinfo=UTC))
    assert str(by_ses.value) == str(by_outbox.value) == str(by_check.value)
