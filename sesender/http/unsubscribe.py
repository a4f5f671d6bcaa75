"""One-click unsubscribe (RFC 8058): ``GET`` shows a page, ``POST`` unsubscribes.

Mail providers POST ``List-Unsubscribe=One-Click`` to the URL from the ``List-Unsubscribe``
header, with no cookies and no auth: the signed token in the URL is the only credential. The
answer is 200 with no redirect. A GET never unsubscribes, because link scanners prefetch URLs; it
shows a small page whose button POSTs. Valid and invalid tokens get the same answers, so the
endpoint reveals nothing about which tokens exist.
"""

from __future__ import annotations

from html import escape

from quart import Blueprint, Response, request

from sesender.errors import ApiError, StoreError
from sesender.http.context import app_context
from sesender.models import FeedbackItem, ResultEvent, Suppression
from sesender.pipeline.result_writer import write_and_wait

unsubscribe_blueprint = Blueprint("unsubscribe", __name__)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
color:#222}}button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:1px solid #888;
background:#f4f4f4;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def page(title: str, body: str) -> Response:
    return Response(
        PAGE.format(title=escape(title), body=body),
        status=200,
        content_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        },
    )


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
    if request_id is not None:
        now = context.now_ms()
        item = FeedbackItem(
            events=(ResultEvent("Unsubscribe", now, request_id=request_id),),
            suppressions=(
                Suppression(reason="unsubscribe", source="one-click", request_id=request_id),
            ),
        )
        try:
            await write_and_wait(context.result_tx, item)
        except StoreError as exc:
            raise ApiError(503, "Please try again in a moment") from exc
    return page("Unsubscribed", "<p>You will not receive these emails any more.</p>")
