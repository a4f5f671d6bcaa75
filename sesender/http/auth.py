"""``X-API-KEY`` authentication with the original service's exact messages, in constant time."""

from __future__ import annotations

import hmac

from sesender.errors import ApiError

MISSING = "Missing X-API-KEY header"
EMPTY = "Empty API Key"
INVALID = "Invalid API Key"


def check_api_key(presented: str | None, expected: str) -> None:
    """Raise a 401 ApiError unless ``presented`` equals ``expected``."""
    if presented is None:
        raise ApiError(401, MISSING)
    if presented.strip() == "":
        raise ApiError(401, EMPTY)
    if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode()):
        raise ApiError(401, INVALID)
