"""The one table of who may call which route: public, or the API key scopes that may.

The authentication hook (sesender/http/app.py), the OpenAPI description (every operation's
``x-scopes``, checked by tests/unit/http/test_openapi.py) and the end-to-end route-table test
(tests/e2e/test_api_keys.py) all read :data:`ROUTE_SCOPES`. A route missing from it is refused to
every key but ``admin`` ones (fail closed) and fails tests/unit/http/test_scopes.py, so a new
route cannot ship without a decision.

Scopes: ``send`` posts messages and reads its own; ``read`` reads statistics, topics, messages
and the suppression list (what the dashboard shows); ``admin`` does everything and is implied
wherever a route names another scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sesender.models import Scope

__all__ = ["PUBLIC", "ROUTE_SCOPES", "RouteAccess", "access_for", "scope_names"]

#: The scopes that may call a route (``admin`` is always among them); empty: public.
RouteAccess = frozenset[Scope]

PUBLIC: Final[RouteAccess] = frozenset()
SEND: Final[RouteAccess] = frozenset({Scope.SEND, Scope.ADMIN})
READ: Final[RouteAccess] = frozenset({Scope.READ, Scope.ADMIN})
SEND_OR_READ: Final[RouteAccess] = frozenset({Scope.SEND, Scope.READ, Scope.ADMIN})
ADMIN: Final[RouteAccess] = frozenset({Scope.ADMIN})

#: (method, Werkzeug rule) -> the scopes that may call it. HEAD follows GET.
ROUTE_SCOPES: Final[Mapping[tuple[str, str], RouteAccess]] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    # The pixel, SNS, and the recipients' unsubscribe link: authenticated by their own tokens
    # and signatures, never by an API key.
    ("GET", "/v1/events/open"): PUBLIC,
    ("POST", "/v1/events/results"): PUBLIC,
    ("GET", "/v1/unsubscribe"): PUBLIC,
    ("POST", "/v1/unsubscribe"): PUBLIC,
    # The dashboard's files; the data it shows comes through the API with the operator's key.
    ("GET", "/dashboard"): PUBLIC,
    ("GET", "/dashboard/dashboard.js"): PUBLIC,
    ("GET", "/dashboard/dashboard.css"): PUBLIC,
    ("POST", "/v1/messages"): SEND,
    # A send-only key reads its own emails only (answered 404 for the others).
    ("GET", "/v1/messages/<int:request_id>"): SEND_OR_READ,
    ("GET", "/v1/topics"): READ,
    ("GET", "/v1/topics/<path:topic_id>"): READ,
    ("DELETE", "/v1/topics/<path:topic_id>"): ADMIN,
    ("POST", "/v1/topics/<path:topic_id>/retry"): ADMIN,
    ("GET", "/v1/events/counts/sent"): READ,
    ("GET", "/v1/stats/send-rate"): READ,
    ("GET", "/v1/suppressions"): READ,
    ("PUT", "/v1/suppressions/<path:email>"): ADMIN,
    ("DELETE", "/v1/suppressions/<path:email>"): ADMIN,
    ("GET", "/v1/api-keys"): ADMIN,
    ("POST", "/v1/api-keys"): ADMIN,
    ("DELETE", "/v1/api-keys/<int:key_id>"): ADMIN,
    # Which key this is and what it may do (the dashboard shows admin actions only to admins).
    ("GET", "/v1/api-keys/current"): SEND_OR_READ,
    ("GET", "/v1/reputation"): READ,
    ("POST", "/v1/sending/resume"): ADMIN,
    ("POST", "/v1/topics/<path:topic_id>/resume"): ADMIN,
    ("POST", "/v1/reputation/resume-topic"): ADMIN,
    ("GET", "/v1/stats/storage"): READ,
    ("GET", "/v1/topics/<path:topic_id>/links"): READ,
    ("GET", "/v1/events/click/<token>/<code>"): PUBLIC,
    ("POST", "/v1/webhooks"): ADMIN,
    ("GET", "/v1/webhooks"): READ,
    ("GET", "/v1/webhooks/<endpoint_id>"): READ,
    ("PATCH", "/v1/webhooks/<endpoint_id>"): ADMIN,
    ("DELETE", "/v1/webhooks/<endpoint_id>"): ADMIN,
    ("POST", "/v1/webhooks/<endpoint_id>/rotate-secret"): ADMIN,
    ("POST", "/v1/webhooks/<endpoint_id>/test"): ADMIN,
    ("GET", "/v1/webhooks/<endpoint_id>/attempts"): READ,
    ("GET", "/v1/webhooks/<endpoint_id>/events"): READ,
    ("POST", "/v1/webhooks/<endpoint_id>/events/<event_id>/resend"): ADMIN,
}

_RULES_WITH_A_PUBLIC_METHOD = frozenset(
    rule for (_, rule), access in ROUTE_SCOPES.items() if access == PUBLIC
)


def access_for(method: str, rule: str) -> RouteAccess | None:
    """The scopes that may call ``method`` on ``rule``; None when the table does not say.

    HEAD is GET's; OPTIONS (which Werkzeug answers itself) is public where a method of the rule
    is, and open to any valid key elsewhere.
    """
    if method == "HEAD":
        method = "GET"
    if method == "OPTIONS":
        return PUBLIC if rule in _RULES_WITH_A_PUBLIC_METHOD else SEND_OR_READ
    return ROUTE_SCOPES.get((method, rule))


def scope_names(access: RouteAccess) -> list[str]:
    """The scopes as the OpenAPI description lists them (``x-scopes``), in a fixed order."""
    return [scope.value for scope in Scope if scope in access]
