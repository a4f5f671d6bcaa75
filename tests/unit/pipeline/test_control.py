"""CancelledTopics: a cancellation is pending until the store recorded it, then confirmed."""

from __future__ import annotations

from sesender.models import Deferred, Stopped
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
