"""SenderPool: in-flight bound, outcome per error class, pause, cancellation at hand-over."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pytest
import trio
import trio.testing

from actors import open_pipe
from sesender.backends.base import OutgoingEmail
from sesender.backends.memory import MemoryBackend
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SenderSendError,
    TransientSendError,
)
from sesender.models import (
    ClaimedEmail,
    Content,
    Deferred,
    Failed,
    FailureKind,
    Outcome,
    Retry,
    Sent,
    Stopped,
)
from sesender.pipeline.compose import MessageComposer
from sesender.pipeline.control import PipelineControl
from sesender.pipeline.retry import RetryPolicy
from sesender.pipeline.sender_pool import SenderPool
from sesender.tracking import TokenSigner
from tests.unit.pipeline.fakes import trio_ms


def email(request_id: int, attempts: int = 0, topic: str = "t") -> ClaimedEmail:
    return ClaimedEmail(
        request_id, topic, f"u{request_id}@example.com", Content("s", "<body>b</body>"), attempts
    )


COMPOSER = MessageComposer(
    sender="from@example.com",
    public_url="http://localhost:3000",
    signer=TokenSigner(b"k" * 32),
    configuration_set=None,
    unsubscribe_enabled=False,
)


async def run_pool(
    backend: MemoryBackend,
    emails: list[ClaimedEmail],
    *,
    max_in_flight: int = 4,
    control: PipelineControl | None = None,
    composer: MessageComposer = COMPOSER,
    batches: list[list[ClaimedEmail]] | None = None,
    backend_room: Callable[[], int | None] | None = None,
    read_outcomes_after: float | None = None,
) -> list[Outcome]:
    """Run a pool over ``emails`` (each its own batch) or over ``batches``; return every
    outcome, in the order they reached the outcome pipe. By default the outcome pipe holds
    them all and is read at the end; with ``read_outcomes_after`` it is a rendezvous that
    nobody reads for that many seconds."""
    control = control or PipelineControl()
    batches = batches if batches is not None else [[item] for item in emails]
    dispatch_tx, dispatch_rx = open_pipe[Sequence[ClaimedEmail]]("dispatch", 0)
    outcome_tx, outcome_rx = open_pipe[Sequence[Outcome]](
        "outcome", 1000 if read_outcomes_after is None else 0
    )
    outcomes: list[Outcome] = []

    async def read_outcomes(delay: float) -> None:
        await trio.sleep(delay)
        async for group in outcome_rx:
            outcomes.extend(group)

    pool = SenderPool(
        backend=backend,
        composer=composer,
        dispatch_rx=dispatch_rx,
        outcome_tx=outcome_tx,
        control=control,
        retry=RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=10.0),
        max_in_flight=max_in_flight,
        now_ms=trio_ms,
        max_batch=max((len(batch) for batch in batches), default=1),
        rng=random.Random(1),
        backend_room=backend_room,
    )
    async with trio.open_nursery() as nursery:
        if read_outcomes_after is not None:
            nursery.start_soon(read_outcomes, read_outcomes_after)
        await nursery.start(pool.run)
        async with dispatch_tx:
            for batch in batches:
                await dispatch_tx.send(batch)
    if read_outcomes_after is None:
        await read_outcomes(0)
    return outcomes


async def test_in_flight_never_exceeds_the_limit(autojump_clock: trio.testing.MockClock) -> None:
    backend = MemoryBackend(latency=1.0)
    outcomes = await run_pool(backend, [email(i) for i in range(1, 21)], max_in_flight=4)
    assert len(outcomes) == 20
    assert all(isinstance(o, Sent) for o in outcomes)
    assert backend.statistics().peak_in_flight == 4
    assert trio.current_time() == 5.0  # 20 sends of 1 s, 4 at a time


async def test_each_error_class_becomes_its_outcome(autojump_clock: trio.testing.MockClock) -> None:
    def script(outgoing: OutgoingEmail) -> None:
        match outgoing.request_id:
            case 2:
                raise TransientSendError(
                    "slow down", code="TooManyRequestsException", throttled=True
                )
            case 3:
                raise TransientSendError("timeout", code="RequestTimeout")
            case 4:
                raise PermanentSendError("Email address is not verified", code="MessageRejected")

    backend = MemoryBackend(script=script)
    outcomes = {
        o.request_id: o
        for o in await run_pool(backend, [email(1), email(2), email(3, attempts=2), email(4)])
    }
    assert isinstance(outcomes[1], Sent)
    assert outcomes[1].attempts == 1
    retry = outcomes[2]
    assert isinstance(retry, Retry)
    assert retry.attempts == 1
    assert 500 <= retry.due_at_ms <= 1000  # first backoff: 0.5..1 s of equal jitter
    exhausted = outcomes[3]
    assert isinstance(exhausted, Failed)
    assert exhausted.kind is FailureKind.EXHAUSTED
    assert exhausted.attempts == 3
    assert "RequestTimeout" in exhausted.error
    permanent = outcomes[4]
    assert isinstance(permanent, Failed)
    assert permanent.kind is FailureKind.PERMANENT
    assert permanent.error == "MessageRejected: Email address is not verified"


async def test_a_refused_sender_fails_its_own_emails_as_config_and_pauses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """SES refusing one sender's identity fails that sender's emails (retryable once verified);
    the default sender's emails are sent and the gate stays open."""
    refused = "billing@example.org"

    def script(outgoing: OutgoingEmail) -> None:
        if outgoing.sender == refused:
            raise SenderSendError(f"Email address not verified {refused}", code="MessageRejected")

    refused_content = Content("s", "<body>b</body>", sender=refused)
    news = Content(
        "s", "<body>b</body>", sender="News <news@example.org>", reply_to="r@example.org"
    )
    emails = [
        email(1),
        ClaimedEmail(2, "t", "u2@example.com", refused_content, 0),
        ClaimedEmail(3, "t", "u3@example.com", news, 0),
    ]
    control = PipelineControl()
    backend = MemoryBackend(script=script)
    outcomes = {o.request_id: o for o in await run_pool(backend, emails, control=control)}
    assert isinstance(outcomes[1], Sent)
    assert isinstance(outcomes[3], Sent)
    failed = outcomes[2]
    assert isinstance(failed, Failed)
    assert failed.kind is FailureKind.CONFIG
    assert refused in failed.error
    assert not control.gate.is_paused
    assert {(r.email.request_id, r.email.sender, r.email.reply_to) for r in backend.sent} == {
        (1, "from@example.com", None),
        (3, "News <news@example.org>", "r@example.org"),
    }


async def test_account_error_pauses_and_defers(autojump_clock: trio.testing.MockClock) -> None:
    def script(outgoing: OutgoingEmail) -> None:
        if outgoing.request_id == 1:
            raise AccountSendError("Sending paused for this account", code="SendingPausedException")

    control = PipelineControl()
    outcomes = await run_pool(
        MemoryBackend(script=script), [email(1), email(2)], max_in_flight=1, control=control
    )
    assert [type(o) for o in outcomes] == [Deferred, Deferred]
    assert control.gate.is_paused
    assert "SendingPausedException" in control.gate.reason


async def test_cancelled_before_hand_over_is_stopped_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    control = PipelineControl()
    mark, _ = control.cancel_topic_in_memory("t", up_to_id=1)
    control.cancelled.confirm(mark)  # the store recorded it
    backend = MemoryBackend()
    outcomes = await run_pool(backend, [email(1), email(2)], control=control)
    assert outcomes[0] == Stopped(1)
    assert isinstance(outcomes[1], Sent)
    assert [r.email.request_id for r in backend.sent] == [2]


async def test_pixel_and_tags_reach_the_backend(autojump_clock: trio.testing.MockClock) -> None:
    backend = MemoryBackend()
    await run_pool(backend, [email(7)])
    (record,) = backend.sent
    token = TokenSigner(b"k" * 32).sign("open", 7)
    assert record.email.html == (
        '<body>b<img src="http://localhost:3000/v1/events/open?request_id='
        + token
        + '" width="1" height="1" alt="" style="display:none;border:0" /></body>'
    )
    assert dict(record.email.tags) == {"sesender_request_id": "7", "sesender_topic": "t"}


class UnbuildableComposer(MessageComposer):
    """A composer that cannot build request 2's message (as a bad configuration would)."""

    def compose(self, email: ClaimedEmail) -> OutgoingEmail:
        if email.request_id == 2:
            raise ValueError("no usable sender address")
        return super().compose(email)


async def test_a_message_that_cannot_be_composed_fails_as_config_without_an_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    composer = UnbuildableComposer(
        sender=COMPOSER.sender,
        public_url=COMPOSER.public_url,
        signer=COMPOSER.signer,
        configuration_set=None,
        unsubscribe_enabled=False,
    )
    backend = MemoryBackend()
    outcomes = {
        o.request_id: o
        for o in await run_pool(backend, [email(1), email(2, attempts=1)], composer=composer)
    }
    assert isinstance(outcomes[1], Sent)
    failed = outcomes[2]
    assert failed == Failed(
        request_id=2,
        error="could not compose message: no usable sender address",
        kind=FailureKind.CONFIG,  # POST /v1/topics/{id}/retry requeues it after a fix
        attempts=1,  # no attempt counted: nothing reached the provider
    )
    assert [r.email.request_id for r in backend.sent] == [1]
    assert backend.statistics().attempts == 1


async def test_in_flight_counts_recipients_not_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = MemoryBackend(latency=1.0)
    batches = [[email(2 * k + 1), email(2 * k + 2)] for k in range(10)]
    outcomes = await run_pool(backend, [], batches=batches, max_in_flight=4)
    assert sorted(o.request_id for o in outcomes) == list(range(1, 21))
    assert all(isinstance(o, Sent) for o in outcomes)
    assert backend.statistics().peak_in_flight == 4  # two calls of two at once
    assert trio.current_time() == 5.0  # 10 calls of 1 s, 2 at a time


async def test_one_call_per_batch_and_each_email_gets_its_own_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(outgoing: OutgoingEmail) -> None:
        if outgoing.request_id == 2:
            raise TransientSendError("slow down", code="TooManyRequestsException", throttled=True)
        if outgoing.request_id == 3:
            raise PermanentSendError("Email address is not verified", code="MessageRejected")

    backend = MemoryBackend(latency=0.5, script=script)
    control = PipelineControl()
    pool_outcomes = await run_pool(
        backend, [], batches=[[email(1), email(2), email(3), email(4)]], control=control
    )
    outcomes = {o.request_id: o for o in pool_outcomes}
    assert isinstance(outcomes[1], Sent)
    assert isinstance(outcomes[4], Sent)
    assert isinstance(outcomes[2], Retry)
    failed = outcomes[3]
    assert isinstance(failed, Failed)
    assert failed.kind is FailureKind.PERMANENT
    assert {r.started_at for r in backend.sent} == {0.0}  # one call carried them all
    assert backend.statistics().attempts == 4
    assert control.handed_over == {1: "t", 2: "t", 3: "t", 4: "t"}  # until persisted


async def test_a_whole_call_failure_is_each_email_s_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(outgoing: OutgoingEmail) -> None:
        raise AccountSendError("Sending paused for this account", code="SendingPausedException")

    control = PipelineControl()
    outcomes = await run_pool(
        MemoryBackend(script=script), [], batches=[[email(1), email(2), email(3)]], control=control
    )
    assert sorted((type(o), o.request_id) for o in outcomes) == [(Deferred, i) for i in (1, 2, 3)]
    assert control.gate.statistics().pauses_total == 1


async def test_an_unreachable_provider_pauses_soon_and_defers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(outgoing: OutgoingEmail) -> None:
        raise TransientSendError("connection refused", code="Connect", unreachable=True)

    control = PipelineControl()
    outcomes = await run_pool(MemoryBackend(script=script), [email(1)], control=control)
    assert [type(o) for o in outcomes] == [Deferred]
    assert control.gate.is_paused
    assert control.gate.probe_soon


async def test_emails_cancelled_while_their_batch_waited_are_not_handed_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    control = PipelineControl()
    mark, _ = control.cancel_topic_in_memory("drop", up_to_id=10)  # still pending
    backend = MemoryBackend()
    batch = [email(1, topic="drop"), email(2), email(3, topic="drop"), email(4)]
    outcomes = {
        o.request_id: o for o in await run_pool(backend, [], batches=[batch], control=control)
    }
    # Pending: held back to the queue, where the store's record decides.
    assert outcomes[1] == Deferred(1, 0)
    assert outcomes[3] == Deferred(3, 0)
    assert isinstance(outcomes[2], Sent)
    assert isinstance(outcomes[4], Sent)
    assert [r.email.request_id for r in backend.sent] == [2, 4]
    assert set(control.handed_over) == {2, 4}
    assert backend.statistics().attempts == 2
    control.cancelled.confirm(mark)


async def test_a_batch_over_the_announced_size_is_a_defect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dispatch_tx, dispatch_rx = open_pipe[Sequence[ClaimedEmail]]("dispatch", 0)
    outcome_tx, _outcome_rx = open_pipe[Sequence[Outcome]]("outcome", 10)
    pool = SenderPool(
        backend=MemoryBackend(),
        composer=COMPOSER,
        dispatch_rx=dispatch_rx,
        outcome_tx=outcome_tx,
        control=PipelineControl(),
        retry=RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=10.0),
        max_in_flight=4,
        now_ms=trio_ms,
        max_batch=2,
    )
    with pytest.RaisesGroup(
        pytest.RaisesExc(ValueError, match="over max_batch"), flatten_subgroups=True
    ):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            await dispatch_tx.send([email(1), email(2), email(3)])


def test_max_batch_must_fit_in_flight() -> None:
    with pytest.raises(ValueError, match="max_batch must be between 1 and max_in_flight"):
        SenderPool(
            backend=MemoryBackend(),
            composer=COMPOSER,
            dispatch_rx=open_pipe[Sequence[ClaimedEmail]]("dispatch", 0)[1],
            outcome_tx=open_pipe[Sequence[Outcome]]("outcome", 1)[0],
            control=PipelineControl(),
            retry=RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=10.0),
            max_in_flight=4,
            now_ms=trio_ms,
            max_batch=5,
        )


async def test_a_message_that_cannot_be_composed_fails_alone_and_its_batch_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    composer = UnbuildableComposer(
        sender=COMPOSER.sender,
        public_url=COMPOSER.public_url,
        signer=COMPOSER.signer,
        configuration_set=None,
        unsubscribe_enabled=False,
    )
    backend = MemoryBackend()
    control = PipelineControl()
    outcomes = {
        o.request_id: o
        for o in await run_pool(
            backend,
            [],
            batches=[[email(1), email(2, attempts=1), email(3)]],
            composer=composer,
            control=control,
        )
    }
    assert outcomes[2] == Failed(
        request_id=2,
        error="could not compose message: no usable sender address",
        kind=FailureKind.CONFIG,
        attempts=1,
    )
    assert isinstance(outcomes[1], Sent)
    assert isinstance(outcomes[3], Sent)
    assert [r.email.request_id for r in backend.sent] == [1, 3]
    assert set(control.handed_over) == {1, 3}  # never handed over, never registered
    assert backend.statistics().attempts == 2


async def test_a_held_topic_is_deferred_at_hand_over_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The last check before the backend: an email of a topic the reputation guard held after
    its batch got its tokens goes back to the queue; the others of the batch are sent."""
    control = PipelineControl()
    control.hold_topic_in_memory("bad", "bounce rate")
    backend = MemoryBackend()
    outcomes = await run_pool(
        backend, [email(1, topic="bad"), email(2, topic="good")], control=control
    )
    assert isinstance(outcomes[0], Deferred)
    assert outcomes[0].request_id == 1
    assert isinstance(outcomes[1], Sent)
    assert [r.email.request_id for r in backend.sent] == [2]


async def test_a_batch_smaller_than_announced_holds_only_its_own_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Room for the largest batch is taken before receiving; what a smaller batch does not use
    is given back at once. With room for 4 and batches of up to 2, three single emails are in
    flight together (the fourth place is the room kept for receiving the next batch); if each
    single kept the room of two, only two would be."""
    backend = MemoryBackend(latency=1.0)
    batches = [[email(1), email(2)]] + [[email(n)] for n in range(3, 12)]
    with trio.fail_after(60):  # trio time: room that is never given back stalls the pool
        outcomes = await run_pool(backend, [], batches=batches, max_in_flight=4)
    assert sorted(o.request_id for o in outcomes) == list(range(1, 12))
    assert backend.statistics().peak_in_flight == 3


class RoomRun(NamedTuple):
    """What a pool run against a backend with a room did: the emails answered (their ids, in
    order), the most the backend had at once, and when (trio time) the last outcome was in."""

    answered: tuple[int, ...]
    peak_in_flight: int
    finished_at: float


async def run_with_room(
    backend_room: Callable[[MemoryBackend], int | None],
    emails: list[ClaimedEmail],
    **options: Any,
) -> RoomRun:
    """:func:`run_pool` of one-second sends, with ``backend_room(backend)`` as the room."""
    backend = MemoryBackend(latency=1.0)
    with trio.fail_after(60):  # trio time: a pool that stalls fails here
        outcomes = await run_pool(
            backend, emails, backend_room=lambda: backend_room(backend), **options
        )
    answered = tuple(sorted(outcome.request_id for outcome in outcomes))
    return RoomRun(answered, backend.statistics().peak_in_flight, trio.current_time())


async def test_a_backend_that_says_how_many_emails_it_can_hold_gets_no_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The backend's room (the SES backend's ``emails_it_can_hold``) lowers the in-flight
    limit: with room for 2 of the 10 allowed, 20 one-second sends take 10 s, two at a time."""
    emails = [email(i) for i in range(1, 21)]
    run = await run_with_room(lambda _: 2, emails, max_in_flight=10)
    assert run == RoomRun(answered=tuple(range(1, 21)), peak_in_flight=2, finished_at=10.0)


async def test_the_backend_s_room_is_asked_again_as_its_calls_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Room for one email until the first call is answered, then for four: one send alone,
    then the other eight four at a time (1 s + 2 s)."""

    def room(backend: MemoryBackend) -> int:
        return 1 if backend.statistics().sent == 0 else 4

    run = await run_with_room(room, [email(i) for i in range(1, 10)], max_in_flight=10)
    assert run == RoomRun(answered=tuple(range(1, 10)), peak_in_flight=4, finished_at=3.0)


async def test_a_backend_with_no_room_still_gets_one_batch_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Room below one batch (0 here) never stalls the pool: with nothing in flight, a batch
    is always taken."""
    batches = [[email(2 * k + 1), email(2 * k + 2)] for k in range(3)]
    run = await run_with_room(lambda _: 0, [], batches=batches)
    assert run == RoomRun(answered=tuple(range(1, 7)), peak_in_flight=2, finished_at=3.0)


async def test_a_backend_with_no_limit_of_its_own_gets_the_pool_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = await run_with_room(lambda _: None, [email(i) for i in range(1, 9)], max_in_flight=4)
    assert run == RoomRun(answered=tuple(range(1, 9)), peak_in_flight=4, finished_at=2.0)


async def test_outcomes_waiting_to_be_handed_over_hold_the_pool_s_limit_not_the_backend_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nobody reads the outcome pipe (a rendezvous) for the first 10 s. Answered batches keep
    their place in flight (up to 6), but not in the backend's room (2): the backend goes on
    sending two at a time until 6 are in flight, instead of stopping after its first two."""
    backend = MemoryBackend(latency=1.0)
    outcomes = await run_pool(
        backend,
        [email(n) for n in range(1, 11)],
        max_in_flight=6,
        backend_room=lambda: 2,
        read_outcomes_after=10,
    )
    assert sorted(o.request_id for o in outcomes) == list(range(1, 11))
    sent_at = sorted(o.sent_at_ms for o in outcomes if isinstance(o, Sent))
    # Three rounds of two before anyone read (then the pool's own limit), the rest after.
    assert sum(at <= 10_000 for at in sent_at) == 6
    assert sent_at == [1000, 1000, 2000, 2000, 3000, 3000, 11_000, 11_000, 12_000, 12_000]
    assert backend.statistics().peak_in_flight == 2


async def test_room_a_smaller_batch_does_not_use_is_given_back_to_the_backend_s_room_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Room for the largest batch (2) is taken before receiving, then what a single does not
    use is given back: to the in-flight limit and to the backend's room (2) alike. Counted as
    answered instead, it would grow the backend's share with every single until the pool
    stalls; here the singles go one at a time (the second place is the one kept for receiving
    the next batch), nine in 9 s after the pair's 1 s."""
    backend = MemoryBackend(latency=1.0)
    batches = [[email(1), email(2)]] + [[email(n)] for n in range(3, 12)]
    with trio.fail_after(60):  # trio time: a miscounted room stalls the pool
        outcomes = await run_pool(
            backend, [], batches=batches, max_in_flight=10, backend_room=lambda: 2
        )
    assert sorted(o.request_id for o in outcomes) == list(range(1, 12))
    assert backend.statistics().peak_in_flight == 2
    assert trio.current_time() == 10.0
