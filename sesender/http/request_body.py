"""Checks on a request's body shared by the handlers that read JSON."""

from __future__ import annotations

from quart import request

from sesender.errors import ApiError


def require_json() -> None:
    """Refuse (415) a body whose Content-Type is not JSON (``application/json`` or ``*+json``)."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(415, "Content-Type must be application/json")
