"""One ``SendBulkEmail`` call described compactly, checked and built where the client runs.

Why: checking each email (addresses, subject, headers) and building each entry's botocore dicts
(destination, replacement data, headers, tags) cost about 12 us of CPU per recipient, and
pickling that request to the SES client process another 1.5, all in the service's process, whose
one GIL the event loop and the SQLite writer share (docs/performance.md, "SES bulk path: the
request built in the client process"). What differs per email is a few strings, so the service
sends a :class:`BulkCall` (the call's key and template, and per email a :class:`BulkRecipient`
and its replacement data) and :func:`send_bulk_call` checks and builds the request next to the
client: in the SES client process when there is one
(:meth:`~sesender.backends.ses_process.ProcessSesClient.send_bulk_call`), otherwise in the SES
lane's thread. Either way the same code does it as before, :func:`check_sendable` and
:func:`~sesender.backends.ses_bulk.build_bulk_request`, so the request and the refusals are
those of before to the byte.

:func:`send_bulk_call` never raises for SES's answer: a whole-call botocore error travels back in
the :class:`BulkAnswer` with the emails it refused before the call and those the call carried, so
the backend still knows which emails the error is the result of.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from sesender.backends.sendable import check_sendable
from sesender.backends.ses_bulk import BulkKey, BulkTemplate, build_bulk_request
from sesender.errors import PermanentSendError

if TYPE_CHECKING:
    from mypy_boto3_sesv2.type_defs import BulkEmailEntryResultTypeDef

__all__ = ["BulkAnswer", "BulkCall", "BulkRecipient", "RecipientFields", "send_bulk_call"]


class BulkRecipient(NamedTuple):
    """What :func:`check_sendable` and ``build_bulk_request`` read of one email of a bulk call
    (a tuple: it pickles as one, cheaply; the sender and Reply-To are the call's, shared)."""

    sender: str
    recipient: str
    reply_to: str | None
    subject: str
    headers: tuple[tuple[str, str], ...]
    tags: tuple[tuple[str, str], ...]


#: A :class:`BulkRecipient`'s fields, in its order, as a plain tuple: what a call carries. The
#: backend takes them from each email with one ``attrgetter`` (in C) and pickle writes plain
#: tuples in C, where a named tuple costs a Python call each way (about 1.2 us a recipient on
#: the event loop); :func:`send_bulk_call` names them, next to the client.
RecipientFields = tuple[
    str, str, str | None, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]
]


class BulkCall(NamedTuple):
    """One bulk call: ``recipients[i]`` gets ``data[i]`` as its replacement data."""

    key: BulkKey
    template: BulkTemplate
    recipients: tuple[RecipientFields, ...]
    data: tuple[Mapping[str, str], ...]


class BulkAnswer(NamedTuple):
    """How a bulk call ended, by position in its :class:`BulkCall`.

    ``refused``: emails SES would refuse, failed before the call (not carried); ``carried``: the
    positions of the call's entries, in order; ``results``: SES's ``BulkEmailEntryResults``
    (None when no call was made or it failed); ``error``: the call's botocore error, if any.
    """

    refused: dict[int, PermanentSendError]
    carried: tuple[int, ...]
    results: list[BulkEmailEntryResultTypeDef] | None
    error: BotoCoreError | ClientError | None = None


def send_bulk_call(client: Any, call: BulkCall) -> BulkAnswer:
    """Check ``call``'s emails, build the request of those SES would take and send it with
    ``client.send_bulk_email`` (blocking: in the lane's thread or the SES client process)."""
    recipients = list(map(BulkRecipient._make, call.recipients))
    refused: dict[int, PermanentSendError] = {}
    kept: list[int] = []
    addresses: list[tuple[str, str]] = []
    for position, recipient in enumerate(recipients):
        try:
            addresses.append(check_sendable(recipient))
        except PermanentSendError as error:
            refused[position] = error
        else:
            kept.append(position)
    if not kept:
        return BulkAnswer(refused, (), None)
    request = build_bulk_request(
        call.key,
        call.template,
        [recipients[i] for i in kept],
        [call.data[i] for i in kept],
        addresses,
    )
    try:
        response = client.send_bulk_email(**request)
    except (BotoCoreError, ClientError) as error:
        return BulkAnswer(refused, tuple(kept), None, error)
    return BulkAnswer(refused, tuple(kept), response["BulkEmailEntryResults"])
