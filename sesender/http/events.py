"""``GET /v1/events/open`` (the tracking pixel) and ``GET /v1/events/counts/sent``."""

from __future__ import annotations

import base64

from quart import Blueprint, Response, request

from sesender.errors import ApiError
from sesender.http.context import app_context
from sesender.http.responses import json_response
from sesender.models import FeedbackItem, ResultEvent
from sesender.pipeline.result_writer import ResultWrite

events_blueprint = Blueprint("events", __name__)

#: A transparent 1x1 PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
MAX_HOURS = 8760


def pixel_response() -> Response:
    return Response(
        PIXEL,
        status=200,
        content_type="image/png",
        headers={
            "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
            "Pragma": "no-cache",
        },
    )


@events_blueprint.get("/v1/events/open")
async def open_pixel() -> Response:
    """Always the pixel, whatever the query: validity is never revealed."""
    context = app_context()
    token = request.args.get("request_id", "")
    request_id = context.signer.verify("open", token)
    if request_id is None and context.config.tracking.accept_plain_ids and token.isdigit():
        request_id = int(token) if len(token) <= 18 else None
    if request_id is not None:
        event = ResultEvent(
            event_type="Open", occurred_at_ms=context.now_ms(), request_id=request_id
        )
        await context.result_tx.send(ResultWrite(item=FeedbackItem(events=(event,))))
    return pixel_response()


@events_blueprint.get("/v1/events/counts/sent")
async def sent_count() -> Response:
    """Emails sent in the last ``hours`` hours. ``hours=0`` is an empty window: 200 with a count
    of 0, as the original answers it (its own suite calls it an edge case that must work)."""
    raw = request.args.get("hours", "24")
    try:
        hours = int(raw)
    except ValueError:
        raise ApiError(400, f"hours must be a whole number from 0 to {MAX_HOURS}") from None
    if not 0 <= hours <= MAX_HOURS:
        raise ApiError(400, f"hours must be a whole number from 0 to {MAX_HOURS}")
    if hours == 0:
        return json_response({"count": 0})
    context = app_context()
    since = context.now_ms() - hours * 3_600_000
    return json_response({"count": await context.store.count_sent_since(since)})
