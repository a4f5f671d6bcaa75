"""The housekeeper prunes deduplication records and webhook events on its interval, each with
its own retention, under the autojump clock."""

from __future__ import annotations

import trio
import trio.testing

from sesender.pipeline.housekeeper import DAY_MS, Housekeeper


class RecordingStore:
    def __init__(self) -> None:
        self.prunes: list[int] = []
        self.webhook_prunes: list[tuple[int, int]] = []

    async def prune(self, *, before_ms: int) -> tuple[int, int]:
        await trio.lowlevel.checkpoint()
        self.prunes.append(before_ms)
        return (1, 0)

    async def prune_webhooks(
        self, *, delivered_before_ms: int, failed_before_ms: int
    ) -> tuple[int, int]:
        await trio.lowlevel.checkpoint()
        self.webhook_prunes.append((delivered_before_ms, failed_before_ms))
        return (5, 2)


async def test_each_round_prunes_webhook_events_with_their_own_retention(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = RecordingStore()
    now = 100 * DAY_MS
    keeper = Housekeeper(
        store=store, now_ms=lambda: now, interval=3600, webhook_retention_ms=3 * DAY_MS
    )
    with trio.move_on_after(3600 * 2 + 1):
        await keeper.run()
    assert store.prunes == [now - 7 * DAY_MS] * 2
    assert store.webhook_prunes == [(now - 3 * DAY_MS, now - 7 * DAY_MS)] * 2
    assert keeper.pruned_webhooks == (5, 2)
