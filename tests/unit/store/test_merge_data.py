"""Merge-field values in the store: stored per recipient, returned by the claim, kept on retry."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sesender.models import NewMessage, Retry, Submission
from sesender.store.schema import MIGRATIONS
from sesender.store.sqlite import migrate
from tests.unit.store.engines import AnyStore, rows

NOW = 1_700_000_000_000


def submission(*messages: NewMessage) -> Submission:
    return Submission(messages=messages, due_at_ms=NOW, created_at_ms=NOW)


async def test_values_are_stored_per_recipient_and_come_back_with_the_claim(
    store: AnyStore,
) -> None:
    hostile = "x\"}', NULL); DROP TABLE requests; --\n<b>&amp;</b> \u00e9\U0001f600"
    template = NewMessage(
        topic_id="t",
        subject="Hi {{name}}",
        body="<p>{{name}} {{plan}}</p>",
        emails=("ada@example.com", "bob@example.com"),
        data=({"name": "Ada", "plan": "pro"}, {"name": hostile, "plan": ""}),
    )
    plain = NewMessage(topic_id="t", subject="{{name}}", body="<p>b</p>", emails=("c@example.com",))
    receipt = await store.submit(submission(template, plain))
    assert receipt.stored == 3
    batch = await store.claim_due(now_ms=NOW, limit=10)
    by_address = {email.email: email for email in batch.emails}
    assert by_address["ada@example.com"].data == {"name": "Ada", "plan": "pro"}
    assert by_address["bob@example.com"].data == {"name": hostile, "plan": ""}
    assert by_address["c@example.com"].data is None  # not a template: sent as given
    assert by_address["ada@example.com"].content.subject == "Hi {{name}}"
    # The template's content is stored once for both recipients.
    assert rows(store, "SELECT COUNT(*) FROM contents") == [(2,)]


async def test_an_empty_values_object_is_a_template_too(store: AnyStore) -> None:
    message = NewMessage("t", "s", "<p>b</p>", ("a@example.com",), data=({},))
    await store.submit(submission(message))
    (email,) = (await store.claim_due(now_ms=NOW, limit=1)).emails
    assert email.data == {}


async def test_a_retried_email_keeps_its_values(store: AnyStore) -> None:
    message = NewMessage("t", "s", "{{v}}", ("a@example.com",), data=({"v": "1"},))
    await store.submit(submission(message))
    (email,) = (await store.claim_due(now_ms=NOW, limit=1)).emails
    await store.record_outcomes(
        [Retry(email.request_id, "throttled", attempts=1, due_at_ms=NOW + 1)], now_ms=NOW
    )
    (again,) = (await store.claim_due(now_ms=NOW + 1, limit=1)).emails
    assert again.request_id == email.request_id
    assert again.data == {"v": "1"}


def test_the_migration_adds_a_nullable_column_to_existing_rows(tmp_path: Path) -> None:
    """A database made before merge fields keeps its emails, which are not templates."""
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    for version, script in enumerate(MIGRATIONS[:-1], start=1):
        connection.executescript(script)
        connection.execute(f"PRAGMA user_version = {version}")
    connection.execute(
        "INSERT INTO contents (id, digest, subject, body, created_at)"
        " VALUES (1, x'00', 's', 'b', 0)"
    )
    connection.execute(
        "INSERT INTO requests (topic_id, content_id, email, due_at, created_at, updated_at)"
        " VALUES ('t', 1, 'old@example.com', 0, 0, 0)"
    )
    connection.commit()
    connection.close()
    assert migrate(path) == [len(MIGRATIONS)]
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT email, data FROM requests").fetchall() == [
            ("old@example.com", None)
        ]
    finally:
        connection.close()
