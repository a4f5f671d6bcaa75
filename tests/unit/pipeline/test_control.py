"""CancelledTopics: a cancellation is pending until the store recorded it, then confirmed."""

from __future__ import annotations

import trio

from sesender.models import ClaimedEmail, Content, Deferred, Stopped
from sesender.pipeline.control import PipelineControl


def test_a_pending_cancellation_holds_emails_back_without_stopping_them() -> None:
    control = PipelineControl()
    mark, _ = control.cancel_topic_in_memory("t", up_to_id=5)
    assert control.cancelled.is_cancelled("t", 5)
    assert not control.cancelled.is_confirmed("t", 5)
    assert control.held_back("t", 5, now_ms=7) == Deferred(request_id=5, due_at_ms=7)
    control.cancelled.confirm(mark)
    assert control.held_back("t", 5, now_ms=7) == Stopped(request_id=5)
    assert not control.cancelled.is_cancelled("t", 6)


def test_a_withdrawn_cancellation_leaves_a_confirmed_one_in_place() -> None:
    control = PipelineControl()
    first, _ = control.cancel_topic_in_memory("t", up_to_id=3)
    control.cancelled.confirm(first)
    second, _ = control.cancel_topic_in_memory("t", up_to_id=8)
    assert control.cancelled.is_cancelled("t", 8)
    control.cancelled.withdraw(second)
    assert not control.cancelled.is_cancelled("t", 8)
    assert control.cancelled.is_confirmed("t", 3)


def test_handed_over_emails_of_the_topic_are_kept() -> None:
    control = PipelineControl()
    control.handed_over.update({1: "t", 2: "other", 3: "t"})
    _, keep = control.cancel_topic_in_memory("t", up_to_id=10)
    assert keep == [1, 3]


def test_the_scheduler_is_woken_once_when_the_room_crosses_its_mark() -> None:
    control = PipelineControl()
    control.scheduler_low_water = 10
    control.note_room(9, taken=5)  # 4 -> 9: not there yet
    assert not control.scheduler_wakeup._event.is_set()
    control.note_room(14, taken=5)  # 9 -> 14: crossed
    assert control.scheduler_wakeup._event.is_set()
    control.scheduler_wakeup.clear()
    control.note_room(19, taken=5)  # 14 -> 19: already past it, no second wake-up
    assert not control.scheduler_wakeup._event.is_set()
    control.note_room(10)  # one at a time: exactly at the mark
    assert control.scheduler_wakeup._event.is_set()


async def test_a_waiting_batch_is_interrupted_only_by_a_cancel_of_one_of_its_emails() -> None:
    control = PipelineControl()
    batch = [
        ClaimedEmail(1, "a", "u1@example.com", Content("s", "b"), 0),
        ClaimedEmail(7, "b", "u7@example.com", Content("s", "b"), 0),
    ]
    scope = trio.CancelScope()
    control.token_wait = (batch, scope)
    control.cancel_topic_in_memory("c", up_to_id=10)
    control.cancel_topic_in_memory("b", up_to_id=6)  # accepted after 7: not covered
    assert not scope.cancel_called
    control.cancel_topic_in_memory("b", up_to_id=7)
    assert scope.cancel_called


def test_no_cancellation_at_all_is_known_without_asking_per_email() -> None:
    control = PipelineControl()
    assert control.cancelled.none
    mark, _ = control.cancel_topic_in_memory("t", up_to_id=1)
    assert not control.cancelled.none
    control.cancelled.withdraw(mark)
    assert control.cancelled.none
