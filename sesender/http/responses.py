"""JSON responses and errors: every error is ``{"error": "..."}`` with a fitting status; times
are ISO 8601 strings in UTC with milliseconds (:func:`iso`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from quart import Response, jsonify


def json_response(payload: Any, status: int = 200) -> Response:
    response = jsonify(payload)
    response.status_code = status
    return response


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def iso(milliseconds: int | None) -> str | None:
    """Unix milliseconds as ISO 8601 in UTC (``2026-01-15T10:00:00.000+00:00``); None stays None."""
    if milliseconds is None:
        return None
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="milliseconds")
