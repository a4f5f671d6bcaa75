"""``X-API-KEY`` authentication with the original service's exact messages, in constant time,
and the scope check that follows it.

Keys are compared as SHA-256 digests: a generated key is kept only as its digest (see
:mod:`sesender.startup_secrets`), and comparing fixed-length digests leaks not even the length.
Named keys are looked up by the key ring (:mod:`sesender.api_keys`); :func:`authorize` then
answers 403 to a valid key without the route's scope, and :func:`current_principal` tells a
handler whose key it serves.
"""

from __future__ import annotations

import hmac

from quart import g

from sesender.api_keys import EMPTY, INVALID, MISSING, Principal
from sesender.config import api_key_sha256
from sesender.errors import ApiError
from sesender.http.scopes import RouteAccess, scope_names

__all__ = [
    "EMPTY",
    "INVALID",
    "MISSING",
    "authorize",
    "check_api_key",
    "check_api_key_digest",
    "current_principal",
]


def authorize(principal: Principal, access: RouteAccess) -> None:
    """Raise a 403 ApiError unless ``principal`` has one of the scopes in ``access``."""
    if any(principal.has(scope) for scope in access):
        return
    needed = " or ".join(scope_names(access))
    raise ApiError(
        403, f"This API key ({principal.name!r}) lacks the scope this route needs: {needed}"
    )


def current_principal() -> Principal:
    """Whose key the current request carries (set by the authentication hook)."""
    principal = g.get("principal")
    if not isinstance(principal, Principal):  # never guess: a route without a key has none
        raise RuntimeError("no authenticated key for this request")
    return principal


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
