"""SesBackend with a client that runs bulk calls elsewhere (``send_bulk_call``, as the SES
client process does): the backend sends it the compact call, maps its answer entry by entry,
and a call lost with its process retries every email it held."""

from __future__ import annotations

import dataclasses
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.exceptions import HTTPClientError

from actors import ThreadLane
from sesender.backends.base import LimitsItsBacklog
from sesender.backends.ses import CALLS_QUEUED_AHEAD, SesBackend
from sesender.backends.ses_bulk_call import BulkAnswer, BulkCall, BulkRecipient, send_bulk_call
from sesender.config import SesSendMode
from sesender.errors import PermanentSendError, TransientSendError
from tests.unit.backends.test_ses_backend import isolate_aws_environment
from tests.unit.backends.test_ses_bulk import RecordingClient, email, recipients_of


@pytest.fixture(autouse=True)
def isolated_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)


class RemoteClient:
    """Runs each bulk call as the SES client process does: the call pickled, run by
    ``send_bulk_call`` next to a recording client, the answer pickled back."""

    def __init__(self, status_of: Any = lambda _: "SUCCESS") -> None:
        self.inner = RecordingClient(status_of)
        self.calls: list[BulkCall] = []
        self.lost = False

    def send_bulk_call(self, call: BulkCall) -> BulkAnswer:
        call = pickle.loads(pickle.dumps(call))
        self.calls.append(call)
        if self.lost:
            raise HTTPClientError(error="the SES client process exited (code -9)")
        answer: BulkAnswer = pickle.loads(pickle.dumps(send_bulk_call(self.inner, call)))
        return answer

    def send_bulk_email(self, **request: Any) -> Any:
        raise AssertionError("bulk calls go through send_bulk_call")

    def send_email(self, **request: Any) -> Any:
        return self.inner.send_email(**request)


def backend_for(client: RemoteClient) -> SesBackend:
    return SesBackend(client=client, lane=ThreadLane("ses", 4))  # type: ignore[arg-type]


async def test_the_compact_call_is_built_next_to_the_client_and_mapped_back() -> None:
    client = RemoteClient(lambda r: "MESSAGE_REJECTED" if r == "user3@example.org" else "SUCCESS")
    emails = [email(1), email(2, recipient="not an address"), email(3), email(4)]
    backend = backend_for(client)
    results = await backend.send_batch(emails)

    (call,) = client.calls
    # Each email's fields, in BulkRecipient's order, as a plain tuple (pickled in C).
    assert [BulkRecipient._make(r) for r in call.recipients] == [
        BulkRecipient(e.sender, e.recipient, e.reply_to, e.subject, e.headers, e.tags)
        for e in emails
    ]
    assert all(type(r) is tuple for r in call.recipients)
    (request,) = client.inner.bulks  # validated against botocore's model by the client
    assert recipients_of(request) == ["user1@example.org", "user3@example.org", "user4@example.org"]
    assert results[0] == "bulk-user1@example.org"
    assert isinstance(results[1], PermanentSendError)  # refused before the call, not carried
    assert isinstance(results[2], PermanentSendError)
    assert results[2].code == "MESSAGE_REJECTED"
    assert results[3] == "bulk-user4@example.org"
    stats = backend.statistics()
    assert (stats.attempts, stats.bulk_calls, stats.bulk_emails) == (1, 1, 3)
    assert (stats.sent, stats.permanent) == (2, 2)


async def test_a_whole_call_error_crosses_in_the_answer_for_the_carried_emails_only() -> None:
    client = RemoteClient()
    client.inner.error = HTTPClientError(error="read timeout")
    emails = [email(1), email(2, recipient="not an address"), email(3)]
    results = await backend_for(client).send_batch(emails)
    assert isinstance(results[0], TransientSendError)
    assert isinstance(results[1], PermanentSendError)
    assert isinstance(results[2], TransientSendError)


async def test_a_call_lost_with_its_process_retries_every_email() -> None:
    client = RemoteClient()
    client.lost = True
    emails = [email(1), email(2, recipient="not an address"), email(3)]
    backend = backend_for(client)
    results = await backend.send_batch(emails)
    # Which emails the process would have refused is unknown: all are retried (the refused
    # one is refused again at its next attempt).
    assert all(isinstance(r, TransientSendError) for r in results)
    assert backend.statistics().bulk_emails == 3


async def test_a_lost_call_gives_each_email_the_calls_own_error() -> None:
    """Not a stand-in "no result for this entry": the error the call ended with, translated."""
    client = RemoteClient()
    client.lost = True
    results = await backend_for(client).send_batch([email(1), email(2)])
    for result in results:
        assert isinstance(result, TransientSendError)
        assert result.code != "MissingEntryResult"
        assert isinstance(result.__cause__, HTTPClientError)


async def test_an_unsendable_reply_to_fails_each_email_before_the_call() -> None:
    """Reply-To is checked per email with the addresses, so an address SES cannot take fails
    those emails, and nothing goes to SES (the call's ReplyToAddresses would hold it)."""
    client = RemoteClient()
    emails = [dataclasses.replace(email(n), reply_to="jöhn@example.org") for n in (1, 2)]
    results = await backend_for(client).send_batch(emails)
    for result in results:
        assert isinstance(result, PermanentSendError)
        assert "reply-to" in str(result)
    assert client.inner.bulks == []


async def test_a_bulk_call_cancelled_in_flight_is_given_up_cleanly() -> None:
    """A shutdown deadline cancels a call in flight: the call is abandoned to its thread and
    the cancellation is all that comes out (nothing is counted for a call that never ended)."""
    entered, release = threading.Event(), threading.Event()

    class Blocking(RemoteClient):
        def send_bulk_call(self, call: BulkCall) -> BulkAnswer:
            entered.set()
            release.wait(10)
            return super().send_bulk_call(call)

    backend = backend_for(Blocking())
    try:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:

                async def cancel_once_in_flight() -> None:
                    await trio.to_thread.run_sync(entered.wait, 10)
                    scope.cancel()

                nursery.start_soon(cancel_once_in_flight)
                await backend.send_batch([email(1), email(2)])
    finally:
        release.set()
    assert entered.is_set()  # the call was in flight when the cancellation came
    assert scope.cancelled_caught
    stats = backend.statistics()
    assert (stats.in_flight, stats.attempts, stats.bulk_calls) == (0, 0, 0)


class BusyRemoteClient(RemoteClient):
    """A remote client whose process says it works on ``busy`` calls."""

    busy = 0

    def busy_calls(self) -> int:
        return self.busy


def test_in_bulk_mode_the_backend_holds_what_its_client_process_can_start_soon() -> None:
    """Room for twice the calls the child works on plus CALLS_QUEUED_AHEAD, of 50 each: the
    room doubles with each round trip against a slow SES, and a busy child does not get the
    pipeline's whole in-flight limit queued in front of it."""
    client = BusyRemoteClient()
    backend = SesBackend(client=client, lane=ThreadLane("ses", 4))  # type: ignore[arg-type]
    assert CALLS_QUEUED_AHEAD == 8
    assert backend.emails_it_can_hold() == 8 * 50
    client.busy = 3
    assert backend.emails_it_can_hold() == (2 * 3 + 8) * 50
    assert isinstance(backend, LimitsItsBacklog)


def test_single_mode_and_a_client_in_this_process_set_no_limit_of_their_own() -> None:
    single = SesBackend(
        client=BusyRemoteClient(),  # type: ignore[arg-type]
        lane=ThreadLane("ses", 4),
        send_mode=SesSendMode.SINGLE,
    )
    assert single.emails_it_can_hold() is None
    in_process = SesBackend(client=RecordingClient(), lane=ThreadLane("ses", 4))  # type: ignore[arg-type]
    assert in_process.emails_it_can_hold() is None
