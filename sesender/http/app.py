"""The quart-trio application: routes, authentication and JSON errors everywhere.

Authentication and scopes are applied in one ``before_request`` hook to every matched route, from
the one table :data:`~sesender.http.scopes.ROUTE_SCOPES` (public routes, and the API key scopes
that may call each other route), so a new route cannot forget it: one missing from the table is
open to ``admin`` keys only. A key without the scope gets 403; a missing, unknown or revoked key
401. Unknown routes answer 404
(JSON), wrong methods 405, oversized bodies 413, and an unexpected exception a 500 with no stack
trace, reported to Sentry.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote_to_bytes

import trio
from quart import Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from sesender.errors import ApiError, StoreUnavailable
from sesender.http.api_keys import api_keys_blueprint
from sesender.http.auth import authorize
from sesender.http.context import AppContext, SesenderApp
from sesender.http.dashboard import dashboard_blueprint
from sesender.http.events import events_blueprint
from sesender.http.feedback import feedback_blueprint
from sesender.http.health import health_blueprint
from sesender.http.messages import messages_blueprint
from sesender.http.metrics_route import metrics_blueprint
from sesender.http.openapi import docs_blueprint
from sesender.http.reputation import reputation_blueprint
from sesender.http.responses import error_response
from sesender.http.scopes import ADMIN, PUBLIC, access_for
from sesender.http.stats import stats_blueprint
from sesender.http.suppressions import suppressions_blueprint
from sesender.http.topics import topics_blueprint
from sesender.http.unsubscribe import unsubscribe_blueprint
from sesender.http.webhooks import webhooks_blueprint
from sesender.monitoring import report_exception

__all__ = ["PUBLIC_ENDPOINTS", "SesenderApp", "create_app", "is_utf8"]

logger = logging.getLogger(__name__)

#: Endpoints reachable without X-API-KEY (the README's "HTTP API" lists them); the same routes as
#: the public ones of ROUTE_SCOPES (tests/unit/http/test_scopes.py checks they agree).
PUBLIC_ENDPOINTS = frozenset(
    {
        "health.health",
        "health.ready",
        "events.open_pixel",
        "events.click",
        "events_results.sns_results",
        "unsubscribe.unsubscribe_page",
        "unsubscribe.unsubscribe_post",
        "metrics.metrics",
        "docs.openapi",
        "dashboard.dashboard",
    }
)

HTTP_MESSAGES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Request body too large",
    415: "Unsupported media type",
}


def create_app(context: AppContext) -> SesenderApp:
    app = SesenderApp("sesender")
    app.context = context
    # "//" in a path is data (a topic id may contain slashes), not a reason for an HTML redirect.
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = context.config.server.max_request_bytes
    app.config["BODY_TIMEOUT"] = context.config.server.read_timeout
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    for blueprint in (
        health_blueprint,
        messages_blueprint,
        topics_blueprint,
        events_blueprint,
        docs_blueprint,
        feedback_blueprint,
        suppressions_blueprint,
        unsubscribe_blueprint,
        metrics_blueprint,
        stats_blueprint,
        reputation_blueprint,
        dashboard_blueprint,
        api_keys_blueprint,
        webhooks_blueprint,
    ):
        app.register_blueprint(blueprint)

    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def finish_reading_the_body(response: Response) -> Response:
        """Read what the client is still sending before answering early (401, 404, 405, 413,
        415...). Otherwise hypercorn closes the connection from inside the response, quart-trio
        cancels the request on the disconnect it sees, the close is interrupted halfway, and a
        keep-alive client's next request on that connection hangs until the read timeout."""
        if request.content_length or "transfer-encoding" in request.headers:
            finished = False
            try:
                with trio.move_on_after(context.config.server.read_timeout):
                    await request.get_data(cache=False, as_text=False, parse_form_data=False)
                    finished = True
            except RequestEntityTooLarge:
                finished = False
            if not finished:
                response.headers["Connection"] = "close"
        return response

    @app.after_request
    async def observe(response: Response) -> Response:
        if context.metrics is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            started = getattr(g, "started", None)
            elapsed = time.perf_counter() - started if started is not None else 0.0
            context.metrics.observe_http(route, request.method, response.status_code, elapsed)
        return response

    @app.before_request
    async def refuse_a_path_that_is_not_utf8() -> None:
        """Hypercorn decodes an invalid UTF-8 path (``/v1/suppressions/%FF@example.com``) with
        U+FFFD replacements: a handler would see, and store, a value the client never sent."""
        raw_path = request.scope.get("raw_path")
        if isinstance(raw_path, bytes) and not is_utf8(unquote_to_bytes(raw_path)):
            raise ApiError(400, "The URL path is not valid percent-encoded UTF-8")

    @app.before_request
    async def authenticate() -> None:
        rule = request.url_rule
        if rule is None:
            return
        access = access_for(request.method, rule.rule)
        if access == PUBLIC:
            return
        principal = await context.keys.authenticate(request.headers.get("X-API-KEY"))
        if access is None:
            logger.error(
                "route %s %s has no entry in ROUTE_SCOPES: admin keys only",
                request.method,
                rule.rule,
                extra={"event": "route_without_scope"},
            )
            access = ADMIN
        authorize(principal, access)
        g.principal = principal

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        response = error_response(error.status, error.message)
        if error.status == 503:
            response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(StoreUnavailable)
    async def store_unavailable(error: StoreUnavailable) -> Response:
        # A warning per request: the store logs the episode itself once, at error level.
        logger.warning("%s; answered 503", error, extra={"event": "request_store_unavailable"})
        response = error_response(503, "The database is unavailable; retry later")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = HTTP_MESSAGES.get(status, error.name)
        response = error_response(status, message)
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    async def unexpected_error(error: Exception) -> Response:
        # Reported first, with the route tag: Sentry deduplicates the log record's copy.
        report_exception(error, route=str(request.url_rule or request.path))
        logger.error(
            "unexpected error in %s %s",
            request.method,
            request.path,
            exc_info=error,
            extra={"event": "http_500"},
        )
        return error_response(500, "Internal server error")

    return app


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
