"""``X-API-KEY`` authentication with the original service's exact messages, in constant time.

Keys are compared as SHA-256 digests: a generated key is kept only as its digest (see
:mod:`sesender.startup_secrets`), and comparing fixed-length digests leaks not even the length.
"""

from __future__ import annotations

import hmac

from sesender.config import api_key_sha256
from sesender.errors import ApiError

MISSING = "Missing X-API-KEY header"
EMPTY = "Empty API Key"
INVALID = "Invalid API Key"


def check_api_key(presented: str | None, expected: str) -> None:
    """Raise a 401 ApiError unless ``presented`` equals ``expected``."""
    check_api_key_digest(presented, api_key_sha256(expected))


def check_api_key_digest(presented: str | None, expected_sha256: bytes) -> None:
    """Raise a 401 ApiError unless ``presented`` hashes to ``expected_sha256`` (an empty digest,
    a key not yet known, matches nothing)."""
    if presented is None:
        raise ApiError(401, MISSING)
    if presented.strip() == "":
        raise ApiError(401, EMPTY)
    if not hmac.compare_digest(api_key_sha256(presented), expected_sha256):
        raise ApiError(401, INVALID)
