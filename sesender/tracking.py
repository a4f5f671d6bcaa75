"""Signed tokens for the open-tracking pixel, tracked links and the unsubscribe links.

Tracking URLs are public and unauthenticated (a mail client loads the pixel, a mailbox provider
POSTs the one-click unsubscribe with no cookies), so the token in them is the only credential. The
original service put the plain request id in the URL, letting anyone record opens for, or (worse)
unsubscribe, every recipient by counting. A token here is::

    base64url_nopad( varint(request_id) || HMAC-SHA256(key[purpose], varint(request_id))[:16] )

- 23 to 34 characters, URL-safe, no padding: short enough for a URL, 128-bit tag so forging one
  means guessing 2**128 values.
- Each purpose ("open", "click", "unsubscribe") has its own key derived from the secret, so a
  token seen in a pixel URL (which mail clients and proxies fetch and log freely) never works
  as an unsubscribe token, and vice versa.
- Verification never raises and answers ``None`` for anything it did not sign.
- A tracked link's URL carries two parts (docs/architecture.md, "Click tracking"): the recipient's
  ``click`` token, signed once per email, and the link's *code*, signed once per content:
  ``base64url_nopad( varint(position) || BLAKE2b-96(key=key["link"], varint(position) || url) )``.
  The code names the link's position in its content and is bound to the link's URL, so changing
  any character of either part makes the link invalid, and a code only works for the URL it was
  made for.
- Secrets can be rotated: a signer signs with its current secret and also accepts tokens of the
  previous ones it was given, so links already sent keep working (docs/operations.md, "Tracking
  secret").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Final, Literal, get_args

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MAX_LINK_CODE_LENGTH",
    "MAX_REQUEST_ID",
    "MAX_TOKEN_LENGTH",
    "TOKEN_PURPOSES",
    "TokenPurpose",
    "TokenSigner",
    "derive_secret",
]

TokenPurpose = Literal["open", "click", "unsubscribe"]
"""What a token may be used for; a token signed for one purpose fails for every other."""

TOKEN_PURPOSES: Final[frozenset[str]] = frozenset(get_args(TokenPurpose))
MAX_REQUEST_ID: Final = 2**63 - 1
"""Request ids are SQLite INTEGER PRIMARY KEYs: positive, at most 2**63 - 1."""
MIN_SECRET_BYTES: Final = 16
TAG_BYTES: Final = 16
MAX_TOKEN_LENGTH: Final = 34
"""The longest token :meth:`TokenSigner.sign` produces (a 9-byte varint plus the tag)."""

LINK_TAG_BYTES: Final = 12
MAX_LINK_POSITION: Final = 2**31 - 1
MAX_LINK_CODE_LENGTH: Final = 23
"""The longest link code :meth:`TokenSigner.link_code` produces (a 5-byte varint plus the tag)."""
_LINK_PURPOSE: Final = "link"

_MIN_TOKEN_LENGTH: Final = 23  # a 1-byte varint plus the tag
_LINK_CODE_TEXT = re.compile(r"[A-Za-z0-9_-]{18,23}", re.ASCII)
_TOKEN_TEXT = re.compile(rf"[A-Za-z0-9_-]{{{_MIN_TOKEN_LENGTH},{MAX_TOKEN_LENGTH}}}", re.ASCII)
_KEY_LABEL: Final = b"sesender tracking token v1\x00"
_SECRET_SALT: Final = b"sesender/tracking-secret/v1"
_SECRET_INFO: Final = b"sesender tracking secret derived from API_KEY"
_SHA256_BLOCK: Final = 64
_IPAD: Final = bytes(byte ^ 0x36 for byte in range(256))
_OPAD: Final = bytes(byte ^ 0x5C for byte in range(256))
_URL_SAFE: Final = bytes.maketrans(b"+/", b"-_")


def _encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit set on all but the last byte."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _decode_varint(data: bytes, maximum: int = MAX_REQUEST_ID) -> int | None:
    """Decode a whole-buffer LEB128 integer, refusing non-minimal or out-of-range encodings."""
    if not data or len(data) > 9:
        return None
    value = _varint_value(data)
    return value if value is not None and 1 <= value <= maximum else None


def _varint_value(data: bytes) -> int | None:
    value = 0
    for index, byte in enumerate(data):
        last = index == len(data) - 1
        if (byte & 0x80 == 0) != last:
            return None  # a continuation bit where it ends, or none where it goes on
        value |= (byte & 0x7F) << (7 * index)
    if len(data) > 1 and data[-1] == 0:
        return None  # non-minimal: a trailing zero group
    return value


def _encode_token(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_URL_SAFE).rstrip(b"=").decode("ascii")


class _HmacSha256:
    """HMAC-SHA256 under one key, with the key's two padded blocks hashed once (RFC 2104).

    Every email signs two tokens, so signing is on the send path's hot loop: ``hmac.new`` sets
    up the key again for each message (about 2.4 us here), where copying the two SHA-256 states
    already fed with ``key XOR ipad`` and ``key XOR opad`` costs about 1.1 us. The result is the
    same HMAC to the bit (``tests/unit/test_tracking.py`` compares it with :func:`hmac.new`).
    The states derive from the key, so they are as secret as the key and are never shown.
    """

    __slots__ = ("_inner", "_outer", "key")

    def __init__(self, key: bytes) -> None:
        #: the key itself, for the keyed BLAKE2b of link codes (:meth:`TokenSigner.link_codes`).
        self.key = key
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_SHA256_BLOCK, b"\x00")
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _purpose_keys(secret: bytes) -> dict[str, _HmacSha256]:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the tracking secret must be at least {MIN_SECRET_BYTES} bytes")
    return {
        purpose: _HmacSha256(
            hmac.new(secret, _KEY_LABEL + purpose.encode("ascii"), hashlib.sha256).digest()
        )
        for purpose in (*TOKEN_PURPOSES, _LINK_PURPOSE)
    }


class TokenSigner:
    """Signs request-id tokens with the current secret; verifies them against every secret.

    Only keys derived from the secrets are kept, never the secrets themselves, and ``repr`` shows
    none of them. Every secret must be at least 16 bytes. ``previous`` secrets are only ever used
    to verify: after a rotation, links signed before it keep working while new links use
    ``secret``. A secret's keys do not depend on which other secrets are given, so a token stays
    valid whichever position its secret has.
    """

    __slots__ = ("_keys", "_previous_keys")

    def __init__(self, secret: bytes, previous: Sequence[bytes] = ()) -> None:
        self._keys = _purpose_keys(secret)
        self._previous_keys = tuple(
            _purpose_keys(old) for old in dict.fromkeys(previous) if old != secret
        )

    def __repr__(self) -> str:
        return "TokenSigner(secret=<hidden>)"

    def _tag(self, key: _HmacSha256, payload: bytes) -> bytes:
        return key.digest(payload)[:TAG_BYTES]

    def sign(self, purpose: TokenPurpose, request_id: int) -> str:
        """Return the token for ``request_id`` used for ``purpose``.

        Raises ``ValueError`` for an unknown purpose or a request id outside 1..2**63-1: both are
        programming errors, never user input.
        """
        key = self._keys.get(purpose) if purpose in TOKEN_PURPOSES else None
        if key is None:
            raise ValueError(f"unknown token purpose {purpose!r}")
        if isinstance(request_id, bool) or not isinstance(request_id, int):
            raise ValueError("request_id must be an int")
        if not 1 <= request_id <= MAX_REQUEST_ID:
            raise ValueError(f"request_id must be between 1 and {MAX_REQUEST_ID}")
        payload = _encode_varint(request_id)
        return _encode_token(payload + self._tag(key, payload))

    def verify(self, purpose: TokenPurpose, token: str) -> int | None:
        """Return the request id ``token`` was signed with for ``purpose``, else ``None``.

        ``None`` for a forged, truncated, extended, re-encoded or wrong-purpose token, for
        non-ASCII or over-long text, and for anything that is not a ``str``. Never raises. The tag
        is compared with :func:`hmac.compare_digest`; the checks before it only look at the
        token's public shape.
        """
        key = (
            self._keys.get(purpose)
            if isinstance(purpose, str) and purpose in TOKEN_PURPOSES
            else None
        )
        if key is None or not isinstance(token, str):
            return None
        if len(token) > MAX_TOKEN_LENGTH or _TOKEN_TEXT.fullmatch(token) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if _encode_token(raw) != token:
            return None  # unused low bits set: another spelling of a real token
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if not payload:
            return None
        keys = (key, *(old_keys[purpose] for old_keys in self._previous_keys))
        # Every key is tried (no early exit), so the time taken does not say which one matched.
        matched = [hmac.compare_digest(tag, self._tag(candidate, payload)) for candidate in keys]
        if not any(matched):
            return None
        return _decode_varint(payload)

    def link_code(self, position: int, url: str) -> str:
        """The code of the link at ``position`` (0-based) of a content, bound to its ``url``.

        Made once per content, never per recipient. Raises ``ValueError`` for a position outside
        0..2**31-1 (a programming error).
        """
        if isinstance(position, bool) or not isinstance(position, int):
            raise ValueError("position must be an int")
        if not 0 <= position <= MAX_LINK_POSITION:
            raise ValueError(f"position must be between 0 and {MAX_LINK_POSITION}")
        return self.link_codes((url,), first=position)[0]

    def link_codes(self, urls: Sequence[str], *, first: int = 0) -> list[str]:
        """:meth:`link_code` of each of ``urls``, at positions ``first``, ``first + 1``, ...:
        the links of one content, signed in one go (the rewrite of a content runs it)."""
        if isinstance(first, bool) or not isinstance(first, int):
            raise ValueError("position must be an int")
        if first < 0 or first + len(urls) - 1 > MAX_LINK_POSITION:
            raise ValueError(f"position must be between 0 and {MAX_LINK_POSITION}")
        # The keyed state is set up once and copied per link: a keyed BLAKE2b hashes its key as
        # a first block, which is a third of the cost of signing a short URL.
        keyed = hashlib.blake2b(key=self._keys[_LINK_PURPOSE].key, digest_size=LINK_TAG_BYTES)
        codes = []
        for index, url in enumerate(urls, first + 1):
            payload = bytes((index,)) if index < 0x80 else _encode_varint(index)
            state = keyed.copy()
            state.update(payload)
            state.update(url.encode("utf-8", "surrogatepass"))
            codes.append(_encode_token(payload + state.digest()))
        return codes

    def link_position(self, code: str) -> int | None:
        """The position a well-formed link code names, or None; says nothing about its
        signature, which :meth:`verify_link_code` checks once the link's URL is known."""
        raw = self._link_code_bytes(code)
        if raw is None:
            return None
        value = _decode_varint(raw[:-LINK_TAG_BYTES], MAX_LINK_POSITION + 1)
        return None if value is None else value - 1

    def verify_link_code(self, code: str, url: str) -> bool:
        """Whether ``code`` was made by :meth:`link_code` for its position and ``url`` (with the
        current secret or a previous one). Never raises."""
        raw = self._link_code_bytes(code)
        if raw is None or not isinstance(url, str):
            return False
        payload, tag = raw[:-LINK_TAG_BYTES], raw[-LINK_TAG_BYTES:]
        if _decode_varint(payload, MAX_LINK_POSITION + 1) is None:
            return False
        keys = (self._keys, *self._previous_keys)
        matched = [
            hmac.compare_digest(tag, self._link_tag(keys_[_LINK_PURPOSE].key, payload, url))
            for keys_ in keys
        ]
        return any(matched)

    def _link_tag(self, key: bytes, payload: bytes, url: str) -> bytes:
        # Keyed BLAKE2b: a MAC by design (RFC 7693), one C call, a third of HMAC-SHA256's cost;
        # a 100 KB newsletter has hundreds of links, each signed when its content is rewritten.
        message = payload + url.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(message, key=key, digest_size=LINK_TAG_BYTES).digest()

    @staticmethod
    def _link_code_bytes(code: object) -> bytes | None:
        if not isinstance(code, str) or len(code) > MAX_LINK_CODE_LENGTH:
            return None
        if _LINK_CODE_TEXT.fullmatch(code) is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
        except (binascii.Error, ValueError):
            return None
        if _encode_token(raw) != code or len(raw) <= LINK_TAG_BYTES:
            return None
        return raw


def derive_secret(api_key: str) -> bytes:
    """Derive a 32-byte tracking secret from ``api_key`` when ``TRACKING_SECRET`` is unset.

    HKDF-SHA256 with a fixed salt and label, so the tracking secret is not the API key itself and
    reveals nothing about it. Versions before the stored tracking secret signed every link with
    this; it is still accepted for verification while ``API_KEY`` is unchanged, so links sent by
    them keep working (docs/operations.md, "Tracking secret").
    """
    if not api_key:
        raise ValueError("cannot derive a tracking secret from an empty API key")
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SECRET_SALT, info=_SECRET_INFO)
    return kdf.derive(api_key.encode("utf-8", "surrogatepass"))
