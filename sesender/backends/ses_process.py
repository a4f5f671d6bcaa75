"""The boto3 SES client in a child process: botocore's CPU off the service's GIL.

Why: with ``SendBulkEmail`` boto3 costs about 0.03 ms of CPU per recipient (serialising, signing,
urllib3, parsing), as much as all the rest of the pipeline per email, and in one process all of it
runs under the one GIL the event loop and the SQLite writer also need, so the SES path could not
pass about 0.6 of the memory backend's rate however lean sesender's own code became
(docs/performance.md, "SES calls in a child process"). A second process runs on the machine's
other core.

:class:`ProcessSesClient` stands in for the ``sesv2`` client inside
:class:`~sesender.backends.ses.SesBackend`: the same blocking methods (``send_email``,
``send_bulk_email``, ``get_account``, ``close``), called from the SES thread lane exactly as
before; each call is pickled to the child (``python -m sesender.backends.ses_process``) and
written to its stdin at once when the pipe has room, else queued for a writer thread, which
writes every frame waiting in one write once there is;
the child runs it with the real client from :func:`~sesender.backends.ses.build_ses_client`, and
its answer (the response, or the botocore exception, which botocore makes picklable) comes back
through the child's stdout to a reader thread, which answers the waiting caller. Errors are still
translated in the service. ``SendEmail`` requests are built in the service too; a bulk call
crosses as a compact :class:`~sesender.backends.ses_bulk_call.BulkCall` and is checked and built
here, in the child, by the same code (:func:`~sesender.backends.ses_bulk_call.send_bulk_call`):
that work, about 12 us per recipient, is then off the service's GIL too. The backend awaits a
bulk call from the event loop itself (:meth:`ProcessSesClient.send_bulk_call_async`), with no
lane thread between: queueing a frame never blocks, and the reader wakes the waiting task.

In the child, calls run on a :class:`~sesender.backends.wait_aware_pool.WaitAwarePool` as wide
as the lane: one call at a time on the CPU (the child has one GIL), and one more for each call
waiting on SES's answer, which botocore announces (``before-send`` and ``before-parse``). The
child's garbage collector is set as the service's (:mod:`sesender.gc_tuning`).

Failure semantics, the same as a lost connection:

- The child exits or is killed with calls in flight: each of them raises botocore's
  ``HTTPClientError`` ("SES may have sent it"): the SES backend retries those emails
  (at-least-once, as after a read timeout), all of a bulk call's emails (which of them the child
  would have refused before the call is not known). The next call starts a new child.
- The service is killed (SIGKILL included): the child reads end-of-file on its stdin and exits at
  once; the emails of its calls in flight stay ``Processed`` and are requeued at the next start,
  exactly as the lane's threads' calls are after a crash.
- The child ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a service manager signals the
  whole process group): the service drains through it and closes it when it stops.

The credentials go to the child through its stdin with the other client settings, never in its
command line or environment.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import IO, Any

import trio
from botocore.exceptions import HTTPClientError

from sesender.backends.ses_bulk_call import BulkAnswer, BulkCall, send_bulk_call
from sesender.backends.wait_aware_pool import WaitAwarePool
from sesender.gc_tuning import tune_for_service

__all__ = ["ProcessSesClient", "worker_main"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
#: How long ``close`` waits for the child to exit after closing its stdin, then kills it.
CLOSE_TIMEOUT = 5.0
#: The client methods the child runs; nothing else is callable through the pipe.
METHODS = frozenset({"send_email", "send_bulk_email", "get_account"})
#: The one call that is not a client method: a compact bulk call, checked and built in the
#: child (:func:`~sesender.backends.ses_bulk_call.send_bulk_call`).
BULK_CALL = "send_bulk_call"
#: The child's command-line option: how much to add to its nice value before it starts any
#: thread (all its threads then have it). Why: the service's event loop is the one thread
#: every email waits on; on a machine whose cores are all busy, the child (whose calls have
#: time to spare) taking a core from it while it holds the GIL stalls the whole pipeline
#: (docs/performance.md, "Issue 13, sixth pass").
NICE_OPTION = "--nice"
MAX_NICE = 19


def _frame(payload: object) -> bytes:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the non-blocking ``fd``, waiting for room when it is full."""
    view = memoryview(data)
    room = select.poll()
    room.register(fd, select.POLLOUT)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            room.poll()  # until there is room, or the child is gone (the write then raises)
            continue
        view = view[written:]


def _write_frame(stream: IO[bytes], payload: object) -> None:
    stream.write(_frame(payload))
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: IO[bytes]) -> Any:
    """The next pickled frame, or ``EOFError`` at end of stream."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        raise EOFError
    data = _read_exactly(stream, _HEADER.unpack(header)[0])
    if data is None:
        raise EOFError
    return pickle.loads(data)


class _Child:
    """One running child process, the calls waiting for it, and the thread reading its
    answers."""

    def __init__(
        self, arguments: dict[str, Any], on_exit: Callable[[_Child], None], *, nice: int = 0
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sesender.backends.ses_process", NICE_OPTION, str(nice)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Buffered: the first frame (the client's settings) goes through the buffered writer,
            # which writes it whole; later frames are written to the descriptor by ``send`` and
            # the writer thread, which finish partial writes themselves.
            bufsize=-1,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout
        self.pending: dict[int, Future[Any]] = {}
        #: calls the child was working on (running, or waiting on SES) when it last answered,
        #: besides the one it answered
        self.busy = 0
        self.exited = False
        self._on_exit = on_exit
        try:
            _write_frame(self.stdin, arguments)
            # The child answers once its client is built and its signals are set.
            _, ok, payload, _ = _read_frame(self.stdout)
        except (EOFError, OSError) as exc:
            self._discard()
            raise HTTPClientError(error=f"the SES client process did not start: {exc}") from exc
        if not ok:
            self._discard()
            raise payload
        # From here on, frames are written to the pipe without waiting: by the caller when
        # nothing is queued before them and the pipe has room, else by the writer thread.
        self._stdin_fd = self.stdin.fileno()
        os.set_blocking(self._stdin_fd, False)
        #: frames (or their unwritten ends) for the writer thread, in order; None closes stdin
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        #: frames given to the writer thread and not yet written (under ``_send_lock``): while
        #: any is, a new frame must queue behind it
        self._queued = 0
        #: the writer thread closed stdin (under ``_send_lock``): nothing may write to its
        #: descriptor number again, which the process may reuse for another file
        self._input_closed = False
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(
            target=self._read_answers, name="ses client process reader", daemon=True
        )
        self._reader.start()
        self._writer = threading.Thread(
            target=self._write_calls, name="ses client process writer", daemon=True
        )
        self._writer.start()

    def send(self, frame: bytes) -> None:
        """Send ``frame`` to the child without ever blocking (the caller may be the event loop):
        written at once when no frame waits before it and the pipe takes it whole; otherwise
        what is left is queued for the writer thread, which waits for room.

        Why not always the writer thread: waking it for every call cost the event loop about a
        microsecond per email (docs/performance.md, "Issue 13, sixth pass"); with the child
        keeping up, the pipe nearly always has room.
        """
        with self._send_lock:
            if self._input_closed:
                return  # the child is gone or going: the reader thread fails the call
            if not self._queued:
                try:
                    written = os.write(self._stdin_fd, frame)
                except BlockingIOError:
                    written = 0
                except OSError:
                    # The child is gone: the reader thread sees its end and fails the call.
                    return
                if written == len(frame):
                    return
                frame = frame[written:]
            self._queued += 1
            self._outbox.put(frame)

    def close_input(self) -> None:
        """The child's stdin is closed once the frames sent before are written: it finishes
        nothing more and exits."""
        with self._send_lock:
            self._outbox.put(None)

    def _write_calls(self) -> None:
        """Write queued frames, all those waiting in one go, waiting for room in the pipe as
        long as it takes (the child reads its calls as they come)."""
        outbox = self._outbox
        try:
            while True:
                frame = outbox.get()
                frames: list[bytes] = []
                while frame is not None:
                    frames.append(frame)
                    try:
                        frame = outbox.get_nowait()
                    except queue.Empty:
                        break
                if frames:
                    _write_all(self._stdin_fd, b"".join(frames))
                    with self._send_lock:
                        self._queued -= len(frames)
                if frame is None:
                    return
        except OSError:
            # The child is gone: the reader thread sees its end and fails every call still
            # waiting, those queued here included.
            return
        finally:
            with self._send_lock:
                self._input_closed = True
                with contextlib.suppress(OSError):
                    self.stdin.close()

    def _read_answers(self) -> None:
        try:
            while True:
                call_id, ok, payload, self.busy = _read_frame(self.stdout)
                future = self.pending.pop(call_id, None)
                if future is None:
                    continue
                if ok:
                    future.set_result(payload)
                else:
                    future.set_exception(payload)
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        self._on_exit(self)

    def _discard(self) -> None:
        """A child that did not start: make sure it is gone and its pipes closed."""
        self.exited = True
        with contextlib.suppress(OSError):
            self.stdin.close()
        self.process.kill()
        self.process.wait()
        self.stdout.close()

    def fail_pending(self) -> None:
        """The child is gone: every call still waiting raises as a lost connection."""
        code = self.process.poll()
        while self.pending:
            _, future = self.pending.popitem()
            future.set_exception(
                HTTPClientError(error=f"the SES client process exited (code {code})")
            )


class ProcessSesClient:
    """A ``sesv2`` client whose calls run in a child process (see the module docstring).

    ``arguments``: the keyword arguments of :func:`~sesender.backends.ses.build_ses_client`
    (picklable: strings, numbers, booleans); ``nice``: added to the child's nice value (0 to
    19; see :data:`NICE_OPTION`). Thread-safe, like the client it stands in for; the child is
    started by the first call (or :meth:`start`) and again after it died.
    """

    def __init__(self, arguments: dict[str, Any], *, nice: int = 0) -> None:
        if not 0 <= nice <= MAX_NICE:
            raise ValueError(f"nice must be between 0 and {MAX_NICE}")
        self._arguments = dict(arguments)
        self._nice = nice
        self._lock = threading.Lock()  # the child's start and exit, and the calls it is sent
        self._child: _Child | None = None
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running child's process id (benchmarks read its CPU time), or None."""
        child = self._child
        return child.process.pid if child is not None and not child.exited else None

    def busy_calls(self) -> int:
        """How many calls the child was working on (running, or waiting on SES's answer) when
        it last answered, besides the one it answered; 0 with no child. The SES backend sizes
        the backlog it accepts by it
        (:meth:`~sesender.backends.ses.SesBackend.emails_it_can_hold`)."""
        child = self._child
        return child.busy if child is not None and not child.exited else 0

    def start(self) -> None:
        """Start the child now rather than at the first call (blocking: it imports boto3)."""
        with self._lock:
            self._running_child()

    def send_email(self, **request: Any) -> Any:
        return self._call("send_email", request)

    def send_bulk_email(self, **request: Any) -> Any:
        return self._call("send_bulk_email", request)

    def get_account(self) -> Any:
        return self._call("get_account", {})

    def send_bulk_call(self, call: BulkCall) -> BulkAnswer:
        """Run :func:`~sesender.backends.ses_bulk_call.send_bulk_call` in the child: the
        request is checked and built there, from the compact ``call``."""
        answer: BulkAnswer = self._call(BULK_CALL, call)
        return answer

    async def send_bulk_call_async(self, call: BulkCall) -> BulkAnswer:
        """:meth:`send_bulk_call` awaited in trio, with no thread of the caller's: the call is
        queued for the child from the event loop and its answer wakes the waiting task.

        Why: a blocking call from the event loop went through a thread of the SES lane, which
        woke that thread, then the reader woke it again and it woke the event loop; each wake-up
        on two busy cores let the woken thread take the CPU from the one holding the GIL
        (docs/performance.md, "Issue 13, fifth pass"). Cancelled, the task stops
        waiting at once; the call runs on in the child and its answer is dropped, as the lane's
        abandoned thread's was. Never blocks the event loop: when no child runs, the call is
        queued from a thread, which starts one.
        """
        token = trio.lowlevel.current_trio_token()
        answered = trio.Event()

        def wake(_: Future[Any]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(answered.set)

        call_id, frame = self._framed(BULK_CALL, call)
        future = self._queue_nowait(call_id, frame)
        if future is None:
            # No child runs (or one is being started): starting one imports boto3, which
            # must not hold up the event loop.
            future = await trio.to_thread.run_sync(self._queue, call_id, frame)
        future.add_done_callback(wake)
        await answered.wait()
        answer: BulkAnswer = future.result()
        return answer

    def close(self) -> None:
        """Close the child's stdin (it finishes nothing more and exits), wait for it, and kill
        it if it does not exit in time. Calls still waiting raise as lost connections."""
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        if child is None:
            return
        child.close_input()
        try:
            child.process.wait(timeout=CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        with self._lock:
            child.exited = True
            child.fail_pending()

    def _running_child(self) -> _Child:
        if self._closed:
            raise HTTPClientError(error="the SES client is closed")
        if self._child is None or self._child.exited:
            self._child = _Child(self._arguments, self._child_exited, nice=self._nice)
        return self._child

    def _child_exited(self, child: _Child) -> None:
        """Called by the child's reader thread at the end of its answers."""
        with self._lock:
            child.exited = True
            child.fail_pending()
            if self._child is child:
                self._child = None
        child.close_input()
        child.stdout.close()
        code = child.process.wait()
        if not self._closed:
            logger.warning(
                "the SES client process exited (code %s); calls in flight will be retried",
                code,
                extra={"event": "ses_client_process_exited"},
            )

    def _call(self, method: str, request: object) -> Any:
        return self._submit(method, request).result()

    def _submit(self, method: str, request: object) -> Future[Any]:
        """Queue one call for the child, starting one if none runs (blocking); its future is
        answered by the reader thread (or failed as a lost connection if the child exits
        first)."""
        call_id, frame = self._framed(method, request)
        return self._queue(call_id, frame)

    def _framed(self, method: str, request: object) -> tuple[int, bytes]:
        call_id = next(self._ids)
        return call_id, _frame((call_id, method, request))

    def _queue(self, call_id: int, frame: bytes) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            child = self._running_child()
            child.pending[call_id] = future
            child.send(frame)
        return future

    def _queue_nowait(self, call_id: int, frame: bytes) -> Future[Any] | None:
        """:meth:`_queue` if that cannot block: None when no child runs, or when another
        thread holds the lock (it may be starting one, which takes a second or more)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            child = self._child
            if self._closed or child is None or child.exited:
                return None
            future: Future[Any] = Future()
            child.pending[call_id] = future
            child.send(frame)
            return future
        finally:
            self._lock.release()


# --- the child ------------------------------------------------------------------------------

#: Calls the child runs at once on the CPU; more run while calls wait on SES
#: (:class:`~sesender.backends.wait_aware_pool.WaitAwarePool`).
RUNNING_CALLS = 1


def _begin_wait(pool: WaitAwarePool) -> Callable[..., None]:
    def handler(**_: Any) -> None:  # returns None: botocore reads a value as the HTTP answer
        pool.begin_wait()

    return handler


def _end_wait(pool: WaitAwarePool) -> Callable[..., None]:
    def handler(**_: Any) -> None:
        pool.end_wait()

    return handler


def _answer(
    client: Any,
    call_id: int,
    method: str,
    request: Any,
    write: Callable[[tuple[int, bool, object]], None],
) -> None:
    try:
        if method == BULK_CALL:
            result: object = send_bulk_call(client, request)
        elif method in METHODS:
            result = getattr(client, method)(**request)
        else:
            raise ValueError(f"not a client method of the SES client process: {method!r}")
        answer: tuple[int, bool, object] = (call_id, True, result)
    except Exception as exc:
        answer = (call_id, False, exc)
    try:
        write(answer)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        # An exception botocore did not make picklable: its text still reaches the service.
        write((call_id, False, HTTPClientError(error=f"{type(exc).__name__}: {exc}")))


def worker_main() -> None:
    """The child: lower its priority by ``--nice`` (before any thread starts), build the client
    from the first frame, then run every call in a thread pool and write its answer back; exit
    as soon as stdin ends (the service stopped or died)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if NICE_OPTION in sys.argv:
        os.nice(int(sys.argv[sys.argv.index(NICE_OPTION) + 1]))
    from sesender.backends.ses import build_ses_client

    stdin = sys.stdin.buffer
    # The answers get a descriptor of their own; whatever a library prints goes to stderr and
    # cannot corrupt the stream of frames.
    stdout = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    arguments = _read_frame(stdin)
    try:
        client = build_ses_client(**arguments)
    except Exception as exc:
        _write_frame(stdout, (0, False, exc, 0))
        raise
    pool = WaitAwarePool(
        runnable=RUNNING_CALLS,
        limit=max(1, int(arguments.get("pool_size", 1))),
        name="SES client process pool",
    )
    write_lock = threading.Lock()

    def write(answer: tuple[int, bool, object]) -> None:
        # Every answer (written by its call's job) says how many other calls the child is
        # working on: the service sends it no more than it can start soon
        # (``ProcessSesClient.busy_calls``).
        with write_lock:
            _write_frame(stdout, (*answer, pool.busy() - 1))

    # The network wait of every call, as botocore announces it: sent, then answered.
    client.meta.events.register("before-send.sesv2", _begin_wait(pool))
    client.meta.events.register("before-parse.sesv2", _end_wait(pool))
    # As the service's: botocore's objects frozen, the young generation collected less often
    # (about a tenth of the child's CPU per email at full speed).
    tune_for_service()
    _write_frame(stdout, (0, True, None, 0))  # ready: the first call may come
    while True:
        try:
            call_id, method, request = _read_frame(stdin)
        except EOFError:
            # Nobody is left to read the answers of calls in flight: stop now, not after them.
            os._exit(0)
        pool.submit(partial(_answer, client, call_id, method, request, write))


if __name__ == "__main__":
    worker_main()
