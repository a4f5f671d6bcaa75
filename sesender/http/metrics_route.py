"""``GET /metrics``: Prometheus text format (public, like /health; 404 when disabled)."""

from __future__ import annotations

import contextlib

from quart import Blueprint, Response

from sesender.errors import ApiError, StoreError
from sesender.http.context import app_context
from sesender.metrics import CONTENT_TYPE

metrics_blueprint = Blueprint("metrics", __name__)


@metrics_blueprint.get("/metrics")
async def metrics() -> Response:
    context = app_context()
    if context.metrics is None:
        raise ApiError(404, "Metrics are disabled (METRICS_ENABLED=false)")
    # On a database error keep the last known value; /ready reports the database.
    state = context.metrics.state
    with contextlib.suppress(StoreError):
        state.queued_in_database = await context.store.queued_count()
    with contextlib.suppress(StoreError):
        state.storage = await context.store.storage_stats()
    state.disk_free_bytes = await context.store.disk_free_bytes()
    return Response(context.metrics.render(), status=200, content_type=CONTENT_TYPE)
