"""AccountMonitor: reads the sending account's state, pauses when it cannot send, ends pauses by
probing.

At start, and then every ``poll_interval`` seconds (``ACCOUNT_POLL_SECONDS``, a few minutes), it
reads the provider's account status (SES ``GetAccount``: ``SendingEnabled``,
``EnforcementStatus``, ``SendQuota``). When the account cannot send, the sending gate is paused
(before a send is refused). ``MaxSendRate`` is compared with ``MAX_SEND_PER_SECOND``: a warning,
or, with ``CAP_TO_ACCOUNT_RATE``, the token bucket follows it: capped at a lowered account rate,
raised again (never above the setting) when SES raises it. When the sending gate is paused for an
account-level reason (by a poll, or by the sender pool after an account-level error), the monitor
asks the provider again after ``probe_interval`` seconds, doubling up to ``max_probe_interval``
while the account still cannot send, and ends the pause once it can. A hold by the reputation
guard is not the monitor's to lift: only an operator resumes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from actors import TokenBucket
from sesender.backends.base import AccountStatus, Backend
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
    #: GetAccount reads (at start and every ``poll_interval``).
    polls: int = 0
    #: SES's ``EnforcementStatus`` at the last read (HEALTHY, PROBATION, SHUTDOWN), if known.
    enforcement_status: str | None = None


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
        poll_interval: float = 300.0,
    ) -> None:
        self._backend = backend
        self._control = control
        self._bucket = bucket
        self._probe_interval = probe_interval
        self._max_probe_interval = max(probe_interval, max_probe_interval)
        self._cap = cap_to_account_rate
        self._probes = 0
        self._polls = 0
        self._account_rate: float | None = None
        self._enforcement: str | None = None
        self._poll_interval = poll_interval
        #: MAX_SEND_PER_SECOND: the ceiling the cap follows the account's rate under.
        self._configured_rate = bucket.statistics().rate
        self._warned_rate: float | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Ready at once: a slow or hanging provider must not delay the service's start.
        task_status.started()
        with trio.move_on_after(STARTUP_CHECK_TIMEOUT) as scope:
            await self._read_account(at_start=True)
        if scope.cancelled_caught:
            logger.warning(
                "the account status did not answer within %ss; sending starts anyway and the"
                " first errors will tell",
                STARTUP_CHECK_TIMEOUT,
            )
        gate = self._control.gate
        while True:
            if not gate.account_paused:
                with trio.move_on_after(self._poll_interval) as poll:
                    await gate.wait_paused()
                if poll.cancelled_caught:
                    with trio.move_on_after(STARTUP_CHECK_TIMEOUT):
                        await self._read_account(at_start=False)
                    continue
            if gate.probe_soon:  # unreachable, not refused by the account
                interval = min(self._probe_interval, QUICK_PROBE)
                ceiling = min(self._max_probe_interval, UNREACHABLE_PROBE_CEILING)
            else:
                interval, ceiling = self._probe_interval, self._max_probe_interval
            while gate.account_paused:
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
        self._note(status)
        if status.can_send:
            self._follow_rate(status.max_send_rate)
        else:
            logger.warning("account still cannot send: %s", status.reason)
        return status.can_send

    def _note(self, status: AccountStatus) -> None:
        self._account_rate = status.max_send_rate
        self._enforcement = status.details.get("enforcement_status", self._enforcement)

    async def _read_account(self, *, at_start: bool) -> None:
        """One read of the account: follow its rate, pause when it cannot send."""
        self._polls += 1
        try:
            status = await self._backend.account_status()
        except SendError as exc:
            logger.warning("could not read the account status: %s", exc)
            return
        self._note(status)
        self._follow_rate(status.max_send_rate)
        if not status.can_send and status.details.get("error_code") is None:
            # The account itself says no (a failed read is not a reason to stop sending: the
            # sends will tell).
            reason = status.reason or "the account cannot send"
            if self._control.gate.pause(reason):
                logger.error(
                    "sending paused%s: %s",
                    " at start" if at_start else " (GetAccount)",
                    reason,
                    extra={"event": "sending_paused", "reason": reason},
                )
        elif not status.can_send and at_start:
            reason = status.reason or "the account cannot send"
            if self._control.gate.pause(reason):
                logger.error(
                    "sending paused at start: %s",
                    reason,
                    extra={"event": "sending_paused", "reason": reason},
                )

    def _follow_rate(self, account_rate: float | None) -> None:
        """Compare the account's ``MaxSendRate`` with the setting; with the cap on, make the
        bucket's rate ``min(setting, account rate)``, following raises as well as cuts."""
        if account_rate is None or account_rate <= 0:
            return
        configured = self._configured_rate
        if self._cap:
            wanted = min(configured, account_rate)
            current = self._bucket.statistics().rate
            if wanted != current:
                self._bucket.set_rate(wanted)
                logger.warning(
                    "send rate set to %g per second (MAX_SEND_PER_SECOND=%g, the account's"
                    " MaxSendRate=%g)",
                    wanted,
                    configured,
                    account_rate,
                    extra={"event": "send_rate_changed", "rate": wanted},
                )
        elif configured > account_rate and account_rate != self._warned_rate:
            self._warned_rate = account_rate
            logger.warning(
                "MAX_SEND_PER_SECOND=%g exceeds the account's MaxSendRate=%g; SES will"
                " throttle (set CAP_TO_ACCOUNT_RATE=true to cap)",
                configured,
                account_rate,
            )

    def statistics(self) -> AccountMonitorStatistics:
        return AccountMonitorStatistics(
            probes=self._probes,
            account_max_send_rate=self._account_rate,
            polls=self._polls,
            enforcement_status=self._enforcement,
        )
