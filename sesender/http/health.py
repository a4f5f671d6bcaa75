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
    the writes' own record (``Store.write_status``) decides that part.

    ``status`` and ``db`` are the original service's two fields with its values (``"ok"`` and
    ``"connected"`` when ready; ``"unavailable"``, and ``"disconnected"`` when reads fail), so a
    probe written against the original keeps working; the other fields are sesender's."""
    context = app_context()
    problems: list[str] = []
    database = "ok"
    reachable = True
    try:
        await context.store.ping()
    except StoreError as exc:
        database = f"error: {exc}"
        reachable = False
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
    instance = context.instance.status() if context.instance is not None else None
    if instance is not None and instance.stale:
        problems.append("instance heartbeat older than its lease")
    gate = context.pipeline.gate_statistics()
    body: dict[str, Any] = {
        "status": "ok" if not problems else "unavailable",
        "db": "connected" if reachable else "disconnected",
        "backend": context.config.backend.kind.value,
        "database": database,
        "sending": "paused" if gate.paused else "active",
        "actors": actors,
    }
    if instance is not None:
        body["instance"] = {
            "id": instance.instance_id,
            "heartbeat_age_seconds": (
                round(instance.heartbeat_age, 3) if instance.heartbeat_age != float("inf") else None
            ),
        }
    if gate.paused:
        body["sending_paused_reason"] = gate.reason
    if problems:
        body["problems"] = problems
    return json_response(body, 200 if not problems else 503)
