"""AccountMonitor: checks the sending account at start and ends pauses by probing.

At start it reads the provider's account status: with SES, ``MaxSendRate`` is compared with
``MAX_SEND_PER_SECOND`` (a warning, or a cap when ``CAP_TO_ACCOUNT_RATE`` is set). When the sender
pool closes the sending gate after an account-level error (sending paused, suspended, daily quota),
the monitor asks the provider again after ``probe_interval`` seconds, doubling up to
``max_probe_interval`` while the account still cannot send, and reopens the gate once it can.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from actors import TokenBucket
from sesender.backends.base import Backend
from sesender.errors import SendError
from sesender.pipeline.control import PipelineControl

logger = logging.getLogger(__name__)

#: First probe after the provider became unreachable, then doubling up to UNREACHABLE_PROBE_CEILING:
#: a refused connection costs nothing to retry, and an endpoint that comes back after a 30-second
#: outage should see sending resume within seconds, not after a doubled wait of half a minute.
QUICK_PROBE = 1.0
UNREACHABLE_PROBE_CEILING = 5.0
#: How long the start-up account check may take before sending starts without it.
STARTUP_CHECK_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class AccountMonitorStatistics:
    probes: int
    account_max_send_rate: float | None


class AccountMonitor:
    def __init__(
        self,
        *,
        backend: Backend,
        control: PipelineControl,
        bucket: TokenBucket,
        probe_interval: float,
        max_probe_interval: float = 600.0,
        cap_to_account_rate: bool = False,
    ) -> None:
        self._backend = backend
        self._control = control
        self._bucket = bucket
        self._probe_interval = probe_interval
        self._max_probe_interval = max(probe_interval, max_probe_interval)
        self._cap = cap_to_account_rate
        self._probes = 0
        self._account_rate: float | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Ready at once: a slow or hanging provider must not delay the service's start.
        task_status.started()
        with trio.move_on_after(STARTUP_CHECK_TIMEOUT) as scope:
            await self._check_rate()
        if scope.cancelled_caught:
            logger.warning(
                "the account status did not answer within %ss; sending starts anyway and the"
                " first errors will tell",
                STARTUP_CHECK_TIMEOUT,
            )
        gate = self._control.gate
        while True:
            await gate.wait_paused()
            if gate.probe_soon:  # unreachable, not refused by the account
                interval = min(self._probe_interval, QUICK_PROBE)
                ceiling = min(self._max_probe_interval, UNREACHABLE_PROBE_CEILING)
            else:
                interval, ceiling = self._probe_interval, self._max_probe_interval
            while gate.is_paused:
                await trio.sleep(interval)
                if await self._probe():
                    gate.resume()
                    logger.warning("sending resumed", extra={"event": "sending_resumed"})
                    self._control.wake_scheduler()
                else:
                    interval = min(interval * 2, ceiling)

    async def _probe(self) -> bool:
        self._probes += 1
        try:
            status = await self._backend.account_status()
        except SendError as exc:
            logger.warning("account probe failed: %s", exc)
            return False
        if not status.can_send:
            logger.warning("account still cannot send: %s", status.reason)
        return status.can_send

    async def _check_rate(self) -> None:
        try:
            status = await self._backend.account_status()
        except SendError as exc:
            logger.warning("could not read the account status at start: %s", exc)
            return
        self._account_rate = status.max_send_rate
        configured = self._bucket.statistics().rate
        if status.max_send_rate is not None and configured > status.max_send_rate:
            if self._cap:
                self._bucket.set_rate(status.max_send_rate)
                logger.warning(
                    "MAX_SEND_PER_SECOND=%g exceeds the account's MaxSendRate=%g; capped",
                    configured,
                    status.max_send_rate,
                )
            else:
                logger.warning(
                    "MAX_SEND_PER_SECOND=%g exceeds the account's MaxSendRate=%g; SES will"
                    " throttle (set CAP_TO_ACCOUNT_RATE=true to cap)",
                    configured,
                    status.max_send_rate,
                )
        if not status.can_send:
            reason = status.reason or "the account cannot send"
            if self._control.gate.pause(reason):
                logger.error(
                    "sending paused at start: %s",
                    reason,
                    extra={"event": "sending_paused", "reason": reason},
                )

    def statistics(self) -> AccountMonitorStatistics:
        return AccountMonitorStatistics(
            probes=self._probes, account_max_send_rate=self._account_rate
        )
