"""Runs the app under hypercorn as an actor: started by our nursery, stopped by our trigger."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from sesender.config import ServerConfig
from sesender.http.context import SesenderApp

logger = logging.getLogger(__name__)


def hypercorn_config(server: ServerConfig) -> HypercornConfig:
    config = HypercornConfig()
    host = f"[{server.host}]" if ":" in server.host else server.host
    config.bind = [f"{host}:{server.port}"]
    config.accesslog = None
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
