"""Data lifecycle against the running service: retention keeps the statistics, backups are
consistent while sending at full rate.

The click links of pruned emails must still redirect (to the exact URL) and record nothing.

Retention runs in two phases on one database: the service first runs with ``RETENTION_DAYS=0``
(keeps everything) to send, count opens and take the "before" figures; it is then restarted with a
retention of one second and a housekeeping interval of a fifth of a second, and the test polls
until the old emails answer 410. It runs on SQLite and on PostgreSQL (a new database on the local
server, ``DATABASE_URL``); only the file's shrinking and the disk figures are SQLite's.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sesender.tracking import TokenSigner
from tests import postgres_support
from tests.e2e.harness import ServiceProcess, console_script, submit, wait_for, wait_topic

pytestmark = pytest.mark.e2e

SECRET = "lifecycle-tracking-secret-0123456789"
ONE_SECOND_IN_DAYS = f"{1 / 86_400:.12f}"
COMMON = {
    "SENDER_BACKEND": "memory",
    "MAX_SEND_PER_SECOND": "2000",
    "TRACKING_SECRET": SECRET,
    "SCHEDULER_INTERVAL_SECONDS": "0.2",
}


def figures(client: httpx.Client, topics: list[str]) -> dict[str, Any]:
    """Everything pruning must leave unchanged, through the API."""

    def get(path: str, **params: Any) -> Any:
        response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    return {
        "topics": {topic: get(f"/v1/topics/{topic}") for topic in topics},
        "links": {topic: get(f"/v1/topics/{topic}/links") for topic in topics},
        "recent": get("/v1/topics"),
        "sent_1h": get("/v1/events/counts/sent", hours=1),
        "sent_24h": get("/v1/events/counts/sent", hours=24),
        "suppressions": get("/v1/suppressions", limit=1000),
    }


def pixel(service: ServiceProcess, request_id: int) -> httpx.Response:
    token = TokenSigner(SECRET.encode()).sign("open", request_id)
    with httpx.Client(base_url=service.url, timeout=30) as anonymous:
        return anonymous.get("/v1/events/open", params={"request_id": token})


#: A tracked link whose exact URL (entity decoded, query, fragment) the redirect must give back.
SHOP = "https://shop.example.com/sale?utm_source=mail&utm_campaign=spring%20sale#top"
TRACKED_CONTENT = (
    "<html><body><p><a href='https://shop.example.com/sale?utm_source=mail&amp;"
    "utm_campaign=spring%20sale#top'>Shop</a> <a href='https://blog.example.com/'>Blog</a>"
    "</p></body></html>"
)


def click(service: ServiceProcess, request_id: int, position: int, url: str) -> httpx.Response:
    """Follow the tracked link an email's HTML has, as a browser would (no redirect followed)."""
    signer = TokenSigner(SECRET.encode())
    path = f"/v1/events/click/{signer.sign('click', request_id)}/{signer.link_code(position, url)}"
    with httpx.Client(base_url=service.url, timeout=30, follow_redirects=False) as anonymous:
        return anonymous.get(path)


@pytest.fixture(params=["sqlite", "postgres"])
def engine_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Nothing for SQLite (the harness's file); DATABASE_URL of a new database for PostgreSQL."""
    if request.param == "sqlite":
        yield {}
        return
    with postgres_support.temporary_database("sesender_e2e_lifecycle") as url:
        yield {"DATABASE_URL": url}


def test_retention_keeps_statistics_and_answers_410_for_pruned_emails(
    start_service: Callable[..., ServiceProcess], tmp_path: Path, engine_env: dict[str, str]
) -> None:
    database = tmp_path / "sesender.db"
    sqlite = not engine_env
    first = start_service(RETENTION_DAYS="0", **COMMON, **engine_env)
    old: list[int] = []
    with first.client() as client:
        response = client.post(
            "/v1/messages",
            json={
                "messages": [
                    {
                        "topic_id": "clicks",
                        "emails": [f"c{i}@example.com" for i in range(20)],
                        "subject": "Sale",
                        "content": TRACKED_CONTENT,
                        "track_clicks": True,
                    }
                ]
            },
        )
        assert response.status_code == 200, response.text
        first_click_id = response.json()["first_request_id"]
        clicked = list(range(first_click_id, first_click_id + 20))
        wait_topic(client, "clicks", count=len(clicked), timeout=60)
        assert click(first, clicked[2], 0, SHOP).headers["location"] == SHOP
        wait_for(
            lambda: client.get("/v1/topics/clicks").json().get("clicks", {}).get("total") == 1,
            timeout=15,
            what="a click counted",
        )
        for n in range(8):  # eight contents of ~60 KB, 250 emails each
            old += submit(
                client,
                topic="old",
                emails=[f"u{n}-{i}@example.com" for i in range(250)],
                content=f"<html><body><p>{n}</p>{'x' * 60_000}</body></html>",
            )
        wait_topic(client, "old", count=len(old), timeout=60)
        for request_id in old[:10]:
            assert pixel(first, request_id).status_code == 200
        wait_for(
            lambda: client.get("/v1/topics/old").json()["result_counts"].get("Open") == 10,
            timeout=15,
            what="ten opens counted",
        )
        put = client.put("/v1/suppressions/keep@example.com", json={"reason": "asked"})
        assert put.status_code == 200, put.text
        before = figures(client, ["old", "clicks"])
        assert client.get(f"/v1/messages/{old[0]}").status_code == 200
    assert first.stop() == 0
    size_before = database.stat().st_size if sqlite else 0

    second = start_service(
        RETENTION_DAYS=ONE_SECOND_IN_DAYS,
        HOUSEKEEPING_INTERVAL_SECONDS="0.2",
        **COMMON,
        **engine_env,
    )
    with second.client() as client:
        wait_for(
            lambda: client.get(f"/v1/messages/{old[0]}").status_code == 410,
            timeout=30,
            what="the first old email to be pruned",
        )
        storage = wait_for(
            lambda: (
                (body := client.get("/v1/stats/storage").json())["emails_pruned"]
                == len(old) - 1 + len(clicked)
                and body["last_prune_at"]
                and body
            ),
            timeout=30,
            what="every old email but the newest pruned",
        )
        assert storage["rows"]["requests"] == 1  # the newest stays: its id is never reused
        assert storage["rows"]["results"] == 0
        assert storage["rows"]["suppressions"] == 1
        assert storage["rows"]["contents"] == 1
        assert storage["free_bytes"] == 0  # given back to the file system (SQLite)
        gone = client.get(f"/v1/messages/{old[5]}")
        assert gone.status_code == 410
        assert "retention" in gone.json()["error"]
        assert client.get(f"/v1/messages/{old[-1]}").status_code == 200
        assert client.get(f"/v1/messages/{old[-1] + 1000}").status_code == 404
        # A genuine unsubscribe link of a pruned email cannot suppress (the address is gone):
        # it says the link expired instead of claiming an unsubscription, and changes nothing.
        token = TokenSigner(SECRET.encode()).sign("unsubscribe", old[4])
        with httpx.Client(base_url=second.url, timeout=30) as anonymous:
            expired = anonymous.post(
                "/v1/unsubscribe",
                params={"token": token},
                data={"List-Unsubscribe": "One-Click"},
            )
        assert expired.status_code == 410
        assert "expired" in expired.text
        assert figures(client, ["old", "clicks"]) == before
        # The click links of pruned emails (their content is gone) still redirect to the exact
        # URL, from the database (this process never saw them submitted), and record nothing:
        # a tampered one still answers the plain page.
        assert client.get(f"/v1/messages/{clicked[2]}").status_code == 410
        for request_id, position, url in (
            (clicked[2], 0, SHOP),
            (clicked[0], 1, "https://blog.example.com/"),
            (clicked[-1], 0, SHOP),
        ):
            redirect = click(second, request_id, position, url)
            assert redirect.status_code == 302, redirect.text
            assert redirect.headers["location"] == url
        assert click(second, clicked[2], 0, SHOP + "x").status_code == 404
        assert click(second, clicked[2], 2, SHOP).status_code == 404
        # The pixel of a pruned email still answers, and counts nothing: the kept email's open,
        # sent after it (and after the clicks above) through the same writer, is counted, and
        # only that one.
        response = pixel(second, old[3])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert pixel(second, old[-1]).status_code == 200
        wait_for(
            lambda: client.get("/v1/topics/old").json()["result_counts"]["Open"] == 11,
            timeout=15,
            what="the kept email's open",
        )
        after = figures(client, ["old", "clicks"])
        after["topics"]["old"]["result_counts"]["Open"] = 10
        after["recent"]["topics"][0]["result_counts"]["Open"] = 10
        assert after == before
        metrics = client.get("/metrics").text
        assert f"sesender_emails_pruned_total {float(len(old) - 1 + len(clicked))}" in metrics
        assert 'sesender_database_rows{table="requests"} 1.0' in metrics
        ready = client.get("/ready").json()
        assert "warnings" not in ready
        if sqlite:  # a PostgreSQL server's disk is not this process's to measure
            assert "sesender_disk_free_bytes" in metrics
            assert ready["disk_free_bytes"] > 0
    assert second.stop() == 0
    assert second.find("emails_pruned") is not None
    if sqlite:  # the file shrank (PostgreSQL's autovacuum only makes the space reusable)
        size_after = database.stat().st_size
        assert size_after < size_before / 2, (size_before, size_after)


def test_ready_warns_when_the_disk_has_less_free_space_than_the_setting(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service(DISK_FREE_WARNING_MB="1000000000", **COMMON)
    with service.client() as client:
        response = client.get("/ready")
    assert response.status_code == 200  # a warning, not a reason to be unready
    body = response.json()
    assert body["status"] == "ok"
    assert body["warnings"] == [
        f"the database's disk has {body['disk_free_bytes'] // 1_048_576} MB free, less than"
        " DISK_FREE_WARNING_MB=1000000000"
    ]


def test_a_backup_taken_while_sending_holds_every_email_committed_before_it(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(**COMMON)
    committed: list[int] = []  # the last request id of every accepted submission, in order
    stop = threading.Event()

    def keep_submitting() -> None:
        with service.client() as client:
            n = 0
            while not stop.is_set():
                ids = submit(
                    client, topic="load", emails=[f"l{n}-{i}@example.com" for i in range(200)]
                )
                committed.append(ids[-1])
                n += 1

    loader = threading.Thread(target=keep_submitting, daemon=True)
    loader.start()
    try:
        with service.client() as client:
            wait_for(
                lambda: (
                    client.get("/v1/topics/load").json()["request_counts"].get("Sent", 0) > 2000
                ),
                timeout=60,
                what="sending under way",
            )
        highest_before = committed[-1]
        target = tmp_path / "backup.db"
        result = subprocess.run(
            [*console_script(), "backup", str(target)],
            env={**service.env, "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        sent_during = len(committed)
    finally:
        stop.set()
        loader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout
    assert f"{target.stat().st_size} bytes" in result.stdout
    copy = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        stored = {row[0] for row in copy.execute("SELECT id FROM requests")}
        assert set(range(1, highest_before + 1)) <= stored
        assert copy.execute("PRAGMA quick_check").fetchone() == ("ok",)
    finally:
        copy.close()
    assert len(committed) >= sent_during  # the load went on while the backup ran
    with service.client() as client:
        assert client.get("/v1/stats/storage").json()["last_backup_at"] is not None
        counts = client.get("/v1/topics/load").json()["request_counts"]
        assert counts.get("Failed", 0) == 0
