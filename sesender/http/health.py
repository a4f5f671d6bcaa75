"""``/health`` (liveness: the process answers) and ``/ready`` (it can do its job)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from sesender.errors import StoreError
from sesender.http.context import app_context
from sesender.http.responses import iso, json_response

health_blueprint = Blueprint("health", __name__)


@health_blueprint.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@health_blueprint.get("/ready")
async def ready() -> Response:
    """200 when the database answers and takes writes and every actor runs, even while sending is
    paused by the provider (the process is healthy; the account is not); 503 otherwise or while
    draining. A database that refuses writes (disk full, read-only file) still answers reads, so
    the writes' own record (``Store.write_status``) decides that part. Less free disk space than
    ``DISK_FREE_WARNING_MB`` is a warning (``warnings``), not a reason to be unready."""
    context = app_context()
    problems: list[str] = []
    database = "ok"
    try:
        await context.store.ping()
    except StoreError as exc:
        database = f"error: {exc}"
        problems.append("database unreachable")
    writes = context.store.write_status()
    if writes.failing and database == "ok":
        database = f"refusing writes since {iso(writes.failing_since_ms)}: {writes.last_error}"
        problems.append("database refuses writes")
    actors = {actor.name: actor.state.value for actor in context.supervisor.statistics().actors}
    if not context.supervisor.all_running(context.required_actors):
        problems.append("not every actor is running")
    if context.shutdown.is_set:
        problems.append("shutting down")
    gate = context.pipeline.gate_statistics()
    body: dict[str, Any] = {
        "status": "ready" if not problems else "not ready",
        "backend": context.config.backend.kind.value,
        "database": database,
        "sending": "paused" if gate.paused else "active",
        "actors": actors,
    }
    if gate.paused:
        body["sending_paused_reason"] = gate.reason
    if problems:
        body["problems"] = problems
    warnings = disk_warnings(body, context.store.disk_free_bytes())
    if warnings:
        body["warnings"] = warnings
    return json_response(body, 200 if not problems else 503)


def disk_warnings(body: dict[str, Any], free: int | None) -> list[str]:
    """A warning, not a problem: a nearly full disk still takes writes, and an orchestrator that
    restarted the service for it would only make things worse. Sets ``disk_free_bytes``."""
    if free is None:
        return []
    body["disk_free_bytes"] = free
    threshold = app_context().config.database.disk_free_warning_bytes
    if threshold and free < threshold:
        return [
            f"the database's disk has {free // (1024 * 1024)} MB free, less than"
            f" DISK_FREE_WARNING_MB={threshold // (1024 * 1024)}"
        ]
    return []
