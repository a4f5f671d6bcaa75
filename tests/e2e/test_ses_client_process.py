"""The boto3 SES client in a child process (``SES_CLIENT_PROCESS``, the default), against
``bench.fake_ses``: same answers and errors as the client in process, a killed child fails its
calls in flight as lost connections and is replaced, and a SIGKILLed service takes its child with
it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError, HTTPClientError

from sesender.backends import ses_process
from sesender.backends.ses import build_ses_client, translate_error
from sesender.backends.ses_bulk import BulkKey, BulkTemplate
from sesender.backends.ses_bulk_call import BulkAnswer, BulkCall, BulkRecipient, send_bulk_call
from sesender.backends.ses_process import ProcessSesClient
from sesender.errors import PermanentSendError, TransientSendError
from tests.e2e.fake_ses_support import SENDER, FakeSes, running_fake_ses
from tests.e2e.harness import ServiceProcess, submit, topic_counts, wait_topic
from tests.e2e.test_observability import scrape
from tests.waiting import wait_for, wait_until

pytestmark = pytest.mark.e2e


def client_arguments(fake: FakeSes) -> dict[str, Any]:
    return {
        "region": "us-east-1",
        "pool_size": 4,
        "connect_timeout": 5.0,
        "read_timeout": 10.0,
        "endpoint_url": fake.url,
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }


def bulk_request(*recipients: str) -> dict[str, Any]:
    return {
        "FromEmailAddress": SENDER,
        "DefaultContent": {
            "Template": {
                "TemplateContent": {"Subject": "Hi", "Html": "<p>{{n}}</p>", "Text": "{{n}}"},
                "TemplateData": "{}",
            }
        },
        "BulkEmailEntries": [
            {
                "Destination": {"ToAddresses": [recipient]},
                "ReplacementEmailContent": {
                    "ReplacementTemplate": {"ReplacementTemplateData": f'{{"n": "{index}"}}'}
                },
            }
            for index, recipient in enumerate(recipients)
        ],
    }


TEMPLATE = BulkTemplate(subject="Hi", html="<p>{{n}}</p>", text="{{n}}")


def bulk_key(*, tag_names: tuple[str, ...]) -> BulkKey:
    """The key of :data:`TEMPLATE`'s calls from ``SENDER``."""
    return BulkKey(
        sender=SENDER,
        configuration_set=None,
        subject="Hi",
        html="<p>{{n}}</p>",
        pixel_url=None,
        header_names=(),
        tag_names=tag_names,
    )


@pytest.fixture(scope="module")
def fake_ses() -> Iterator[FakeSes]:
    """Refuses addresses starting with ``rejected``, throttles every third call."""
    with running_fake_ses("--reject", "rejected", "--throttle-every", "3") as fake:
        yield fake


@pytest.fixture
def remote(fake_ses: FakeSes) -> Iterator[ProcessSesClient]:
    client = ProcessSesClient(client_arguments(fake_ses))
    try:
        yield client
    finally:
        client.close()


def test_calls_answer_as_the_client_in_process_does(
    fake_ses: FakeSes, remote: ProcessSesClient
) -> None:
    local = build_ses_client(**client_arguments(fake_ses))
    try:
        answers: dict[str, list[Any]] = {"remote": [], "local": []}
        for _ in range(12):  # one call in three is throttled: each client meets a throttle
            if all(len({type(r) for r in results}) == 2 for results in answers.values()):
                break
            for name, client in (("remote", remote), ("local", local)):
                try:
                    reply = client.send_bulk_email(
                        **bulk_request("a@example.org", "rejected@example.org")
                    )
                except ClientError as exc:
                    answers[name].append(translate_error(exc))
                else:
                    answers[name].append(
                        [entry["Status"] for entry in reply["BulkEmailEntryResults"]]
                    )
        account = remote.get_account()
        assert account["SendingEnabled"] == local.get_account()["SendingEnabled"]
    finally:
        local.close()

    for name, results in answers.items():
        statuses = [r for r in results if isinstance(r, list)]
        errors = [r for r in results if not isinstance(r, list)]
        assert statuses, name
        assert all(s == ["SUCCESS", "MESSAGE_REJECTED"] for s in statuses), name
        # The botocore error crossed the pipe intact: the same SendError comes of it.
        assert errors, name
        assert all(isinstance(e, TransientSendError) and e.throttled for e in errors), name
    assert remote.pid is not None
    assert remote.pid != os.getpid()


def test_a_compact_bulk_call_is_built_and_answered_in_the_child(
    fake_ses: FakeSes, remote: ProcessSesClient
) -> None:
    local = build_ses_client(**client_arguments(fake_ses))
    key = bulk_key(tag_names=("topic",))
    recipients = ("a@example.org", "not an address", "rejected@example.org")
    call = BulkCall(
        key,
        TEMPLATE,
        tuple(BulkRecipient(SENDER, r, None, "Hi", (), (("topic", "t"),)) for r in recipients),
        tuple({"n": str(index)} for index in range(len(recipients))),
    )
    try:
        answers: dict[str, list[BulkAnswer]] = {"remote": [], "local": []}
        for _ in range(6):  # one call in three is throttled: each side meets a throttle
            answers["remote"].append(remote.send_bulk_call(call))
            answers["local"].append(send_bulk_call(local, call))
    finally:
        local.close()
    for name, results in answers.items():
        for answer in results:
            # The bad address was refused before the call, in the child as in process.
            assert list(answer.refused) == [1], name
            assert isinstance(answer.refused[1], PermanentSendError), name
            assert answer.carried == (0, 2), name
        answered = [a.results for a in results if a.error is None]
        assert answered, name
        for entries in answered:
            assert entries is not None
            assert [e["Status"] for e in entries] == ["SUCCESS", "MESSAGE_REJECTED"], name
        # A throttled call's botocore error comes back in the answer, not raised.
        errors = [a.error for a in results if a.error is not None]
        assert errors, name
        assert all(isinstance(translate_error(e), TransientSendError) for e in errors), name


def one_recipient_call(
    recipient: str, *, template: BulkTemplate = TEMPLATE, data: Mapping[str, str] | None = None
) -> BulkCall:
    recipients = (BulkRecipient(SENDER, recipient, None, "Hi", (), ()),)
    return BulkCall(bulk_key(tag_names=()), template, recipients, (data or {},))


@asynccontextmanager
async def started_from_trio(fake: FakeSes) -> AsyncIterator[ProcessSesClient]:
    """A client whose child is started, and closed after, off the event loop (both block)."""
    remote = ProcessSesClient(client_arguments(fake))
    try:
        await trio.to_thread.run_sync(remote.start)
        yield remote
    finally:
        await trio.to_thread.run_sync(remote.close)


async def test_a_bulk_call_awaited_from_trio_answers_as_the_blocking_one() -> None:
    with running_fake_ses("--reject", "rejected") as fake:
        async with started_from_trio(fake) as remote:
            answers: dict[str, BulkAnswer] = {}

            async def send(recipient: str) -> None:
                answers[recipient] = await remote.send_bulk_call_async(
                    one_recipient_call(recipient)
                )

            async with trio.open_nursery() as nursery:
                for recipient in ("a@example.org", "rejected@example.org", "not an address"):
                    nursery.start_soon(send, recipient)
            blocking = await trio.to_thread.run_sync(
                remote.send_bulk_call, one_recipient_call("b@example.org")
            )
    assert blocking.results is not None
    assert blocking.results[0]["Status"] == "SUCCESS"
    accepted = answers["a@example.org"].results
    assert accepted is not None
    assert accepted[0]["Status"] == "SUCCESS"
    rejected = answers["rejected@example.org"].results
    assert rejected is not None
    assert rejected[0]["Status"] == "MESSAGE_REJECTED"
    refused = answers["not an address"]
    assert refused.carried == ()
    assert isinstance(refused.refused[0], PermanentSendError)


async def test_an_awaited_call_starts_the_child_off_the_event_loop(
    fake_ses: FakeSes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting the child imports boto3 (a second or more): never on the event loop's thread,
    which would stop the whole service meanwhile."""
    started_in: list[threading.Thread] = []

    class RecordedChild(ses_process._Child):
        def __init__(self, *args: Any, **options: Any) -> None:
            started_in.append(threading.current_thread())
            super().__init__(*args, **options)

    monkeypatch.setattr(ses_process, "_Child", RecordedChild)
    remote = ProcessSesClient(client_arguments(fake_ses))
    try:
        answer = await remote.send_bulk_call_async(one_recipient_call("a@example.org"))
    finally:
        await trio.to_thread.run_sync(remote.close)
    assert answer.carried == (0,)
    assert len(started_in) == 1
    assert started_in[0] is not threading.current_thread()


async def test_calls_the_pipe_cannot_take_wait_for_the_writer_thread_in_order() -> None:
    """A call's frame goes into the pipe at once when it has room; a stopped child reads
    nothing, so the pipe fills and later frames (whole or their unwritten ends) queue for the
    writer thread, without blocking the event loop; once the child runs again every call gets
    its own answer (a frame written out of order or cut would break the child's stream)."""
    padding = "x" * 40_000  # each frame about 40 KB: two fill a pipe (64 KB on Linux)
    template = BulkTemplate(subject="Hi", html=f"<p>{padding}{{{{n}}}}</p>", text="{{n}}")
    recipients = [f"{'rejected' if i % 3 == 0 else 'a'}{i}@example.org" for i in range(8)]
    with running_fake_ses("--reject", "rejected") as fake:
        async with started_from_trio(fake) as remote:
            child = remote._child
            assert child is not None
            os.kill(child.process.pid, signal.SIGSTOP)
            answers: dict[str, BulkAnswer] = {}

            async def frames_queued() -> bool:
                return child._queued > 0

            async def send(recipient: str) -> None:
                call = one_recipient_call(recipient, template=template, data={"n": recipient})
                answers[recipient] = await remote.send_bulk_call_async(call)

            try:
                async with trio.open_nursery() as nursery:
                    for recipient in recipients:
                        nursery.start_soon(send, recipient)
                    # The loop runs on (this wait polls from it) while frames queue.
                    await wait_until(frames_queued, timeout=20)
                    assert not answers
                    os.kill(child.process.pid, signal.SIGCONT)
            finally:
                os.kill(child.process.pid, signal.SIGCONT)
            assert child._queued == 0
    for recipient in recipients:
        results = answers[recipient].results
        assert results is not None, recipient
        expected = "MESSAGE_REJECTED" if recipient.startswith("rejected") else "SUCCESS"
        assert [entry["Status"] for entry in results] == [expected], recipient


async def test_an_awaited_bulk_call_fails_as_a_lost_connection_when_the_child_dies() -> None:
    with running_fake_ses("--latency", "30") as slow:
        async with started_from_trio(slow) as remote:
            pid = remote.pid
            assert pid is not None
            outcome: list[HTTPClientError] = []
            cancelled_returned = trio.Event()

            async def waits_for_the_answer() -> None:
                try:
                    await remote.send_bulk_call_async(one_recipient_call("a@example.org"))
                except HTTPClientError as error:
                    outcome.append(error)

            async def is_cancelled() -> None:
                with trio.move_on_after(0) as scope:
                    scope.cancel()
                    await remote.send_bulk_call_async(one_recipient_call("c@example.org"))
                cancelled_returned.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waits_for_the_answer)
                nursery.start_soon(is_cancelled)
                # Cancelled, the waiting task returns at once: its call runs on unheard.
                await cancelled_returned.wait()
                await wait_until(
                    lambda: trio.to_thread.run_sync(
                        lambda: slow.get("/_bench/stats")["send_bulk_email"] >= 2
                    ),
                    timeout=20,
                )
                os.kill(pid, signal.SIGKILL)
            (error,) = outcome
            # Retried by the SES backend as a lost connection: the child may have sent it.
            assert isinstance(translate_error(error), TransientSendError)
            assert "exited" in str(error)
            # The next call gets a new child.
            with trio.fail_after(20):
                while True:
                    try:
                        answer = await remote.send_bulk_call_async(
                            one_recipient_call("b@example.org")
                        )
                    except HTTPClientError:
                        continue  # raced the old child's death
                    break
            assert remote.pid not in (None, pid)
            assert answer.carried == (0,)


def test_a_killed_child_fails_its_calls_in_flight_and_is_replaced() -> None:
    with running_fake_ses("--latency", "30") as slow:
        remote = ProcessSesClient(client_arguments(slow))
        try:
            remote.start()
            first_pid = remote.pid
            assert first_pid is not None
            outcome: list[BaseException | object] = []

            def call() -> None:
                try:
                    outcome.append(remote.send_bulk_email(**bulk_request("a@example.org")))
                except BaseException as exc:
                    outcome.append(exc)

            caller = threading.Thread(target=call)
            caller.start()
            wait_for(lambda: slow.get("/_bench/stats")["send_bulk_email"] >= 1, timeout=20)
            os.kill(first_pid, signal.SIGKILL)
            caller.join(timeout=20)
            assert not caller.is_alive(), "the call kept waiting for a dead child"
            (error,) = outcome
            # Retried by the SES backend as a lost connection: the child may have sent it.
            assert isinstance(error, HTTPClientError)
            assert isinstance(translate_error(error), TransientSendError)
            assert "exited" in str(error)
        finally:
            remote.close()

    with running_fake_ses() as fake:
        remote = ProcessSesClient(client_arguments(fake))
        try:
            remote.start()
            # Never ``os.kill(0, ...)``: pid 0 is the whole process group, pytest included.
            second_pid = remote.pid
            assert second_pid is not None
            os.kill(second_pid, signal.SIGKILL)
            # The next call finds the child gone and starts another.
            reply = wait_for(
                lambda: _send_or_none(remote, "b@example.org"), timeout=20, what="a new child"
            )
            assert reply["BulkEmailEntryResults"][0]["Status"] == "SUCCESS"
            assert remote.pid not in (None, first_pid, second_pid)
        finally:
            remote.close()
    assert remote.pid is None


def test_calls_waiting_on_a_slow_ses_all_wait_at_once() -> None:
    """The child runs two calls at a time on the CPU, but a call waiting for SES's answer gives
    its place to the next: twelve calls against a fake that answers after a second all wait at
    the fake at once (two at a time would put at most two there), on no more threads than the
    lane's."""
    calls = 12
    with running_fake_ses("--latency", "1") as slow:
        remote = ProcessSesClient({**client_arguments(slow), "pool_size": 16})
        try:
            remote.start()
            assert remote.busy_calls() == 0  # no answer yet
            busy_seen: list[int] = []

            def call(index: int) -> Any:
                reply = remote.send_bulk_email(**bulk_request(f"r{index}@example.org"))
                busy_seen.append(remote.busy_calls())
                return reply

            with ThreadPoolExecutor(max_workers=calls) as callers:
                replies = list(callers.map(call, range(calls)))
            assert all(r["BulkEmailEntryResults"][0]["Status"] == "SUCCESS" for r in replies)
            # Each answer says how many other calls the child worked on: the first ones while
            # the others still waited on the fake; never more than the others.
            assert max(busy_seen) > 0, busy_seen
            assert max(busy_seen) < calls
            stats = slow.get("/_bench/stats")
            assert stats["send_bulk_email"] == calls
            assert stats["peak_delayed"] == calls
            remote.send_bulk_email(**bulk_request("alone@example.org"))
            assert remote.busy_calls() == 0  # that call alone
            assert remote.pid is not None
            threads = len(os.listdir(f"/proc/{remote.pid}/task"))
            assert threads <= 16 + 1, threads  # the pool's and the one reading the calls
        finally:
            remote.close()


def test_a_stopped_client_process_holds_back_the_pipeline_not_the_store(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """With its SES client process SIGSTOPped, the service has no more emails with the backend
    than the child's room (CALLS_QUEUED_AHEAD calls of 50, as it answered nothing yet): the
    rest stay queued in the store, not composed in memory up to the in-flight limit (2R,
    10,000 here). After SIGCONT every email is sent once."""
    emails = 3000
    with running_fake_ses() as fake:
        service = start_service(
            **fake.service_env(MAX_SEND_PER_SECOND="5000", SEND_CHANNEL_SIZE="200")
        )
        assert service.process is not None
        (child,) = _children(service.process.pid)
        os.kill(child, signal.SIGSTOP)
        try:
            with service.client() as client:
                recipients = [f"held{n}@example.org" for n in range(emails)]
                submit(client, topic="held", emails=recipients)
                room = 8 * 50  # CALLS_QUEUED_AHEAD calls of 50: the child answered nothing

                def filled_up() -> bool:
                    rate = client.get("/v1/stats/send-rate").json()
                    counts = topic_counts(client, "held")
                    # Checked at every poll: never more with the backend than its room, and the
                    # rest not claimed but for the send pipe's (200) and the rate limiter's
                    # batch (without the room the pool takes all 3,000 within milliseconds).
                    assert rate["in_flight"] <= room, rate
                    assert counts["Created"] >= emails - room - 200 - 50, counts
                    # The least the pipeline holds once it cannot move: the pool stops under
                    # 350 + 50, the scheduler claims again only below 100 in the pipe.
                    return counts["Processed"] >= 351 + 100 + 1

                wait_for(filled_up, timeout=30, what="the pipeline to fill up to the room")
                assert scrape(service)[("sesender_sends_backend_room", ())] == room
                os.kill(child, signal.SIGCONT)
                wait_topic(client, "held", count=emails, timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGCONT)
        assert service.stop() == 0
        assert sorted(fake.count_to().values()) == [1] * emails


def _send_or_none(remote: ProcessSesClient, recipient: str) -> Any:
    try:
        return remote.send_bulk_email(**bulk_request(recipient))
    except HTTPClientError:
        return None  # the call raced the old child's death; the next one gets a new child


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_of_the_service_takes_its_client_process_with_it(
    start_service: Callable[..., ServiceProcess], fake_ses: FakeSes
) -> None:
    service = start_service(**fake_ses.service_env(API_KEY="e2e-ses-process-key"))
    with service.client() as client:
        submit(client, topic="child", emails=["someone@example.org"], subject="s", content="c")
        wait_topic(client, "child", count=1, timeout=60)
    assert service.process is not None
    children = _children(service.process.pid)
    assert len(children) == 1, children
    (child,) = children
    # SES_CLIENT_PROCESS_NICE, 10 by default: the child yields a contended core to the service.
    service_nice = os.getpriority(os.PRIO_PROCESS, service.process.pid)
    assert _nice_of_every_thread(child) == {min(19, service_nice + 10)}
    service.signal(signal.SIGKILL)
    assert service.wait(timeout=10) == -signal.SIGKILL
    # End of file on its stdin: the child exits at once (its parent is gone, so init reaps it).
    wait_for(lambda: not _alive(child), timeout=20, what="the client process to exit")


def _nice_of_every_thread(pid: int) -> set[int]:
    """The nice value of each of ``pid``'s threads (field 19 of ``/proc/<pid>/task/<tid>/stat``,
    counted after the command name, which may hold spaces)."""
    values: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values.add(int(fields[16]))
    return values


def test_every_thread_of_the_child_runs_at_the_lower_priority_asked(fake_ses: FakeSes) -> None:
    remote = ProcessSesClient(client_arguments(fake_ses), nice=7)
    try:

        def send(recipient: str) -> None:
            with contextlib.suppress(ClientError):  # the module's fake throttles some calls
                remote.send_bulk_email(**bulk_request(recipient))

        # Calls at once: the pool has started threads of its own by the time they answer.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, ["a@example.org"] * 8))
        assert remote.pid is not None
        assert len(os.listdir(f"/proc/{remote.pid}/task")) > 1
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert _nice_of_every_thread(remote.pid) == {min(19, ours + 7)}
    finally:
        remote.close()
    for nice in (-1, 20):
        with pytest.raises(ValueError, match="nice"):
            ProcessSesClient(client_arguments(fake_ses), nice=nice)


def test_the_child_ignores_sigterm_and_exits_when_closed(fake_ses: FakeSes) -> None:
    remote = ProcessSesClient(client_arguments(fake_ses))
    remote.start()
    pid = remote.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # a service manager signals the whole group: drain goes on
    assert remote.get_account()["SendingEnabled"] is True
    assert remote.pid == pid
    remote.close()
    assert not _alive(pid)
    with pytest.raises(HTTPClientError, match="closed"):
        remote.get_account()


def test_a_client_that_cannot_be_built_raises_the_builders_error(fake_ses: FakeSes) -> None:
    arguments = {**client_arguments(fake_ses), "secret_access_key": None}
    remote = ProcessSesClient(arguments)
    with pytest.raises(ValueError, match="access_key_id and secret_access_key"):
        remote.start()
    assert remote.pid is None
    remote.close()
