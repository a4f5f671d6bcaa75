"""The housekeeper's retention run against a fake store whose steps take (mock) time: batches,
order, and the rest it takes after each step so pruning keeps to its share of the writer."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from sesender.models import PruneBatch, PruneScan
from sesender.pipeline.housekeeper import DAY_MS, Housekeeper

NOW = 1_700_000_000_000


class SlowStore:
    """Emails 1..total, all prunable; every step takes one second of the trio clock."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.calls: list[tuple[str, float]] = []
        self.deleted: list[int] = []
        self.free_pages = 3
        self.finished_at: int | None = None

    async def _work(self, name: str) -> None:
        self.calls.append((name, trio.current_time()))
        await trio.sleep(1)

    async def prune(self, *, before_ms: int) -> tuple[int, int]:
        return (0, 0)

    async def prune_webhooks(
        self, *, delivered_before_ms: int, failed_before_ms: int
    ) -> tuple[int, int]:
        return (0, 0)

    async def lowest_request_id(self) -> int:
        return 1

    async def find_prunable(self, *, before_ms: int, after_id: int, scan_limit: int) -> PruneScan:
        await self._work("scan")
        upper = min(self.total, after_id + scan_limit)
        return PruneScan(tuple(range(after_id + 1, upper + 1)), upper, upper == self.total)

    async def delete_emails(
        self,
        *,
        request_ids: Sequence[int],
        before_ms: int,
        range_first_id: int | None,
        now_ms: int,
    ) -> PruneBatch:
        await self._work("delete")
        assert before_ms == NOW - DAY_MS
        self.deleted.extend(request_ids)
        return PruneBatch(len(request_ids), 0, 0, range_first_id or request_ids[0])

    async def finish_prune(self, *, now_ms: int) -> None:
        self.finished_at = now_ms

    async def reclaim_space(self, *, pages: int) -> tuple[int, int]:
        await self._work("vacuum")
        freed = min(pages, self.free_pages)
        self.free_pages -= freed
        return freed, self.free_pages


async def test_a_run_deletes_in_batches_and_rests_as_long_as_it_works(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = SlowStore(total=25)
    keeper = Housekeeper(
        store=store,
        now_ms=lambda: NOW,
        email_retention_ms=DAY_MS,
        batch_size=10,
        scan_limit=12,
        vacuum_pages=2,
    )
    started = trio.current_time()
    await keeper.run_once()
    assert store.deleted == list(range(1, 26))
    names = [name for name, _ in store.calls]
    # scan 12 -> delete 10 | scan 12 -> delete 10 | scan 1 (done) -> delete the last 5 | vacuum
    assert names == ["scan", "delete", "scan", "delete", "scan", "delete", "vacuum", "vacuum"]
    report = keeper.last_report
    assert (report.emails, report.batches, report.pages_freed) == (25, 3, 3)
    assert store.finished_at == NOW
    # Each one-second step is followed by a one-second rest: steps start two seconds apart.
    starts = [at - started for _, at in store.calls]
    assert starts == [2.0 * n for n in range(len(starts))]


async def test_retention_zero_prunes_nothing(autojump_clock: trio.abc.Clock) -> None:
    store = SlowStore(total=5)
    await Housekeeper(store=store, now_ms=lambda: NOW, email_retention_ms=0).run_once()
    assert store.calls == []
    assert store.finished_at is None
