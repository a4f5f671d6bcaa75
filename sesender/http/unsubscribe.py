"""One-click unsubscribe (RFC 8058): ``GET`` shows a page, ``POST`` unsubscribes.

Mail providers POST ``List-Unsubscribe=One-Click`` to the URL from the ``List-Unsubscribe``
header, with no cookies and no auth: the signed token in the URL is the only credential. A valid
token is answered 200 with no redirect. A GET never unsubscribes, because link scanners prefetch
URLs; it shows a small page whose button POSTs.

A POST whose token does not verify (mangled by a mail client, cut short, forged, or signed with a
secret no longer accepted) gets a 404 page saying the link is not valid, and a warning in the log
with a short reason: answering "Unsubscribed" would tell the recipient a lie. The page says
nothing more (not which check failed), and the log never holds the token itself. The GET page is
the same for every token: it only shows the button, and verifying happens once, on the POST.
"""

from __future__ import annotations

import logging
from html import escape

from quart import Blueprint, Response, request

from sesender.errors import ApiError, StoreError
from sesender.http.context import app_context
from sesender.models import FeedbackItem, ResultEvent, Suppression
from sesender.pipeline.result_writer import write_and_wait

logger = logging.getLogger(__name__)

unsubscribe_blueprint = Blueprint("unsubscribe", __name__)

EXPIRED_TITLE = "This unsubscribe link has expired"
EXPIRED_BODY = (
    "<p>This email is too old for its link to unsubscribe you. Please use the link in a more"
    " recent email, or contact the sender.</p>"
)
INVALID_TITLE = "This unsubscribe link is not valid"
INVALID_BODY = (
    "<p>This link could not be used to unsubscribe, maybe because it was cut short or changed."
    " Please use the complete link from the email, or contact the sender.</p>"
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
color:#222}}button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:1px solid #888;
background:#f4f4f4;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body: str, *, status: int = 200) -> Response:
    return Response(
        PAGE.format(title=escape(title), body=body),
        status=status,
        content_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        },
    )


def invalid_link(token: str) -> Response:
    """The 404 page for a token that does not verify, logged with a reason but not the token."""
    reason = "no token" if not token else "token does not verify"
    logger.warning(
        "invalid unsubscribe link (%s) on %s",
        reason,
        request.method,
        extra={
            "event": "unsubscribe_invalid",
            "reason": reason,
            "token_length": len(token),
            "method": request.method,
        },
    )
    return page(INVALID_TITLE, INVALID_BODY, status=404)


@unsubscribe_blueprint.get("/v1/unsubscribe")
async def unsubscribe_page() -> Response:
    token = request.args.get("token", "")
    return page(
        "Unsubscribe",
        "<p>Do you want to stop receiving these emails?</p>"
        f'<form method="post" action="?token={escape(token, quote=True)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@unsubscribe_blueprint.post("/v1/unsubscribe")
async def unsubscribe_post() -> Response:
    context = app_context()
    token = request.args.get("token", "")
    request_id = context.signer.verify("unsubscribe", token)
    if request_id is None:
        return invalid_link(token)
    now = context.now_ms()
    item = FeedbackItem(
        events=(ResultEvent("Unsubscribe", now, request_id=request_id),),
        suppressions=(
            Suppression(reason="unsubscribe", source="one-click", request_id=request_id),
        ),
    )
    try:
        report = await write_and_wait(context.result_tx, item)
    except StoreError as exc:
        raise ApiError(503, "Please try again in a moment") from exc
    if report.matched == 0:
        # A genuine link whose email the retention policy deleted: its address is gone with it,
        # so nothing could be suppressed. Say so rather than claim an unsubscription.
        logger.warning(
            "unsubscribe link of a deleted email: nothing suppressed",
            extra={"event": "unsubscribe_expired", "request_id": request_id},
        )
        return page(EXPIRED_TITLE, EXPIRED_BODY, status=410)
    return page("Unsubscribed", "<p>You will not receive these emails any more.</p>")
