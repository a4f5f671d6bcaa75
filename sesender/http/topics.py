"""``GET /v1/topics/{topic_id}`` (statistics), ``GET .../links`` (per-link clicks) and ``DELETE``
(structured cancellation)."""

from __future__ import annotations

from quart import Blueprint, Response, request

from sesender.errors import ApiError, StoreUnavailable
from sesender.http.context import app_context
from sesender.http.responses import iso, json_response
from sesender.models import Status, TopicStats

topics_blueprint = Blueprint("topics", __name__)

#: Event types always listed (with zeros) for a known topic, as the original service did.
DOCUMENTED_RESULTS = ("Delivery", "Open", "Bounce", "Complaint")
MAX_TOPICS = 200


@topics_blueprint.get("/v1/topics/<path:topic_id>")
async def topic_stats(topic_id: str) -> Response:
    return json_response(stats_json(await app_context().store.topic_stats(topic_id)))


@topics_blueprint.get("/v1/topics/<path:topic_id>/links")
async def topic_links(topic_id: str) -> Response:
    """Each tracked link of the topic with its clicks: ``unique_clicks`` counts emails that
    clicked it (once each), ``total_clicks`` every click; most clicked first."""
    links = await app_context().store.topic_links(topic_id)
    return json_response(
        {
            "topic_id": topic_id,
            "links": [
                {
                    "url": link.url,
                    "unique_clicks": link.unique_clicks,
                    "total_clicks": link.total_clicks,
                }
                for link in links
            ],
        }
    )


def stats_json(stats: TopicStats) -> dict[str, dict[str, int]]:
    """Counts by status name and by event type; zeros listed for a known topic, as the original
    service did; empty maps for an unknown one. ``result_counts["Click"]`` counts emails with at
    least one click; ``clicks`` adds every click (``total``), when there was any."""
    if not stats.request_counts and not stats.result_counts:
        return {"request_counts": {}, "result_counts": {}}
    request_counts = {status.label: stats.request_counts.get(status.label, 0) for status in Status}
    result_counts = {name: stats.result_counts.get(name, 0) for name in DOCUMENTED_RESULTS}
    result_counts.update(stats.result_counts)
    stats_body = {"request_counts": request_counts, "result_counts": result_counts}
    if stats.total_clicks or "Click" in stats.result_counts:
        stats_body["clicks"] = {
            "unique": stats.result_counts.get("Click", 0),
            "total": stats.total_clicks,
        }
    return stats_body


@topics_blueprint.delete("/v1/topics/<path:topic_id>")
async def cancel_topic(topic_id: str) -> Response:
    try:
        stopped = await app_context().pipeline.cancel_topic(topic_id)
    except StoreUnavailable as exc:
        raise ApiError(503, f"Storage unavailable: {exc}") from exc
    return json_response({"status": "ok", "stopped": stopped})


@topics_blueprint.post("/v1/topics/<path:topic_id>/retry")
async def retry_failed(topic_id: str) -> Response:
    """Requeue the topic's emails that failed for transient reasons or because the service could
    not build them (not permanent rejections, not suppressed addresses); they get the full
    number of attempts again."""
    context = app_context()
    try:
        requeued = await context.store.retry_failed(topic_id, now_ms=context.now_ms())
    except StoreUnavailable as exc:
        raise ApiError(503, f"Storage unavailable: {exc}") from exc
    if requeued:
        context.pipeline.notify_submitted()
    return json_response({"status": "ok", "requeued": requeued})


@topics_blueprint.get("/v1/topics")
async def recent_topics() -> Response:
    """The most recently submitted topics with their counts (for the dashboard)."""
    raw = request.args.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_TOPICS}") from None
    if not 1 <= limit <= MAX_TOPICS:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_TOPICS}")
    topics = await app_context().store.recent_topics(limit=limit)
    return json_response(
        {
            "topics": [
                {
                    "topic_id": topic.topic_id,
                    "created_at": iso(topic.created_at_ms),
                    "updated_at": iso(topic.updated_at_ms),
                    **stats_json(topic.stats),
                }
                for topic in topics
            ]
        }
    )
