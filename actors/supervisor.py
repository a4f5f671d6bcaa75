"""open_supervisor(): the one nursery that owns every long-lived actor of a service.

Restart policy: NONE. An actor that raises (anything but ``trio.Cancelled``) is logged with its
name, reported to ``on_crash`` (Sentry), and then the whole supervisor is cancelled and
:class:`ActorCrashed` leaves the ``async with``. The process exits and the orchestrator (systemd,
ECS, Kubernetes) restarts it from a clean state. We never restart a single actor in-process: an
actor that crashed may have left its channels closed, its peers blocked or its invariants broken,
and a half-alive service that answers ``/ready`` while one stage is missing is worse than a short
restart.

Exceptions: trio nurseries raise ``ExceptionGroup`` (``strict_exception_groups=True``). The
supervisor unwraps that group for its own crashes, so callers catch exactly one
``ActorCrashed`` (``except ActorCrashed``, not ``except*``), for the *first* actor that crashed in
time; its ``__cause__`` is the actor's original exception. If several actors crash (for example a
second one fails while being cancelled), every crash is logged and reported to ``on_crash`` when it
happens, and the raised ``ActorCrashed`` carries a note per extra crash. Exceptions raised by the
body of the ``async with`` itself (no actor crashed) keep trio's behaviour and arrive wrapped in an
``ExceptionGroup``.

Actor states, as shown by :meth:`Supervisor.statistics`:

* ``starting``: ``start()`` is waiting for the actor's ``task_status.started()``;
* ``running``: it called ``started()``, or it was launched with ``start_soon`` (no readiness
  signal, so it counts as running as soon as it is scheduled);
* ``finished``: it returned normally, which is not a crash (one-shot actors such as migrations);
* ``crashed``: it raised anything but cancellation (``KeyboardInterrupt`` included: the service
  goes down either way and the report names the actor), or returned before ``started()``;
* ``cancelled``: it exited through ``trio.Cancelled`` (also when grouped by an inner nursery).
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

__all__ = [
    "ActorCrashed",
    "ActorState",
    "ActorStatistics",
    "Supervisor",
    "SupervisorStatistics",
    "open_supervisor",
]

logger = logging.getLogger("actors.supervisor")

CrashHook = Callable[[str, BaseException], None]


class ActorCrashed(Exception):
    """An actor raised; the service is going down. ``__cause__`` holds the original exception."""

    def __init__(self, actor: str) -> None:
        super().__init__(f"actor {actor!r} crashed")
        self.actor = actor


class ActorState(enum.Enum):
    """Where one actor is in its life; see the module docstring for the transitions."""

    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    CRASHED = "crashed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    """A snapshot of one actor: its name and state."""

    name: str
    state: ActorState


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot of a supervisor: its actors in start order, and the first crash if any."""

    name: str
    actors: tuple[ActorStatistics, ...]
    first_crash: str | None


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is only cancellation, possibly grouped by an actor's inner nursery."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)


class _ReadinessStatus:
    """Forwards ``started()`` to trio and marks the actor running at that moment."""

    def __init__(self, supervisor: Supervisor, name: str, inner: trio.TaskStatus[Any]) -> None:
        self._supervisor = supervisor
        self._name = name
        self._inner = inner
        self.called = False

    def started(self, value: object = None) -> None:
        self.called = True
        self._supervisor._states[self._name] = ActorState.RUNNING
        self._inner.started(value)


class Supervisor:
    """Starts named actors in one nursery and tracks their state. Build with open_supervisor()."""

    _nursery: trio.Nursery  # attached by open_supervisor() once the nursery is open

    def __init__(self, name: str, *, on_crash: CrashHook | None = None) -> None:
        self.name = name
        self._on_crash = on_crash
        self._states: dict[str, ActorState] = {}
        self._first_crash: ActorCrashed | None = None

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """The scope of every actor; cancelling it stops the service without a crash."""
        return self._nursery.cancel_scope

    def cancel(self) -> None:
        """Cancel every actor; the ``async with`` then exits normally (unless an actor crashes)."""
        self._nursery.cancel_scope.cancel()

    async def start(
        self, name: str, async_fn: Callable[..., Awaitable[object]], *args: object
    ) -> Any:
        """Start ``async_fn(*args, task_status=...)`` as actor ``name``; return its started() value.

        Waits until the actor calls ``task_status.started(value)``. If it crashes first, this
        raises :class:`ActorCrashed` (and the supervisor is cancelled); returning without calling
        ``started()`` counts as a crash too, because a caller waiting for readiness is a bug.
        """
        self._register(name)
        return await self._nursery.start(self._run_started, name, async_fn, args, name=name)

    def start_soon(
        self, name: str, async_fn: Callable[..., Awaitable[object]], *args: object
    ) -> None:
        """Schedule ``async_fn(*args)`` as actor ``name``; it counts as running immediately."""
        self._register(name)
        self._states[name] = ActorState.RUNNING
        self._nursery.start_soon(
            self._supervise, name, functools.partial(async_fn, *args), name=name
        )

    def statistics(self) -> SupervisorStatistics:
        """Return a frozen snapshot of every actor's state, in start order."""
        return SupervisorStatistics(
            name=self.name,
            actors=tuple(ActorStatistics(name, state) for name, state in self._states.items()),
            first_crash=None if self._first_crash is None else self._first_crash.actor,
        )

    def all_running(self, names: Iterable[str] | None = None) -> bool:
        """Whether every named actor (default: every actor) is running; for a /ready endpoint.

        Unknown names count as not running. A supervisor with no actors is not ready: nothing
        running is not the same as everything running.
        """
        wanted = list(self._states if names is None else names)
        return bool(wanted) and all(self._states.get(n) is ActorState.RUNNING for n in wanted)

    def _register(self, name: str) -> None:
        if name in self._states:
            raise ValueError(f"supervisor {self.name!r} already has an actor named {name!r}")
        self._states[name] = ActorState.STARTING

    async def _run_started(
        self,
        name: str,
        async_fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
        *,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        status = _ReadinessStatus(self, name, task_status)
        await self._supervise(name, functools.partial(async_fn, *args, task_status=status))
        if not status.called:
            problem = RuntimeError(f"actor {name!r} returned without calling task_status.started()")
            raise self._crash(name, problem) from problem

    async def _supervise(self, name: str, actor: Callable[[], Awaitable[object]]) -> None:
        try:
            await actor()
        except BaseException as exc:
            if _is_cancellation(exc):
                self._states[name] = ActorState.CANCELLED
                raise
            raise self._crash(name, exc) from exc
        self._states[name] = ActorState.FINISHED

    def _crash(self, name: str, exc: BaseException) -> ActorCrashed:
        """Record, log and report a crash, cancel everything, and return the error to raise."""
        self._states[name] = ActorState.CRASHED
        logger.error(
            "actor %r of supervisor %r crashed",
            name,
            self.name,
            exc_info=exc,
            extra={"actor": name, "supervisor": self.name},
        )
        if self._on_crash is not None:
            try:
                self._on_crash(name, exc)
            except Exception:
                logger.exception("on_crash hook failed for actor %r", name, extra={"actor": name})
        # A crash before started() surfaces in the caller of start(), not in the nursery, so
        # cancel explicitly: the service must go down whoever catches what.
        self._nursery.cancel_scope.cancel()
        crash = ActorCrashed(name)
        if self._first_crash is None:
            self._first_crash = crash
        else:
            self._first_crash.add_note(f"actor {name!r} also crashed: {exc!r}")
        return crash


def _is_ours(exc: BaseException) -> bool:
    return isinstance(exc, ActorCrashed | trio.Cancelled)


@asynccontextmanager
async def open_supervisor(
    name: str = "root", *, on_crash: CrashHook | None = None
) -> AsyncIterator[Supervisor]:
    """Open a supervisor; leaving the block waits for every actor (or cancel() them first).

    ``on_crash(actor_name, exception)`` is called once per crashing actor (use it for Sentry);
    exceptions it raises are logged and never mask the crash.
    """
    supervisor = Supervisor(name, on_crash=on_crash)
    try:
        async with trio.open_nursery() as nursery:
            supervisor._nursery = nursery
            yield supervisor
    except BaseExceptionGroup as group:
        crash = supervisor._first_crash
        if crash is None:
            raise
        body_errors = group.split(_is_ours)[1]
        if body_errors is not None:
            crash.add_note(f"the supervisor's body also raised: {body_errors!r}")
        raise crash from crash.__cause__
    if supervisor._first_crash is not None:
        # The only crash was raised out of start() and swallowed by its caller.
        crash = supervisor._first_crash
        raise crash from crash.__cause__
