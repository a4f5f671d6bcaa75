"""JSON responses and errors: every error is ``{"error": "..."}`` with a fitting status."""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify


def json_response(payload: Any, status: int = 200) -> Response:
    response = jsonify(payload)
    response.status_code = status
    return response


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)
