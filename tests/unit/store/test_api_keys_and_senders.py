"""The store's part of issue 19: named keys (digests only, revoked not deleted, last use kept),
the key that submitted each email, and a message's sender kept with its content."""

from __future__ import annotations

from sesender.models import NewApiKey, NewMessage, Scope, Submission
from sesender.store.sqlite_queries import content_digest
from tests.unit.store.engines import AnyStore


def new_key(name: str, *scopes: Scope, senders: tuple[str, ...] | None = None) -> NewApiKey:
    return NewApiKey(
        name=name,
        scopes=frozenset(scopes),
        senders=senders,
        prefix="ssk_abcdefgh",
        digest=name.encode().ljust(32, b"\0"),
        created_at_ms=1_000,
    )


async def test_keys_are_created_listed_revoked_and_touched(store: AnyStore) -> None:
    first = await store.create_api_key(new_key("app", Scope.SEND, senders=("example.org",)))
    second = await store.create_api_key(new_key("ops", Scope.READ, Scope.ADMIN))
    assert first.scopes == frozenset({Scope.SEND})
    assert first.senders == ("example.org",)
    assert second.scopes == frozenset({Scope.READ, Scope.ADMIN})
    assert second.senders is None
    assert [k.id for k in await store.api_keys(include_revoked=False)] == [first.id, second.id]

    revoked = await store.revoke_api_key(first.id, now_ms=5_000)
    assert revoked is not None
    assert revoked.revoked_at_ms == 5_000
    again = await store.revoke_api_key(first.id, now_ms=9_000)
    assert again is not None
    assert again.revoked_at_ms == 5_000
    assert await store.revoke_api_key(999, now_ms=9_000) is None
    assert [k.id for k in await store.api_keys(include_revoked=False)] == [second.id]
    assert len(await store.api_keys(include_revoked=True)) == 2

    await store.touch_api_keys([(second.id, 7_000)])
    await store.touch_api_keys([(second.id, 6_000)])  # older: no change
    (listed,) = await store.api_keys(include_revoked=False)
    assert listed.last_used_at_ms == 7_000


async def test_the_sender_travels_with_the_content_and_the_key_with_each_email(
    store: AnyStore,
) -> None:
    messages = tuple(
        NewMessage(
            topic_id="t",
            subject="Same",
            body="<p>same</p>",
            emails=(f"{n}@example.org",),
            sender=sender,
            reply_to=reply_to,
        )
        for n, (sender, reply_to) in enumerate(
            [(None, None), ("billing@example.org", None), ("billing@example.org", "r@example.org")]
        )
    )
    receipt = await store.submit(
        Submission(messages=messages, due_at_ms=0, created_at_ms=0, api_key_id=42)
    )
    batch = await store.claim_due(now_ms=1, limit=10)
    seen = {(e.content.sender, e.content.reply_to) for e in batch.emails}
    assert seen == {
        (None, None),
        ("billing@example.org", None),
        ("billing@example.org", "r@example.org"),
    }
    assert receipt.first_request_id is not None
    detail = await store.request_detail(receipt.first_request_id + 1)
    assert detail is not None
    assert (detail.api_key_id, detail.sender) == (42, "billing@example.org")


def test_the_default_sender_keeps_the_digest_contents_had_before_senders() -> None:
    plain = content_digest("s", "b")
    assert content_digest("s", "b", None, None) == plain
    assert content_digest("s", "b", "a@example.org") != plain
    assert content_digest("s", "b", "a@example.org") != content_digest(
        "s", "b", None, "a@example.org"
    )
