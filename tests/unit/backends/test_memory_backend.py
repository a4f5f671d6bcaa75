"""MemoryBackend: timing under the autojump clock, scripted and drawn failures, statistics."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Unpack

import pytest
import trio
import trio.testing

from sesender.backends import Backend, MemoryBackend
from sesender.backends.base import OutgoingEmail
from sesender.config import load_config
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from sesender.service import build_backend
from tests.unit.backends.outgoing_changes import OutgoingChanges

BASE = OutgoingEmail(
    request_id=1,
    topic_id="topic",
    sender="news@example.com",
    recipient="user@example.org",
    subject="Hello",
    html="<p>Hello</p>",
)


def email(**changes: Unpack[OutgoingChanges]) -> OutgoingEmail:
    return dataclasses.replace(BASE, **changes)


def test_satisfies_the_backend_protocol() -> None:
    backend: Backend = MemoryBackend()
    assert backend.name == "memory"


async def test_sequential_sends_take_exactly_the_latency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = MemoryBackend(latency=2.5)
    start = trio.current_time()
    for request_id in range(3):
        await backend.send(email(request_id=request_id))
    assert [(r.started_at - start, r.finished_at - start) for r in backend.sent] == [
        (0.0, 2.5),
        (2.5, 5.0),
        (5.0, 7.5),
    ]
    assert trio.current_time() - start == 7.5


async def test_concurrent_sends_overlap_and_peak_in_flight_is_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = MemoryBackend(latency=1.0)
    start = trio.current_time()
    seen_in_flight: list[int] = []

    async with trio.open_nursery() as nursery:
        for request_id in range(5):
            nursery.start_soon(backend.send, email(request_id=request_id))
        await trio.sleep(0.5)
        seen_in_flight.append(backend.statistics().in_flight)

    assert seen_in_flight == [5]
    assert {r.finished_at - start for r in backend.sent} == {1.0}
    stats = backend.statistics()
    assert (stats.attempts, stats.sent, stats.in_flight, stats.peak_in_flight) == (5, 5, 0, 5)


async def test_peak_in_flight_is_bounded_by_the_callers_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = MemoryBackend(latency=1.0)
    limiter = trio.CapacityLimiter(3)
    start = trio.current_time()

    async def send_limited(request_id: int) -> None:
        async with limiter:
            await backend.send(email(request_id=request_id))

    async with trio.open_nursery() as nursery:
        for request_id in range(7):
            nursery.start_soon(send_limited, request_id)

    assert backend.statistics().peak_in_flight == 3
    # 7 sends, 3 at a time, 1 s each: waves finishing at 1, 2 and 3 s.
    assert trio.current_time() - start == 3.0


async def test_jitter_stays_in_range_and_is_reproducible(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def durations(seed: int) -> list[float]:
        backend = MemoryBackend(latency=1.0, latency_jitter=0.5, seed=seed)
        for request_id in range(20):
            await backend.send(email(request_id=request_id))
        return [r.finished_at - r.started_at for r in backend.sent]

    first = await durations(seed=3)
    assert all(1.0 <= duration <= 1.5 for duration in first)
    assert len(set(first)) > 1
    # Durations are differences of growing clock readings: equal up to float rounding.
    assert await durations(seed=3) == pytest.approx(first)
    assert await durations(seed=4) != pytest.approx(first)


async def throttled_request_ids(backend: MemoryBackend, count: int) -> set[int]:
    errors: dict[int, TransientSendError] = {}
    for request_id in range(count):
        try:
            await backend.send(email(request_id=request_id))
        except TransientSendError as exc:
            errors[request_id] = exc
    assert all(exc.throttled for exc in errors.values())
    assert {exc.code for exc in errors.values()} <= {"TooManyRequestsException"}
    assert backend.statistics().throttled == len(errors)
    return set(errors)


async def test_throttle_rate_is_a_fraction_and_deterministic_given_the_seed() -> None:
    first = await throttled_request_ids(MemoryBackend(throttle_rate=0.3, seed=7), 1000)
    assert 250 <= len(first) <= 350
    assert await throttled_request_ids(MemoryBackend(throttle_rate=0.3, seed=7), 1000) == first
    assert await throttled_request_ids(MemoryBackend(throttle_rate=0.3, seed=8), 1000) != first


async def test_throttling_does_not_depend_on_the_order_of_sends() -> None:
    forward = MemoryBackend(throttle_rate=0.5, seed=1)
    backward = MemoryBackend(throttle_rate=0.5, seed=1)
    outcomes: dict[str, set[int]] = {"forward": set(), "backward": set()}
    for name, backend, order in (
        ("forward", forward, range(100)),
        ("backward", backward, reversed(range(100))),
    ):
        for request_id in order:
            try:
                await backend.send(email(request_id=request_id))
            except TransientSendError:
                outcomes[name].add(request_id)
    assert outcomes["forward"] == outcomes["backward"]


async def test_a_retry_draws_again() -> None:
    backend = MemoryBackend(throttle_rate=0.5, seed=11)
    throttled = await throttled_request_ids(backend, 200)
    passed_on_retry = 0
    for request_id in throttled:
        try:
            await backend.send(email(request_id=request_id, attempt=2))
            passed_on_retry += 1
        except TransientSendError:
            pass
    assert 0 < passed_on_retry < len(throttled)


@pytest.mark.parametrize("rate", [0.0, 1.0])
async def test_throttle_rate_extremes(rate: float) -> None:
    throttled = await throttled_request_ids(MemoryBackend(throttle_rate=rate, seed=1), 50)
    assert len(throttled) == (50 if rate else 0)


@pytest.mark.parametrize(
    "recipient",
    ["reject@example.org", "rejected+7@example.org", "REJECT.me@example.org"],
)
async def test_reject_prefix_fails_permanently(recipient: str) -> None:
    backend = MemoryBackend()
    with pytest.raises(PermanentSendError) as caught:
        await backend.send(email(recipient=recipient))
    assert caught.value.code == "MessageRejected"
    assert backend.sent == []
    assert backend.statistics().failed == 1


@pytest.mark.parametrize("recipient", ["noreject@example.org", "user@reject.example.org"])
async def test_reject_prefix_only_applies_to_the_local_part(recipient: str) -> None:
    backend = MemoryBackend()
    await backend.send(email(recipient=recipient))
    assert len(backend.sent) == 1


async def test_pause_and_resume() -> None:
    backend = MemoryBackend(max_send_rate=14.0)
    assert (await backend.account_status()).can_send

    backend.pause("daily quota exceeded")
    with pytest.raises(AccountSendError) as caught:
        await backend.send(email())
    assert caught.value.code == "SendingPausedException"
    status = await backend.account_status()
    assert (status.can_send, status.reason, status.max_send_rate) == (
        False,
        "daily quota exceeded",
        14.0,
    )
    assert backend.statistics().paused

    backend.resume()
    assert (await backend.account_status()).can_send
    await backend.send(email())
    assert len(backend.sent) == 1


async def test_script_raises_chosen_errors_for_chosen_emails() -> None:
    def script(message: OutgoingEmail) -> None:
        if message.recipient == "slow@example.org":
            raise TransientSendError("scripted throttle", throttled=True)
        if message.recipient == "down@example.org":
            raise TransientSendError("scripted 503", code="ServiceUnavailable")
        if message.recipient == "bad@example.org":
            raise PermanentSendError("scripted rejection", code="MessageRejected")

    backend = MemoryBackend(script=script)
    errors: list[type[SendError]] = []
    for recipient in ("slow", "down", "bad", "fine"):
        try:
            await backend.send(email(recipient=f"{recipient}@example.org"))
        except SendError as exc:
            errors.append(type(exc))
    assert errors == [TransientSendError, TransientSendError, PermanentSendError]
    assert [r.email.recipient for r in backend.sent] == ["fine@example.org"]
    stats = backend.statistics()
    assert (stats.attempts, stats.sent, stats.throttled, stats.failed) == (4, 1, 1, 2)


async def test_message_ids_are_unique() -> None:
    backend = MemoryBackend()
    ids = [await backend.send(email()) for _ in range(100)]
    assert len(set(ids)) == 100
    assert all(message_id.startswith("memory-") for message_id in ids)
    assert [r.message_id for r in backend.sent] == ids


async def test_wait_sent_wakes_when_enough_are_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = MemoryBackend(latency=1.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def send_three() -> None:
            for request_id in range(3):
                await backend.send(email(request_id=request_id))

        nursery.start_soon(send_three)
        await backend.wait_sent(2)
        assert trio.current_time() - start == 2.0
    await backend.wait_sent(3)  # already true: returns at once


async def test_a_cancelled_send_is_not_recorded(autojump_clock: trio.testing.MockClock) -> None:
    backend = MemoryBackend(latency=10.0)
    with trio.move_on_after(1.0):
        await backend.send(email())
    stats = backend.statistics()
    assert (stats.attempts, stats.sent, stats.in_flight) == (1, 0, 0)
    assert backend.sent == []


async def test_aclose_marks_closed() -> None:
    backend = MemoryBackend()
    await backend.aclose()
    assert backend.closed


@pytest.mark.parametrize(
    "arguments",
    [{"latency": -1.0}, {"latency_jitter": -0.1}, {"throttle_rate": 1.5}],
)
def test_invalid_arguments_are_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is not the point here
        MemoryBackend(**arguments)


async def test_a_batch_is_one_call_with_one_result_per_email_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(outgoing: OutgoingEmail) -> None:
        if outgoing.request_id == 3:
            raise TransientSendError("slow down", code="Throttling", throttled=True)

    backend = MemoryBackend(latency=2.0, script=script)
    batch = [
        email(request_id=1),
        email(request_id=2, recipient="reject@example.org"),
        email(request_id=3),
        email(request_id=4),
    ]
    results = await backend.send_batch(batch)
    assert isinstance(results[0], str)
    assert results[0].startswith("memory-")
    assert isinstance(results[1], PermanentSendError)
    assert results[1].code == "MessageRejected"
    assert isinstance(results[2], TransientSendError)
    assert results[2].throttled
    assert isinstance(results[3], str)
    assert trio.current_time() == 2.0  # one latency for the whole call
    assert [(r.email.request_id, r.started_at, r.finished_at) for r in backend.sent] == [
        (1, 0.0, 2.0),
        (4, 0.0, 2.0),
    ]
    stats = backend.statistics()
    assert (stats.attempts, stats.sent, stats.throttled, stats.failed) == (4, 2, 1, 1)
    assert stats.peak_in_flight == 4
    assert stats.in_flight == 0


async def test_a_paused_account_is_every_email_s_result_not_an_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = MemoryBackend()
    backend.pause("Sending paused for this account")
    results = await backend.send_batch([email(request_id=1), email(request_id=2)])
    assert all(isinstance(result, AccountSendError) for result in results)
    assert backend.sent == []


async def test_jitter_of_a_batch_is_its_slowest_email_and_draws_stay_per_email(
    autojump_clock: trio.testing.MockClock,
) -> None:
    batch = [email(request_id=n) for n in range(1, 9)]
    singles = MemoryBackend(latency=1.0, latency_jitter=1.0, throttle_rate=0.5, seed=11)
    single_results = [await singles.send_batch([item]) for item in batch]
    together = MemoryBackend(latency=1.0, latency_jitter=1.0, throttle_rate=0.5, seed=11)
    start = trio.current_time()
    results = await together.send_batch(batch)
    # The same emails are throttled whether sent alone or together (draws are per email) ...
    throttled = [isinstance(r, TransientSendError) for r in results]
    assert throttled == [isinstance(r, TransientSendError) for (r,) in single_results]
    assert 0 < sum(throttled) < len(batch)
    # ... and the call lasts as long as the slowest of them would have alone.
    alone = [
        1.0 + random.Random(f"11:{item.request_id}:1:{item.recipient}").uniform(0.0, 1.0)
        for item in batch
    ]
    assert trio.current_time() - start == pytest.approx(max(alone))


async def test_a_plain_batch_fails_only_the_reject_trigger_and_numbers_the_rest_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No knob set: the one-loop path. Only a local part starting with ``reject`` (any case)
    fails; an address that merely starts with the letters of it elsewhere does not."""
    backend = MemoryBackend(latency=1.0)
    recipients = [
        "ada@example.org",
        "Rejected+1@example.org",
        "rej@ect.example.org",
        "noreject@example.org",
        "REJECT@example.org",
        "bea@reject.example.org",
    ]
    results = await backend.send_batch(
        [email(request_id=number, recipient=r) for number, r in enumerate(recipients, 1)]
    )
    failed = [index for index, result in enumerate(results) if not isinstance(result, str)]
    assert failed == [1, 4]
    for index in failed:
        result = results[index]
        assert isinstance(result, PermanentSendError)
        assert result.code == "MessageRejected"
    sent_ids = [result for result in results if isinstance(result, str)]
    assert len(set(sent_ids)) == 4
    assert [int(message_id.rsplit("-", 1)[1]) for message_id in sent_ids] == [1, 2, 3, 4]
    assert [(r.message_id, r.email.request_id, r.finished_at) for r in backend.sent] == [
        (sent_ids[0], 1, 1.0),
        (sent_ids[1], 3, 1.0),
        (sent_ids[2], 4, 1.0),
        (sent_ids[3], 6, 1.0),
    ]
    stats = backend.statistics()
    assert (stats.attempts, stats.sent, stats.failed) == (6, 4, 2)


@pytest.mark.parametrize("script", [None, lambda outgoing: None])  # one loop, and per email
async def test_keep_sent_keeps_the_last_records_and_still_counts_every_email(
    autojump_clock: trio.testing.MockClock, script: Any
) -> None:
    backend = MemoryBackend(keep_sent=3, script=script)
    await backend.send_batch([email(request_id=number) for number in range(1, 6)])
    with pytest.raises(PermanentSendError):
        await backend.send(email(request_id=6, recipient="reject@example.org"))
    assert [record.email.request_id for record in backend.sent] == [3, 4, 5]
    assert backend.statistics().sent == 5
    with trio.fail_after(1):
        await backend.wait_sent(5)


async def test_keep_sent_zero_keeps_no_record_and_waiting_still_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = MemoryBackend(keep_sent=0)
    results = await backend.send_batch([email(request_id=1), email(request_id=2)])
    assert all(isinstance(result, str) for result in results)
    assert backend.sent == []
    assert backend.statistics().sent == 2
    with trio.fail_after(1):
        await backend.wait_sent(2)


def test_keep_sent_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="keep_sent"):
        MemoryBackend(keep_sent=-1)


async def test_the_services_memory_backend_keeps_no_record(tmp_path: Path) -> None:
    """SENDER_BACKEND=memory: a long run must not keep a record per email (nothing outside
    the process could read them); the statistics still count every email."""
    config = load_config(
        {"SENDER_BACKEND": "memory", "API_KEY": "k", "DATABASE_PATH": str(tmp_path / "db")}
    )
    backend = await build_backend(config)
    assert isinstance(backend, MemoryBackend)
    await backend.send_batch([email(request_id=1), email(request_id=2)])
    assert backend.sent == []
    assert backend.statistics().sent == 2
