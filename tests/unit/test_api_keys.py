"""The key ring: the configured key, named keys by digest, a copy at most a second old.

Time is a plain counter the tests move (the ring takes its clock as an argument), so "a revoked
key stops working within a second" is checked exactly, without sleeping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
import trio

from sesender.api_keys import (
    CONFIGURED_KEY,
    LAST_USED_RESOLUTION_MS,
    REFRESH_SECONDS,
    KeyRing,
    generate_named_key,
    key_digest,
)
from sesender.errors import ApiError, StoreUnavailable
from sesender.models import ApiKey, Scope

CONFIGURED = "configured-admin-key"


class FakeKeys:
    def __init__(self) -> None:
        self.keys: dict[int, ApiKey] = {}
        self.reads = 0
        self.touched: list[tuple[int, int]] = []
        self.failing = False
        self.read_started = trio.Event()
        self.release_read: trio.Event | None = None

    def add(self, key_id: int, key: str, *scopes: Scope) -> None:
        self.keys[key_id] = ApiKey(
            id=key_id,
            name=f"key {key_id}",
            scopes=frozenset(scopes),
            senders=None,
            prefix=key[:12],
            digest=key_digest(key),
            created_at_ms=0,
            last_used_at_ms=None,
            revoked_at_ms=None,
        )

    async def api_keys(self, *, include_revoked: bool) -> list[ApiKey]:
        assert not include_revoked
        self.reads += 1
        self.read_started.set()
        if self.release_read is not None:
            await self.release_read.wait()
        if self.failing:
            raise StoreUnavailable("database unavailable: disk i/o error")
        return list(self.keys.values())

    async def touch_api_keys(self, used: Sequence[tuple[int, int]]) -> None:
        self.touched.extend(used)
        for key_id, at in used:
            key = self.keys[key_id]
            latest = max(key.last_used_at_ms or 0, at)
            self.keys[key_id] = dataclasses.replace(key, last_used_at_ms=latest)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ring(store: FakeKeys, clock: Clock, now_ms: list[int] | None = None) -> KeyRing:
    times = now_ms if now_ms is not None else [1_000_000]
    return KeyRing(
        store,  # type: ignore[arg-type]
        configured_digest=key_digest(CONFIGURED),
        now_ms=lambda: times[0],
        clock=clock,
    )


def test_generated_keys_are_random_prefixed_and_kept_as_their_digest() -> None:
    key, prefix, digest = generate_named_key()
    other, _, _ = generate_named_key()
    assert key != other
    assert key.startswith("ssk_")
    assert len(key) >= 40
    assert key.startswith(prefix)
    assert len(prefix) == 12
    assert digest == key_digest(key)
    assert len(digest) == 32


async def test_the_configured_key_is_admin_and_needs_no_read() -> None:
    store = FakeKeys()
    keys = ring(store, Clock())
    assert await keys.authenticate(CONFIGURED) == CONFIGURED_KEY
    assert CONFIGURED_KEY.has(Scope.SEND)
    assert CONFIGURED_KEY.has(Scope.READ)
    assert store.reads == 0


@pytest.mark.parametrize(
    ("presented", "message"),
    [(None, "Missing X-API-KEY header"), (" ", "Empty API Key"), ("nope", "Invalid API Key")],
)
async def test_missing_empty_and_unknown_keys_are_401(presented: str | None, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        await ring(FakeKeys(), Clock()).authenticate(presented)
    assert (caught.value.status, caught.value.message) == (401, message)


async def test_keys_are_read_at_most_once_a_second_and_a_revocation_holds_within_it() -> None:
    store = FakeKeys()
    store.add(1, "ssk_one", Scope.SEND)
    clock = Clock()
    keys = ring(store, clock)
    principal = await keys.authenticate("ssk_one")
    assert (principal.key_id, principal.scopes) == (1, frozenset({Scope.SEND}))
    assert not principal.has(Scope.READ)
    for _ in range(100):
        await keys.authenticate("ssk_one")
    assert store.reads == 1

    del store.keys[1]  # revoked by another instance
    clock.now += REFRESH_SECONDS - 0.001
    await keys.authenticate("ssk_one")  # the copy is not a second old yet
    clock.now += 0.001
    with pytest.raises(ApiError):
        await keys.authenticate("ssk_one")
    assert store.reads == 2


async def test_invalidate_reads_again_at_once() -> None:
    store = FakeKeys()
    keys = ring(store, Clock())
    with pytest.raises(ApiError):
        await keys.authenticate("ssk_new")
    store.add(2, "ssk_new", Scope.READ)
    keys.invalidate()
    assert (await keys.authenticate("ssk_new")).key_id == 2


async def test_concurrent_checks_share_one_read() -> None:
    store = FakeKeys()
    store.add(1, "ssk_one", Scope.SEND)
    store.release_read = trio.Event()
    keys = ring(store, Clock())
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(keys.authenticate, "ssk_one")
        await store.read_started.wait()
        await trio.testing.wait_all_tasks_blocked()
        store.release_read.set()
    assert store.reads == 1


async def test_an_unreachable_database_refuses_named_keys_not_the_configured_one() -> None:
    store = FakeKeys()
    store.add(1, "ssk_one", Scope.SEND)
    store.failing = True
    keys = ring(store, Clock())
    with pytest.raises(StoreUnavailable):
        await keys.authenticate("ssk_one")
    assert await keys.authenticate(CONFIGURED) == CONFIGURED_KEY


async def test_last_use_is_written_at_a_refresh_once_a_minute_at_most() -> None:
    store = FakeKeys()
    store.add(1, "ssk_one", Scope.SEND)
    clock = Clock()
    now_ms = [10_000_000]
    keys = ring(store, clock, now_ms)
    await keys.authenticate("ssk_one")  # first refresh: nothing used before it
    assert store.touched == []
    clock.now += REFRESH_SECONDS
    await keys.authenticate("ssk_one")  # the refresh writes the use seen before it
    assert store.touched == [(1, 10_000_000)]
    now_ms[0] += LAST_USED_RESOLUTION_MS - 1
    clock.now += REFRESH_SECONDS
    await keys.authenticate("ssk_one")
    clock.now += REFRESH_SECONDS
    await keys.authenticate("ssk_one")
    assert store.touched == [(1, 10_000_000)]  # under a minute later: not written
    now_ms[0] += 1
    await keys.authenticate("ssk_one")
    clock.now += REFRESH_SECONDS
    await keys.authenticate("ssk_one")
    assert store.touched[-1] == (1, 10_000_000 + LAST_USED_RESOLUTION_MS)
