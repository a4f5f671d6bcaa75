"""``GET /v1/stats/send-rate``: what the pipeline is doing now; ``GET /v1/stats/storage``: the
database's size, rows, retention and backups (both for the dashboard)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from sesender.errors import ApiError, StoreError
from sesender.http.context import app_context
from sesender.http.responses import iso, json_response

stats_blueprint = Blueprint("stats", __name__)

MAX_SECONDS = 600


@stats_blueprint.get("/v1/stats/send-rate")
async def send_rate() -> Response:
    raw = request.args.get("seconds", "300")
    try:
        seconds = int(raw)
    except ValueError:
        raise ApiError(400, f"seconds must be a whole number from 1 to {MAX_SECONDS}") from None
    if not 1 <= seconds <= MAX_SECONDS:
        raise ApiError(400, f"seconds must be a whole number from 1 to {MAX_SECONDS}")
    context = app_context()
    pipeline = context.pipeline
    history = pipeline.rate_history.snapshot(seconds)
    gate = pipeline.gate_statistics()
    depth = {stats.name: stats.depth for stats in pipeline.pipe_statistics()}
    recent = history[-10:]
    return json_response(
        {
            "configured_per_second": pipeline.bucket.statistics().rate,
            "current_per_second": sum(count for _, count in recent) / max(1, len(recent)),
            "per_second": [{"t": second, "sent": count} for second, count in history],
            "queued": await context.store.queued_count(),
            "in_memory": depth,
            "in_flight": pipeline.sender_pool.statistics().in_flight,
            "sending": "paused" if gate.paused else "active",
            "sending_paused_reason": gate.reason or None,
            "sending_held": gate.held,
        }
    )


@stats_blueprint.get("/v1/stats/storage")
async def storage() -> Response:
    context = app_context()
    try:
        stats = await context.store.storage_stats()
    except StoreError as exc:
        raise ApiError(503, f"Storage unavailable: {exc}") from exc
    return json_response(
        {
            "database_bytes": stats.database_bytes,
            "free_bytes": stats.free_bytes,
            "file_bytes": stats.file_bytes,
            "rows": stats.rows,
            "retention_days": context.config.database.retention_days,
            "emails_pruned": stats.emails_pruned,
            "last_prune_at": iso(stats.last_prune_at_ms),
            "last_backup_at": iso(stats.last_backup_at_ms),
        }
    )
