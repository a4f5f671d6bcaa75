"""Runs the app under hypercorn as an actor: started by our nursery, stopped by our trigger.

With ``ACCESS_LOG=true`` each request hypercorn answered is one ``http_request`` log line (logger
``sesender.access``, level info) through the service's own logging set-up, so it is a JSON object
like every other line with ``LOG_FORMAT=json``: method, path, status and duration. The query string
is never logged: the tracking pixel's and the unsubscribe link's tokens travel in it; nor are a
tracked link's token and code, which travel in its path (logged as ``/v1/events/click/…``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.logging import Logger as HypercornLogger
from hypercorn.trio import serve
from hypercorn.typing import ResponseSummary, WWWScope

from sesender.config import ServerConfig
from sesender.http.context import SesenderApp
from sesender.links import CLICK_PATH

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("sesender.access")


class AccessLogger(HypercornLogger):
    """Hypercorn's logger, with its access line replaced by one structured event per request.

    The fields come straight from the ASGI scope: hypercorn's own access-log atoms would copy
    every environment variable (the API key among them) for each request, and its request line
    carries the query string.

    Only answered requests are logged. Hypercorn also reports a request with no response when the
    connection closes before it has marked the stream finished, which happens when a client hangs
    up the moment it has read a complete answer: that request is then reported a second time with
    its status, and one line per request is what an access log promises.
    """

    async def access(
        self, request: WWWScope, response: ResponseSummary | None, request_time: float
    ) -> None:
        if self.access_logger is None or response is None:
            return  # ACCESS_LOG off, or no answer (see above)
        if not self.access_logger.isEnabledFor(logging.INFO):
            return  # LOG_LEVEL above info
        method = request["method"] if request["type"] == "http" else "GET"
        status = response["status"]
        path = loggable_path(request["path"])
        self.access_logger.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "event": "http_request",
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(request_time * 1000, 1),
            },
        )


def loggable_path(path: str) -> str:
    """``path`` as the access log shows it: a tracked link's token and code are credentials (they
    record clicks), so they are left out."""
    if path.startswith(CLICK_PATH):
        return CLICK_PATH + "…"
    return path


def hypercorn_config(server: ServerConfig) -> HypercornConfig:
    config = HypercornConfig()
    host = f"[{server.host}]" if ":" in server.host else server.host
    config.bind = [f"{host}:{server.port}"]
    config.logger_class = AccessLogger
    # A logger object (not a file name) makes hypercorn use it as it is: our handlers, our format.
    config.accesslog = access_logger if server.access_log else None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Slow clients cannot hold a connection: reads time out, idle keep-alives are closed.
    config.read_timeout = max(1, int(server.read_timeout))
    config.keep_alive_timeout = server.keep_alive_timeout
    config.graceful_timeout = max(0.1, min(5.0, server.shutdown_timeout / 2))
    config.include_server_header = False
    config.h11_max_incomplete_size = 64 * 1024
    return config


async def serve_http(
    app: SesenderApp,
    config: HypercornConfig,
    stop: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop`` returns; then stop accepting, drain requests, and return."""
    await serve(app, config, shutdown_trigger=stop, task_status=task_status)
