"""``GET /v1/events/open`` (the tracking pixel), ``GET /v1/events/click/<token>/<code>`` (a
tracked link) and ``GET /v1/events/counts/sent``."""

from __future__ import annotations

import base64

from quart import Blueprint, Response, request
from werkzeug.urls import iri_to_uri

from sesender.errors import ApiError
from sesender.http.context import app_context
from sesender.http.responses import json_response
from sesender.models import ClickEvent, FeedbackItem, ResultEvent
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


#: What a link that is not valid answers: a plain page, never a redirect (nothing is recorded).
INVALID_LINK_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Link not valid</title></head>"
    b"<body><p>This link is not valid. If you copied it from an email, check that it is"
    b" complete.</p></body></html>"
)


def invalid_link() -> Response:
    return Response(
        INVALID_LINK_PAGE,
        status=404,
        content_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


@events_blueprint.get("/v1/events/click/<token>/<code>")
async def click(token: str, code: str) -> Response:
    """A tracked link: record the click, redirect (302) to the link's stored URL.

    The target is the URL stored for the link's position in the email's content, and the code
    must be signed for that URL; nothing of the request (query string included) chooses it. A
    token or code that is not valid answers a plain page and records nothing. ``HEAD`` (link
    scanners often check a link that way) answers the same redirect without recording a click.
    """
    context = app_context()
    request_id = context.signer.verify("click", token)
    position = context.signer.link_position(code)
    if request_id is None or position is None:
        return invalid_link()
    url = await context.store.click_target(request_id, position)
    if url is None or not context.signer.verify_link_code(code, url):
        return invalid_link()
    if request.method == "GET":
        event = ClickEvent(
            occurred_at_ms=context.now_ms(),
            request_id=request_id,
            position=position,
            user_agent=request.headers.get("User-Agent"),
        )
        await context.result_tx.send(ResultWrite(item=FeedbackItem(clicks=(event,))))
    location = url if url.isascii() and " " not in url else iri_to_uri(url)
    return Response(
        b"",
        status=302,
        headers={
            "Location": location,
            "Cache-Control": "no-store",
            # The tracked URL carries the recipient's token: the target site is not told it.
            "Referrer-Policy": "no-referrer",
        },
    )


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
