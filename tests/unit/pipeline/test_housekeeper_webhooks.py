"""The housekeeper prunes deduplication records and webhook events on its interval, each with
its own retention, under the autojump clock."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from sesender.models import PruneBatch, PruneScan
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

    # Retention is off in these tests (RETENTION_DAYS=0): the email pruning steps never run.

    async def lowest_request_id(self) -> int:
        raise AssertionError("retention is off")

    async def find_prunable(self, *, before_ms: int, after_id: int, scan_limit: int) -> PruneScan:
        raise AssertionError("retention is off")

    async def delete_emails(
        self,
        *,
        request_ids: Sequence[int],
        before_ms: int,
        range_first_id: int | None,
        now_ms: int,
    ) -> PruneBatch:
        raise AssertionError("retention is off")

    async def finish_prune(self, *, now_ms: int) -> None:
        raise AssertionError("retention is off")

    async def reclaim_space(self, *, pages: int) -> tuple[int, int]:
        raise AssertionError("retention is off")


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
