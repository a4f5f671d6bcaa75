"""Housekeeper: forgets deduplication records once they cannot matter any more.

SNS message ids are kept to drop redeliveries (SNS retries for at most an hour; SQS may hold a
message for days), idempotency keys for 24 hours. Both tables would grow forever otherwise. Once
an hour, records older than ``retention`` (7 days by default: far beyond both windows) are deleted
in one short write.

Webhook events are pruned in the same round: delivered ones once ``webhook_retention_ms`` has
passed since their delivery (the queue table would otherwise hold every event ever sent), failed
ones and the attempt log after ``retention`` (the attempts of the last 7 days can be listed, and a
failed event resent, until then).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from sesender.errors import StoreError
from sesender.store.base import HousekeepingStore

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000


class Housekeeper:
    def __init__(
        self,
        *,
        store: HousekeepingStore,
        now_ms: Callable[[], int],
        interval: float = 3600.0,
        retention_ms: int = 7 * DAY_MS,
        webhook_retention_ms: int = 3 * DAY_MS,
    ) -> None:
        self._store = store
        self._now_ms = now_ms
        self._interval = interval
        self._retention_ms = retention_ms
        self._webhook_retention_ms = webhook_retention_ms
        self.pruned = (0, 0)
        self.pruned_webhooks = (0, 0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._interval)
            now = self._now_ms()
            try:
                self.pruned = await self._store.prune(before_ms=now - self._retention_ms)
                self.pruned_webhooks = await self._store.prune_webhooks(
                    delivered_before_ms=now - self._webhook_retention_ms,
                    failed_before_ms=now - self._retention_ms,
                )
            except StoreError as exc:
                logger.warning("housekeeping skipped: %s", exc)
                continue
            if any(self.pruned):
                logger.info(
                    "forgot %d SNS message ids and %d idempotency keys",
                    *self.pruned,
                    extra={"event": "pruned"},
                )
            if any(self.pruned_webhooks):
                logger.info(
                    "forgot %d finished webhook events and %d webhook attempts",
                    *self.pruned_webhooks,
                    extra={"event": "pruned_webhooks"},
                )
