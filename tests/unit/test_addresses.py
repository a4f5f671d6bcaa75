"""The fast path of AddressValidator agrees with email-validator on every address."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sesender.addresses import check_address


def library(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError:
        return None


LOCAL = st.text(alphabet="aZ09.!#$%&'*+/=?^_`{|}~-\"é @\\\n", min_size=0, max_size=70)
DOMAIN = st.one_of(
    st.sampled_from(
        [
            "example.com",
            "EXAMPLE.COM",
            "x",
            "-x.com",
            "münchen.de",
            "a..b",
            "[1.2.3.4]",
            "xn--mnchen-3ya.de",
            "ex ample.com",
            "example.com.",
            "a" * 64 + ".com",
        ]
    ),
    st.text(alphabet="abcXYZ-.09", min_size=0, max_size=70),
)


@settings(max_examples=1500, deadline=None)
@given(local=LOCAL, domain=DOMAIN)
@example(local="a" * 64, domain="b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".com")
@example(local="user", domain="example.com")
@example(local="a..b", domain="example.com")
def test_fast_path_accepts_exactly_what_the_library_accepts(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert check_address(address).normalized == library(address)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_string_never_raises(address: str) -> None:
    result = check_address(address)
    assert (result.normalized is None) != (result.reason is None)


def test_a_non_ascii_local_part_is_refused_at_submission_with_a_reason() -> None:
    """SES has no SMTPUTF8: accepting one would only end Failed at send time."""
    check = check_address("josé@example.org")
    assert check.normalized is None
    assert check.reason is not None
    assert "internationalized characters before the @-sign" in check.reason.lower()
    # A non-ASCII domain is fine: it is sent as IDNA.
    assert check_address("jose@münchen.de").normalized == "jose@münchen.de"
