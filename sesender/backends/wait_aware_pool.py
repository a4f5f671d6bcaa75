"""A thread pool for blocking calls that runs a few of them at a time and starts another only
while one waits on the network.

Why: the SES client process (:mod:`sesender.backends.ses_process`) runs each call in a thread,
and its calls are mostly CPU (botocore builds, signs and parses about 3 ms per bulk call) around a
network wait (the call to SES). A ``ThreadPoolExecutor`` as wide as the SES lane started a thread
for every call the service had in flight, up to 256 at once; when the process was busy on the
CPU that only made 256 calls share one GIL: each took longer, more of them were alive at once, and
the process spent about a quarter more CPU per email than with two threads
(docs/performance.md, "Issue 13, fifth pass"). Two threads, though, cannot hide
SES's latency: at 100 ms a call, a rate of 2,000 single sends per second needs 200 calls waiting
at once.

So this pool keeps at most ``runnable`` of its threads *running* (doing anything but waiting on
the network) and lets a call that waits say so (:meth:`WaitAwarePool.begin_wait`, then
:meth:`WaitAwarePool.end_wait` when the answer is there): while it waits, its place goes to the
next call, on an idle thread or a new one, up to ``limit`` threads. Against a slow SES the pool
grows to what the latency needs, as wide as before; against a fast one (or a busy CPU) calls
queue and a few threads take them in turn. A thread that gets its answer runs on at once, even
if that briefly makes more than ``runnable`` run: finishing a call is never held back.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PoolStatistics", "WaitAwarePool"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """``threads``: started so far (they stay); ``running``: running a job and not waiting;
    ``waiting``: in a job, waiting on the network; ``queued``: jobs no thread has taken yet."""

    threads: int
    running: int
    waiting: int
    queued: int


class _Worker(threading.local):
    in_job = False
    waiting = False


class WaitAwarePool:
    """Runs submitted jobs on at most ``limit`` threads, at most ``runnable`` of them running
    at once unless others wait (see the module docstring). Thread-safe.

    A job is a callable with no arguments; it should not raise (an exception is logged and
    dropped: nobody waits for a job's result here, the job reports it itself).
    """

    def __init__(self, *, runnable: int, limit: int, name: str = "wait-aware pool") -> None:
        if not 1 <= runnable <= limit:
            raise ValueError("need 1 <= runnable <= limit")
        self._runnable = runnable
        self._limit = limit
        self._name = name
        self._jobs: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._threads = 0
        #: threads waiting for a job and not yet woken (a wake-up takes one off at once, so a
        #: second wake-up never counts on a thread already woken)
        self._idle = 0
        #: threads woken or started for a queued job and not yet there: each holds a place, so
        #: jobs submitted in a row do not each start a thread before the first has run
        self._summoned = 0
        self._running = 0
        self._waiting = 0
        self._worker = _Worker()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.append(job)
            self._kick()

    def begin_wait(self) -> None:
        """The calling job waits on the network from now: its place may go to another job.
        A no-op outside this pool's jobs, and when already waiting."""
        worker = self._worker
        if not worker.in_job or worker.waiting:
            return
        with self._lock:
            worker.waiting = True
            self._running -= 1
            self._waiting += 1
            self._kick()

    def end_wait(self) -> None:
        """The calling job's answer is there: it runs on (a no-op unless it was waiting)."""
        worker = self._worker
        if not worker.in_job or not worker.waiting:
            return
        with self._lock:
            worker.waiting = False
            self._waiting -= 1
            self._running += 1

    def busy(self) -> int:
        """Jobs started and not finished: running, or waiting on the network."""
        with self._lock:
            return self._running + self._waiting

    def statistics(self) -> PoolStatistics:
        with self._lock:
            return PoolStatistics(self._threads, self._running, self._waiting, len(self._jobs))

    def _kick(self) -> None:
        """With the lock held: give the next queued job a thread if it may run now."""
        if len(self._jobs) <= self._summoned or self._running + self._summoned >= self._runnable:
            return
        if self._idle:
            self._idle -= 1
            self._summoned += 1
            self._wake.notify()
        elif self._threads < self._limit:
            self._threads += 1
            self._summoned += 1
            thread = threading.Thread(
                target=self._work, name=f"{self._name} {self._threads}", daemon=True
            )
            thread.start()

    def _work(self) -> None:
        worker = self._worker
        with self._lock:
            self._summoned -= 1  # started by _kick
            while True:
                if not self._jobs or self._running >= self._runnable:
                    self._idle += 1
                    self._wake.wait()  # only _kick's notify ends it (no timeout)
                    self._summoned -= 1
                    continue
                job = self._jobs.popleft()
                self._running += 1
                self._kick()  # a place may be left for one more
                worker.in_job, worker.waiting = True, False
                self._lock.release()
                try:
                    job()
                except Exception:
                    logger.exception("a job of the %s raised", self._name)
                finally:
                    self._lock.acquire()
                    if worker.waiting:
                        self._waiting -= 1  # ended while waiting (the call failed)
                    else:
                        self._running -= 1
                    worker.in_job = worker.waiting = False
                    # This thread takes the next job itself if there is one; a place freed by a
                    # job that ended waiting was never counted as running, so nothing to kick.
