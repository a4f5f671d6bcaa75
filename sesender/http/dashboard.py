"""``GET /dashboard``: the operator's page, a static file that asks for the API key itself.

The page, its script and its stylesheet are plain files packaged in ``sesender/http/static/``
(no build step), read once at import like the OpenAPI document. They hold no data: the script
calls the JSON API (``/ready``, ``/v1/topics``, ``/v1/stats/send-rate``) with the key the operator
typed, so all three routes are public and share the one endpoint ``dashboard.dashboard`` listed in
``PUBLIC_ENDPOINTS``. Every response carries a strict Content-Security-Policy (scripts and styles
from this origin only, no inline code), so even a topic id the script forgot to treat as text could
not run; it does treat them as text (``textContent``, never ``innerHTML``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from quart import Blueprint, Response, request

dashboard_blueprint = Blueprint("dashboard", __name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)

#: Headers of every dashboard response. ``no-cache`` means "revalidate each time": an upgraded
#: service never runs with a stale script, and the ETag makes the revalidation a 304.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load(name: str, content_type: str) -> StaticFile:
    body = files("sesender.http").joinpath("static", name).read_bytes()
    return StaticFile(body, content_type, hashlib.sha256(body).hexdigest()[:32])


#: URL path -> packaged file. The page refers to the others relatively (``dashboard/...``).
STATIC_FILES = {
    "/dashboard": load("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": load("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": load("dashboard.css", "text/css; charset=utf-8"),
}


@dashboard_blueprint.get("/dashboard")
@dashboard_blueprint.get("/dashboard/dashboard.js")
@dashboard_blueprint.get("/dashboard/dashboard.css")
async def dashboard() -> Response:
    """One endpoint for the three files, so ``PUBLIC_ENDPOINTS`` names them all at once."""
    rule = request.url_rule
    static = STATIC_FILES[rule.rule if rule is not None else "/dashboard"]
    # Weak comparison, as HTTP wants for If-None-Match (a compressing proxy makes ETags weak);
    # the 304 keeps the file's own content type, so a cache never records a script as HTML.
    if request.if_none_match.contains_weak(static.etag):
        response = Response(b"", status=304, content_type=static.content_type)
    else:
        response = Response(static.body, status=200, content_type=static.content_type)
    response.set_etag(static.etag)
    response.headers.update(SECURITY_HEADERS)
    return response
