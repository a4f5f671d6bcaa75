"""Signed tracking tokens: unforgeable, purpose-bound, compact, and never an exception."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender import tracking
from sesender.tracking import (
    MAX_REQUEST_ID,
    MAX_TOKEN_LENGTH,
    TokenPurpose,
    TokenSigner,
    derive_secret,
)

SECRET = b"0123456789abcdef0123456789abcdef"
SIGNER = TokenSigner(SECRET)
PURPOSES: list[TokenPurpose] = ["open", "click", "unsubscribe"]
URL_SAFE = set(string.ascii_letters + string.digits + "-_")
REQUEST_IDS = st.integers(min_value=1, max_value=MAX_REQUEST_ID)


@settings(max_examples=500, deadline=None)
@given(request_id=REQUEST_IDS, purpose=st.sampled_from(PURPOSES))
def test_round_trip(request_id: int, purpose: TokenPurpose) -> None:
    token = SIGNER.sign(purpose, request_id)

    assert SIGNER.verify(purpose, token) == request_id
    assert set(token) <= URL_SAFE
    assert len(token) <= MAX_TOKEN_LENGTH


@settings(max_examples=200, deadline=None)
@given(request_id=REQUEST_IDS)
def test_a_token_only_works_for_its_own_purpose(request_id: int) -> None:
    assert SIGNER.verify("unsubscribe", SIGNER.sign("open", request_id)) is None
    assert SIGNER.verify("open", SIGNER.sign("unsubscribe", request_id)) is None


@settings(max_examples=200, deadline=None)
@given(request_id=REQUEST_IDS, other=st.binary(min_size=16, max_size=64))
def test_a_token_only_works_with_its_own_secret(request_id: int, other: bytes) -> None:
    if other != SECRET:
        assert TokenSigner(other).verify("open", SIGNER.sign("open", request_id)) is None


@settings(max_examples=1000, deadline=None)
@given(text=st.text(max_size=80) | st.text(alphabet=sorted(URL_SAFE), min_size=20, max_size=40))
def test_random_text_never_verifies_and_never_raises(text: str) -> None:
    for purpose in PURPOSES:
        assert SIGNER.verify(purpose, text) is None


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=17, max_size=25))
def test_well_formed_but_unsigned_tokens_never_verify(data: bytes) -> None:
    token = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert SIGNER.verify("open", token) is None


def test_every_single_character_change_is_refused() -> None:
    for request_id in (1, 127, 128, 300, 2**32, MAX_REQUEST_ID):
        token = SIGNER.sign("unsubscribe", request_id)
        for index, original in enumerate(token):
            for replacement in "AQgw-_9":  # covers every residue of the last character's bits
                if replacement == original:
                    continue
                forged = token[:index] + replacement + token[index + 1 :]
                assert SIGNER.verify("unsubscribe", forged) is None, (request_id, index)


def test_truncated_and_extended_tokens_are_refused() -> None:
    token = SIGNER.sign("open", 123456)
    for length in range(len(token)):
        assert SIGNER.verify("open", token[:length]) is None
    for suffix in ("A", "AA", "=", "==", "\n", " ", "%3D", "." * 100):
        assert SIGNER.verify("open", token + suffix) is None
    assert SIGNER.verify("open", " " + token) is None


def test_padding_and_standard_alphabet_spellings_are_refused() -> None:
    token = next(
        t for t in (SIGNER.sign("open", n) for n in range(1, 1000)) if "-" in t or "_" in t
    )
    standard = token.replace("-", "+").replace("_", "/")
    assert SIGNER.verify("open", standard) is None
    padded = token + "=" * (-len(token) % 4)
    if padded != token:
        assert SIGNER.verify("open", padded) is None


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "A",
        "0",
        "42",
        "-1",
        "é" * 30,
        "\x00" * 30,
        "A" * 10_000,
        "A" * 23,
        "A" * 25,  # a length no base64 text can have
    ],
)
def test_garbage_is_refused(garbage: str) -> None:
    assert SIGNER.verify("open", garbage) is None


def test_look_alike_characters_are_refused() -> None:
    """A valid token spelt in fullwidth letters (NFKC-equal to the real one) is not a token."""
    token = SIGNER.sign("open", 7)
    fullwidth = "".join(chr(ord(character) + 0xFEE0) for character in token)
    assert SIGNER.verify("open", fullwidth) is None


@pytest.mark.parametrize("value", [None, 42, b"token", ["token"], object()])
def test_non_strings_are_refused_without_raising(value: Any) -> None:
    assert SIGNER.verify("open", value) is None


@pytest.mark.parametrize("purpose", ["", "Open", "click", None, ["open"], {}])
def test_unknown_purpose_never_verifies(purpose: Any) -> None:
    token = SIGNER.sign("open", 7)
    assert SIGNER.verify(purpose, token) is None


def test_tokens_are_compact() -> None:
    assert len(SIGNER.sign("open", 1)) == 23
    assert len(SIGNER.sign("open", 10_000_000)) == 27  # 4-byte varint + 16-byte tag
    assert len(SIGNER.sign("open", MAX_REQUEST_ID)) == MAX_TOKEN_LENGTH == 34
    assert "=" not in SIGNER.sign("unsubscribe", 2**40)


def test_tokens_are_deterministic_and_distinct() -> None:
    assert SIGNER.sign("open", 5) == TokenSigner(SECRET).sign("open", 5)
    tokens = {SIGNER.sign(purpose, n) for purpose in PURPOSES for n in range(1, 2000)}
    assert len(tokens) == len(PURPOSES) * 1999


@pytest.mark.parametrize("request_id", [0, -1, MAX_REQUEST_ID + 1, True, 1.0, "1"])
def test_sign_refuses_impossible_request_ids(request_id: Any) -> None:
    with pytest.raises(ValueError, match="request_id"):
        SIGNER.sign("open", request_id)


def test_sign_refuses_unknown_purposes() -> None:
    with pytest.raises(ValueError, match="purpose"):
        SIGNER.sign("link", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("secret", [b"", b"short", b"x" * 15, "a string secret of enough length"])
def test_signer_refuses_weak_secrets(secret: Any) -> None:
    with pytest.raises(ValueError, match="secret"):
        TokenSigner(secret)


def test_repr_hides_the_secret() -> None:
    assert repr(SIGNER) == "TokenSigner(secret=<hidden>)"
    assert SECRET.decode() not in repr(SIGNER)


def test_derive_secret() -> None:
    secret = derive_secret("my-api-key")

    assert len(secret) == 32
    assert secret == derive_secret("my-api-key")
    assert secret != derive_secret("my-api-kez")
    assert b"my-api-key" not in secret
    signer = TokenSigner(secret)
    assert signer.verify("open", signer.sign("open", 9)) == 9
    assert derive_secret("\udcff")  # an undecodable byte from os.environ does not crash
    with pytest.raises(ValueError, match="empty"):
        derive_secret("")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x01", 1),
        (b"\x7f", 127),
        (b"\x80\x01", 128),
        (b"\xff" * 8 + b"\x7f", MAX_REQUEST_ID),
        (b"", None),
        (b"\x00", None),  # zero is not a request id
        (b"\x81\x00", None),  # non-minimal encoding of 1
        (b"\x81", None),  # continuation bit on the last byte
        (b"\x01\x01", None),  # no continuation bit before the last byte
        (b"\xff" * 8 + b"\xff\x01", None),  # ten bytes
        (b"\x80" * 8 + b"\x01", 2**56),
        (b"\x80" * 9, None),
        (b"\xff" * 9, None),
    ],
)
def test_varint_decoding_is_strict(payload: bytes, expected: int | None) -> None:
    """Behind the MAC, only the one canonical encoding of an id in range is accepted."""
    assert tracking._decode_varint(payload) == expected
    if expected is not None:
        assert tracking._encode_varint(expected) == payload


def test_tokens_are_unchanged_from_earlier_versions() -> None:
    """Known answers, computed with the token code as it was before secret rotation existed:
    links already in mailboxes must keep verifying, so neither format nor derivation may move."""
    assert SIGNER.sign("open", 1) == "AfvcaDmGE44lEzdFpJJrbRo"
    assert SIGNER.sign("unsubscribe", 123456789) == "lZrvOutyi-IUhIlqwRss8CUovho"
    legacy = TokenSigner(derive_secret("my-api-key"))
    assert legacy.sign("unsubscribe", 42) == "Kl3CRvU8LfuNt_wvvhxHblM"
    rotated = TokenSigner(b"n" * 32, previous=[derive_secret("my-api-key")])
    assert rotated.verify("unsubscribe", "Kl3CRvU8LfuNt_wvvhxHblM") == 42


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=0, max_size=200), message=st.binary(max_size=300))
def test_precomputed_hmac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    """The signer's HMAC with the padded key blocks hashed once is RFC 2104 HMAC-SHA256, for
    keys shorter than, as long as and longer than SHA-256's block (64 bytes)."""
    expected = hmac.new(key, message, hashlib.sha256).digest()
    assert tracking._HmacSha256(key).digest(message) == expected
    signer = tracking._HmacSha256(key)
    assert signer.digest(message) == signer.digest(message) == expected  # states reused intact


@given(raw=st.binary(max_size=40))
def test_token_encoding_is_unpadded_base64url(raw: bytes) -> None:
    assert tracking._encode_token(raw) == base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


OLD_SECRET = b"old-secret-old-secret-old-secret"
OLDER_SECRET = b"older-secret-older-secret-older!"


@settings(max_examples=200, deadline=None)
@given(request_id=REQUEST_IDS, purpose=st.sampled_from(PURPOSES))
def test_previous_secrets_verify_and_the_current_one_signs(
    request_id: int, purpose: TokenPurpose
) -> None:
    rotated = TokenSigner(SECRET, previous=[OLD_SECRET, OLDER_SECRET])
    for secret in (SECRET, OLD_SECRET, OLDER_SECRET):
        token = TokenSigner(secret).sign(purpose, request_id)
        assert rotated.verify(purpose, token) == request_id
    # New tokens are the current secret's: exactly what a signer of SECRET alone makes.
    assert rotated.sign(purpose, request_id) == SIGNER.sign(purpose, request_id)
    assert TokenSigner(OLD_SECRET).verify(purpose, rotated.sign(purpose, request_id)) is None


def test_previous_secrets_keep_purposes_apart_and_refuse_strangers() -> None:
    rotated = TokenSigner(SECRET, previous=[OLD_SECRET])
    old = TokenSigner(OLD_SECRET)
    assert rotated.verify("unsubscribe", old.sign("open", 5)) is None
    assert rotated.verify("open", old.sign("unsubscribe", 5)) is None
    assert rotated.verify("open", TokenSigner(OLDER_SECRET).sign("open", 5)) is None
    # A secret no longer listed is no longer accepted: that is how a leaked one is retired.
    assert TokenSigner(SECRET).verify("open", old.sign("open", 5)) is None


def test_previous_secrets_are_checked_like_the_current_one() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        TokenSigner(SECRET, previous=[b"short"])
    # The current secret repeated, or a secret listed twice, changes nothing.
    same = TokenSigner(SECRET, previous=[SECRET, OLD_SECRET, OLD_SECRET])
    assert same.verify("open", TokenSigner(OLD_SECRET).sign("open", 3)) == 3
    assert "old-secret" not in repr(same)


# --- link codes (click tracking) ------------------------------------------------------------------


@given(position=st.integers(0, 2**31 - 1), url=st.text(max_size=200))
def test_a_link_code_names_its_position_and_only_works_for_its_url(position: int, url: str) -> None:
    code = SIGNER.link_code(position, url)
    assert SIGNER.link_position(code) == position
    assert SIGNER.verify_link_code(code, url)
    assert not SIGNER.verify_link_code(code, url + "x")
    assert not TokenSigner(b"another secret of enough length").verify_link_code(code, url)


def test_any_change_to_a_link_code_is_refused() -> None:
    url = "https://example.com/?a=1#f"
    code = SIGNER.link_code(3, url)
    for index in range(len(code)):
        for replacement in "A_-0z":
            altered = code[:index] + replacement + code[index + 1 :]
            if altered != code:
                assert not SIGNER.verify_link_code(altered, url), altered
    for altered in (code[:-1], code + "A", "", "!" * len(code), code.upper()):
        assert not SIGNER.verify_link_code(altered, url)
    # A link code is not a token of any purpose, and no token is a link code.
    assert SIGNER.verify("click", code) is None
    assert not SIGNER.verify_link_code(SIGNER.sign("click", 3), url)


def test_link_codes_made_before_a_rotation_stay_valid() -> None:
    old = TokenSigner(b"the old secret of enough length")
    code = old.link_code(0, "https://example.com/")
    rotated = TokenSigner(
        b"the new secret of enough length", previous=[b"the old secret of enough length"]
    )
    assert rotated.verify_link_code(code, "https://example.com/")
    assert rotated.link_code(0, "https://example.com/") != code


# -- issue 20: gaps that mutation testing found ----------------------------------------------


def rfc5869_hkdf_sha256(key: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 written out from RFC 5869 with ``hmac`` only: an independent derivation."""
    prk = hmac.new(salt, key, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def test_derive_secret_known_answer() -> None:
    """The salt and info of the derivation are part of every link already sent: changing either
    silently breaks them. Pinned by a known answer and by the RFC 5869 construction (a mutant
    changing ``_SECRET_SALT`` or ``_SECRET_INFO`` fails here)."""
    expected = "5a362844317e9ff397acf8081e0e6715fe996dabc995ba9e26837c5c3bfa7b2f"
    assert derive_secret("my-api-key").hex() == expected
    independent = rfc5869_hkdf_sha256(
        b"my-api-key",
        salt=b"sesender/tracking-secret/v1",
        info=b"sesender tracking secret derived from API_KEY",
        length=32,
    )
    assert independent.hex() == expected


def other_spellings(token: str) -> list[str]:
    """Every other base64url spelling of the same bytes: the last character with different
    unused low bits (base64 decoders ignore them)."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    unused_bits = {2: 4, 3: 2}.get(len(token) % 4, 0)
    last = alphabet.index(token[-1])
    keep = last >> unused_bits
    return [
        token[:-1] + alphabet[(keep << unused_bits) | low]
        for low in range(1 << unused_bits)
        if (keep << unused_bits) | low != last
    ]


@settings(max_examples=300, deadline=None)
@given(request_id=REQUEST_IDS, purpose=st.sampled_from(PURPOSES))
def test_every_spelling_but_the_canonical_one_is_refused(
    request_id: int, purpose: TokenPurpose
) -> None:
    """The re-encoding check: a token re-spelt with other unused low bits decodes to the same
    bytes and the same valid MAC, so only ``_encode_token(raw) != token`` refuses it (a mutant
    deleting that check fails here; the earlier test never produced such a spelling)."""
    token = SIGNER.sign(purpose, request_id)
    spellings = other_spellings(token)
    # Payload and tag fill whole base64 groups (no unused bits) only for a multiple of 3 bytes.
    raw_length = len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert bool(spellings) == (raw_length % 3 != 0)
    for spelling in spellings:
        padded = spelling + "=" * (-len(spelling) % 4)
        assert base64.urlsafe_b64decode(padded) == base64.urlsafe_b64decode(
            token + "=" * (-len(token) % 4)
        )
        assert SIGNER.verify(purpose, spelling) is None
    assert SIGNER.verify(purpose, token) == request_id


@pytest.mark.parametrize(
    "payload",
    [
        b"\x81\x80\x00",  # 1, three bytes
        b"\x81\x80\x80\x00",  # 1, four bytes
        b"\xff\xff\x00",  # 16383, three bytes
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x00",  # zero in nine bytes
        b"\x81\x80\x80\x80\x80\x80\x80\x80\x00",  # 1 in nine bytes
    ],
)
def test_non_minimal_varints_of_three_bytes_or_more_are_refused(payload: bytes) -> None:
    assert tracking._decode_varint(payload) is None


@pytest.mark.parametrize(
    ("request_id", "message"),
    [
        (True, "request_id must be an int"),
        ("1", "request_id must be an int"),
        (0, f"request_id must be between 1 and {MAX_REQUEST_ID}"),
    ],
)
def test_sign_says_exactly_what_is_wrong(request_id: Any, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SIGNER.sign("open", request_id)


def test_deriving_from_an_empty_key_says_so() -> None:
    with pytest.raises(
        ValueError, match=r"^cannot derive a tracking secret from an empty API key$"
    ):
        derive_secret("")


@pytest.mark.parametrize(
    ("payload", "position"),
    [
        (tracking._encode_varint(tracking.MAX_LINK_POSITION + 1), tracking.MAX_LINK_POSITION),
        (tracking._encode_varint(tracking.MAX_LINK_POSITION + 2), None),
        (b"\x81\x00", None),  # 1 spelt with a needless zero group: not the canonical spelling
    ],
    ids=["last", "beyond", "non-minimal"],
)
def test_a_link_code_names_a_position_only_in_range_and_canonically_spelt(
    payload: bytes, position: int | None
) -> None:
    """Whatever its tag, the position of a code is read from its canonical varint only, and
    never beyond the last position a content can have."""
    code = tracking._encode_token(payload + b"\x00" * tracking.LINK_TAG_BYTES)
    assert SIGNER.link_position(code) == position


@pytest.mark.parametrize(
    ("position", "message"),
    [
        (True, "position must be an int"),
        (1.0, "position must be an int"),
        ("1", "position must be an int"),
        (-1, f"position must be between 0 and {tracking.MAX_LINK_POSITION}"),
        (tracking.MAX_LINK_POSITION + 1, f"position must be between 0 and {2**31 - 1}"),
    ],
)
def test_a_link_code_is_made_only_for_a_whole_position_in_range(
    position: object, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        SIGNER.link_code(position, "https://example.com/")  # type: ignore[arg-type]


def test_a_correctly_signed_code_for_a_position_beyond_the_last_is_refused() -> None:
    url = "https://example.com/"
    payload = tracking._encode_varint(tracking.MAX_LINK_POSITION + 2)
    key = SIGNER._keys[tracking._LINK_PURPOSE].key
    code = tracking._encode_token(payload + SIGNER._link_tag(key, payload, url))
    assert not SIGNER.verify_link_code(code, url)
    last = tracking._encode_varint(tracking.MAX_LINK_POSITION + 1)
    assert SIGNER.verify_link_code(
        tracking._encode_token(last + SIGNER._link_tag(key, last, url)), url
    )


def test_a_link_to_a_url_with_a_lone_surrogate_is_signed_and_verified() -> None:
    """URLs come from the content's HTML as Python text; any of them must be signable."""
    url = "https://example.com/\ud800"
    code = SIGNER.link_code(0, url)
    assert SIGNER.verify_link_code(code, url)
    assert not SIGNER.verify_link_code(code, "https://example.com/\ud801")


@pytest.mark.parametrize("code", [None, 12345, b"AAAAAAAAAAAAAAAAAAAA"])
def test_a_link_code_that_is_not_text_is_refused_without_raising(code: object) -> None:
    assert SIGNER.link_position(code) is None  # type: ignore[arg-type]
    assert not SIGNER.verify_link_code(code, "https://example.com/")  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [0, 32, 63, 64, 65, 200])
def test_precomputed_hmac_is_hmac_sha256_at_and_around_the_block_size(length: int) -> None:
    """RFC 2104: a key longer than the 64-byte block is hashed first, one of exactly 64 is not."""
    key = bytes(range(length % 256)) * (length // 256) + bytes(range(length % 256))
    for message in (b"", b"payload"):
        expected = hmac.new(key, message, hashlib.sha256).digest()
        assert tracking._HmacSha256(key).digest(message) == expected


@pytest.mark.parametrize(
    ("first", "count"),
    [(True, 1), (-1, 1), (tracking.MAX_LINK_POSITION, 2)],
    ids=["bool", "negative", "past-the-last"],
)
def test_link_codes_are_made_only_for_positions_in_range(first: object, count: int) -> None:
    urls = [f"https://example.com/{n}" for n in range(count)]
    with pytest.raises(ValueError, match=r"^position must be "):
        SIGNER.link_codes(urls, first=first)  # type: ignore[arg-type]
    assert len(SIGNER.link_codes(urls, first=tracking.MAX_LINK_POSITION - count + 1)) == count
    assert [SIGNER.link_position(code) for code in SIGNER.link_codes(urls)] == list(range(count))


@pytest.mark.parametrize("position", [0, 0x7F, 0x80, tracking.MAX_LINK_POSITION])
def test_a_link_code_names_each_boundary_position(position: int) -> None:
    """The one-byte varint ends at 0x7F; the last position is 2**31 - 1, made and named."""
    url = "https://example.com/"
    code = SIGNER.link_code(position, url)
    assert SIGNER.link_position(code) == position
    assert SIGNER.link_position(SIGNER.link_codes([url], first=position)[0]) == position
