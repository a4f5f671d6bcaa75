"""``/health`` (liveness: the process answers) and ``/ready`` (it can do its job)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from sesender.errors import StoreError
from sesender.http.context import app_context
from sesender.http.responses import iso, json_response
from sesender.senders import SenderPolicy

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
    ``DISK_FREE_WARNING_MB`` is a warning (``warnings``), not a reason to be unready.

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
    aws = context.config.backend.aws
    body: dict[str, Any] = {
        "status": "ok" if not problems else "unavailable",
        "db": "connected" if reachable else "disconnected",
        "backend": context.config.backend.kind.value,
        # What SES must have verified (addresses, or domains covering every address in them)
        # for every sender a message may use: the default sender and ALLOWED_SENDERS.
        "sender_identities": SenderPolicy(aws.from_email, aws.allowed_senders).identities(),
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
    # The reputation guard's holds: sending paused by it (until an operator resumes), and the
    # topics it stopped. The process is still ready: the account is what needs attention.
    body["sending_held"] = gate.held
    if gate.held:
        body["sending_held_reason"] = gate.hold_reason
    guard = context.pipeline.guard
    if guard is not None:
        body["held_topics"] = sorted(guard.statistics().held_topics)
    if problems:
        body["problems"] = problems
    warnings = disk_warnings(body, await context.store.disk_free_bytes())
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
