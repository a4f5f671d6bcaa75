"""The SES client process's thread pool: ``runnable`` jobs at a time, one more for each job that
waits on the network, never more than ``limit`` threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from functools import partial
from operator import contains
from uuid import uuid4

import pytest

from sesender.backends.wait_aware_pool import PoolStatistics, WaitAwarePool
from tests.waiting import wait_for

TIMEOUT = 10.0


class Gate:
    """Jobs that block until released; each records that it started, and may wait on the
    network (``begin_wait``) before blocking."""

    def __init__(self, pool: WaitAwarePool) -> None:
        self.pool = pool
        self.started: list[str] = []
        self.finished: list[str] = []
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def job(self, name: str, *, waits: bool = False, answered: bool = True) -> Callable[[], None]:
        """A job that, with ``waits``, says it waits on the network, blocks until released and,
        with ``answered``, says its answer is there (without it, it ends while waiting, as a
        call whose connection failed)."""
        event = self._events.setdefault(name, threading.Event())

        def run() -> None:
            with self._lock:
                self.started.append(name)
            if waits:
                self.pool.begin_wait()
            assert event.wait(TIMEOUT), f"{name} was never released"
            if waits and answered:
                self.pool.end_wait()
            with self._lock:
                self.finished.append(name)

        return run

    def release(self, name: str) -> None:
        self._events[name].set()

    def release_all(self) -> None:
        for event in self._events.values():
            event.set()


@pytest.fixture
def pools() -> Iterator[list[Gate]]:
    """Every gate made in a test is released at its end, so no pool thread stays blocked."""
    gates: list[Gate] = []
    yield gates
    for gate in gates:
        gate.release_all()


def gate_for(pools: list[Gate], *, runnable: int, limit: int) -> Gate:
    gate = Gate(WaitAwarePool(runnable=runnable, limit=limit, name="test pool"))
    pools.append(gate)
    return gate


def settled(pool: WaitAwarePool, expected: PoolStatistics) -> Callable[[], bool]:
    return lambda: pool.statistics() == expected


def test_no_more_than_runnable_jobs_run_while_none_waits(pools: list[Gate]) -> None:
    gate = gate_for(pools, runnable=2, limit=8)
    for name in "abcde":
        gate.pool.submit(gate.job(name))
    wait_for(settled(gate.pool, PoolStatistics(2, 2, 0, 3)), timeout=TIMEOUT)
    assert gate.started == ["a", "b"]
    gate.release("a")
    wait_for(lambda: gate.started == ["a", "b", "c"], timeout=TIMEOUT)
    wait_for(settled(gate.pool, PoolStatistics(2, 2, 0, 2)), timeout=TIMEOUT)
    gate.release_all()
    wait_for(lambda: sorted(gate.finished) == list("abcde"), timeout=TIMEOUT)
    # Two threads took all five jobs in turn: none was started beyond the two places.
    wait_for(settled(gate.pool, PoolStatistics(2, 0, 0, 0)), timeout=TIMEOUT)


def test_a_job_waiting_on_the_network_gives_its_place_to_the_next(pools: list[Gate]) -> None:
    gate = gate_for(pools, runnable=1, limit=8)
    for name in "abc":
        gate.pool.submit(gate.job(name, waits=True))
    gate.pool.submit(gate.job("d"))
    # a, b and c each wait on the network, so each let the next start; d runs (one place).
    wait_for(lambda: gate.started == list("abcd"), timeout=TIMEOUT)
    wait_for(settled(gate.pool, PoolStatistics(4, 1, 3, 0)), timeout=TIMEOUT)


def test_an_answered_job_runs_on_even_above_runnable(pools: list[Gate]) -> None:
    gate = gate_for(pools, runnable=1, limit=8)
    gate.pool.submit(gate.job("waiting", waits=True))
    gate.pool.submit(gate.job("running"))
    gate.pool.submit(gate.job("queued"))
    wait_for(settled(gate.pool, PoolStatistics(2, 1, 1, 1)), timeout=TIMEOUT)
    gate.release("waiting")  # its answer is there: it finishes, never held back
    wait_for(lambda: gate.finished == ["waiting"], timeout=TIMEOUT)
    # Its end freed no place (two ran for a moment): the queued job still waits for one.
    wait_for(settled(gate.pool, PoolStatistics(2, 1, 0, 1)), timeout=TIMEOUT)
    assert "queued" not in gate.started
    gate.release("running")
    wait_for(lambda: gate.started[-1] == "queued", timeout=TIMEOUT)


def test_busy_counts_jobs_running_or_waiting_not_queued(pools: list[Gate]) -> None:
    """What the SES client process reports with each answer: the calls it works on."""
    gate = gate_for(pools, runnable=1, limit=8)
    assert gate.pool.busy() == 0
    gate.pool.submit(gate.job("waiting", waits=True))
    gate.pool.submit(gate.job("running"))
    gate.pool.submit(gate.job("queued"))
    wait_for(settled(gate.pool, PoolStatistics(2, 1, 1, 1)), timeout=TIMEOUT)
    assert gate.pool.busy() == 2
    gate.release("waiting")
    wait_for(lambda: gate.finished == ["waiting"], timeout=TIMEOUT)
    wait_for(lambda: gate.pool.busy() == 1, timeout=TIMEOUT)
    gate.release_all()
    wait_for(lambda: gate.pool.busy() == 0 and len(gate.finished) == 3, timeout=TIMEOUT)


def test_never_more_threads_than_the_limit(pools: list[Gate]) -> None:
    gate = gate_for(pools, runnable=1, limit=3)
    for name in "abcd":
        gate.pool.submit(gate.job(name, waits=True))
    wait_for(settled(gate.pool, PoolStatistics(3, 0, 3, 1)), timeout=TIMEOUT)
    assert gate.started == list("abc")
    gate.release("b")
    wait_for(lambda: gate.started == list("abcd"), timeout=TIMEOUT)
    wait_for(settled(gate.pool, PoolStatistics(3, 0, 3, 0)), timeout=TIMEOUT)


def test_a_job_that_ends_while_waiting_leaves_the_counts_right(pools: list[Gate]) -> None:
    gate = gate_for(pools, runnable=1, limit=4)
    gate.pool.submit(gate.job("failed", waits=True, answered=False))
    gate.pool.submit(gate.job("next"))
    wait_for(settled(gate.pool, PoolStatistics(2, 1, 1, 0)), timeout=TIMEOUT)
    gate.release("failed")
    wait_for(settled(gate.pool, PoolStatistics(2, 1, 0, 0)), timeout=TIMEOUT)
    gate.release("next")
    wait_for(settled(gate.pool, PoolStatistics(2, 0, 0, 0)), timeout=TIMEOUT)


def test_a_job_that_raises_is_logged_and_the_pool_goes_on(
    pools: list[Gate], caplog: pytest.LogCaptureFixture
) -> None:
    gate = gate_for(pools, runnable=1, limit=1)

    def broken() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="sesender.backends.wait_aware_pool"):
        gate.pool.submit(broken)
        gate.pool.submit(gate.job("after"))
        gate.release("after")
        wait_for(lambda: gate.finished == ["after"], timeout=TIMEOUT)
    (record,) = [r for r in caplog.records if r.exc_info is not None]
    assert record.getMessage() == "a job of the test pool raised"
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "boom"
    wait_for(settled(gate.pool, PoolStatistics(1, 0, 0, 0)), timeout=TIMEOUT)


def test_waits_outside_a_job_change_nothing() -> None:
    pool = WaitAwarePool(runnable=1, limit=1)
    pool.begin_wait()
    pool.end_wait()
    assert pool.statistics() == PoolStatistics(0, 0, 0, 0)


def test_a_pool_without_a_name_names_its_threads_as_such() -> None:
    pool = WaitAwarePool(runnable=1, limit=1)
    names: list[str] = []
    done = threading.Event()

    def job() -> None:
        names.append(threading.current_thread().name)
        done.set()

    pool.submit(job)
    assert done.wait(TIMEOUT)
    assert names == ["wait-aware pool 1"]


def test_a_second_begin_wait_or_an_end_without_a_begin_counts_once(pools: list[Gate]) -> None:
    gate = gate_for(pools, runnable=1, limit=2)
    release = threading.Event()

    def doubled() -> None:
        gate.pool.end_wait()  # not waiting: nothing to end
        gate.pool.begin_wait()
        gate.pool.begin_wait()
        assert release.wait(TIMEOUT)
        gate.pool.end_wait()
        gate.pool.end_wait()

    gate.pool.submit(doubled)
    wait_for(settled(gate.pool, PoolStatistics(1, 0, 1, 0)), timeout=TIMEOUT)
    release.set()
    wait_for(settled(gate.pool, PoolStatistics(1, 0, 0, 0)), timeout=TIMEOUT)


@pytest.mark.parametrize(("runnable", "limit"), [(0, 1), (2, 1), (-1, 4)])
def test_the_sizes_are_checked(runnable: int, limit: int) -> None:
    with pytest.raises(ValueError, match=r"^need 1 <= runnable <= limit$"):
        WaitAwarePool(runnable=runnable, limit=limit)


def test_an_idle_thread_takes_the_next_job_before_a_new_one_is_started(pools: list[Gate]) -> None:
    gate = gate_for(pools, runnable=1, limit=4)
    gate.pool.submit(gate.job("first"))
    gate.release("first")
    wait_for(settled(gate.pool, PoolStatistics(1, 0, 0, 0)), timeout=TIMEOUT)
    # Round after round, the idle thread is woken (no new one), and each wait frees a place
    # that a new thread takes only once no idle one is left.
    for round_ in range(3):
        waiting, after = f"waiting{round_}", f"after{round_}"
        gate.pool.submit(gate.job(waiting, waits=True))
        gate.pool.submit(gate.job(after))
        wait_for(partial(contains, gate.started, after), timeout=TIMEOUT)
        wait_for(settled(gate.pool, PoolStatistics(2, 1, 1, 0)), timeout=TIMEOUT)
        gate.release(waiting)
        gate.release(after)
        wait_for(partial(contains, gate.finished, after), timeout=TIMEOUT)
        wait_for(settled(gate.pool, PoolStatistics(2, 0, 0, 0)), timeout=TIMEOUT)


def test_a_job_counts_as_running_again_once_its_answer_is_there(pools: list[Gate]) -> None:
    gate = gate_for(pools, runnable=1, limit=2)
    answered, finish = threading.Event(), threading.Event()

    def call() -> None:
        gate.pool.begin_wait()
        assert answered.wait(TIMEOUT)
        gate.pool.end_wait()
        assert finish.wait(TIMEOUT)  # parsing the answer: running, not waiting

    gate.pool.submit(call)
    wait_for(settled(gate.pool, PoolStatistics(1, 0, 1, 0)), timeout=TIMEOUT)
    answered.set()
    wait_for(settled(gate.pool, PoolStatistics(1, 1, 0, 0)), timeout=TIMEOUT)
    finish.set()
    wait_for(settled(gate.pool, PoolStatistics(1, 0, 0, 0)), timeout=TIMEOUT)


def test_its_threads_are_named_after_it_and_never_keep_the_process_alive(
    pools: list[Gate],
) -> None:
    name = f"pool {uuid4().hex}"  # its own: pools of earlier runs in this process live on
    gate = Gate(WaitAwarePool(runnable=1, limit=3, name=name))
    pools.append(gate)
    for job in "ab":
        gate.pool.submit(gate.job(job, waits=True))
    wait_for(settled(gate.pool, PoolStatistics(2, 0, 2, 0)), timeout=TIMEOUT)
    threads = [t for t in threading.enumerate() if t.name.startswith(name)]
    assert sorted(t.name for t in threads) == [f"{name} 1", f"{name} 2"]
    assert all(t.daemon for t in threads)  # the child exits at once when its stdin ends


def test_idle_threads_woken_in_a_row_each_hold_a_place(pools: list[Gate]) -> None:
    """Jobs submitted faster than woken threads get to them: each woken thread holds a place
    until it arrives, so no more than ``runnable`` run, however many are idle."""
    gate = gate_for(pools, runnable=2, limit=4)
    pool = gate.pool
    # A reentrant lock in place of the pool's (before any thread starts): the test holds it
    # while it submits, so the threads it wakes cannot take a job before the last submit, as
    # when submits come in a burst. The pool itself never takes its lock twice.
    pool._lock = threading.RLock()  # type: ignore[assignment]
    pool._wake = threading.Condition(pool._lock)
    # Three threads, idle: three jobs that wait on the network (a place each), then end.
    for name in ("w1", "w2", "w3"):
        pool.submit(gate.job(name, waits=True))
    wait_for(settled(pool, PoolStatistics(3, 0, 3, 0)), timeout=TIMEOUT)
    gate.release_all()
    wait_for(settled(pool, PoolStatistics(3, 0, 0, 0)), timeout=TIMEOUT)
    with pool._lock:
        for name in ("a", "b", "c"):
            pool.submit(gate.job(name))
    # Two were woken for a and b; c waits for a place (a third woken thread would run it too).
    wait_for(settled(pool, PoolStatistics(3, 2, 0, 1)), timeout=TIMEOUT)
    assert sorted(gate.started[3:]) == ["a", "b"]
    gate.release("a")
    wait_for(lambda: gate.started[-1] == "c", timeout=TIMEOUT)
    wait_for(settled(pool, PoolStatistics(3, 2, 0, 0)), timeout=TIMEOUT)
