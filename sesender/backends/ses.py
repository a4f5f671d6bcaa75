"""SesBackend: sends through Amazon SES v2 with one shared boto3 client.

``send`` makes one ``SendEmail`` call. ``send_batch`` (what the pipeline uses) groups the emails
of one content into ``SendBulkEmail`` calls of up to 50 recipients (``SES_SEND_MODE=bulk``, the
default; :mod:`sesender.backends.ses_bulk` decides which emails can share a call and builds it,
docs/architecture.md "SES bulk calls" says why) and sends the rest with ``SendEmail``.

Three decisions shape this module:

- **One client, no botocore retries.** :func:`build_ses_client` builds a single ``sesv2`` client
  (boto3 clients are thread-safe; sessions are not, hence one explicit
  ``boto3.session.Session``) with ``total_max_attempts=1``: every retry must go back through
  sesender's own rate limiter and take a token, otherwise botocore's hidden retries (3 attempts
  in its standard retry mode) would push the real send rate over the account's limit exactly
  when SES is already throttling. The connection pool is at least as large as the thread lane,
  so no connection is opened and thrown away per call. When ``endpoint_url`` is None, boto3
  itself honours ``AWS_ENDPOINT_URL_SESV2`` / ``AWS_ENDPOINT_URL`` (that is how tests and local
  stacks point it elsewhere). Its ``SendBulkEmail`` bodies are written with ``json.dumps``
  rather than botocore's model walk, the same bytes for a third less CPU
  (:mod:`sesender.backends.ses_bulk_body`).
- **Blocking calls only in the lane, abandoned only when the send itself is cancelled.** Every
  client call runs in the injected ``ThreadLane`` with ``run_abandonable``. While the service
  runs and while it drains at shutdown, nothing cancels a send: every call returns or raises,
  and its outcome is recorded. Only when the awaiting task is cancelled (the shutdown deadline
  ``SHUTDOWN_TIMEOUT_SECONDS`` passed, or a crashed actor takes the service down) does ``send``
  give up at once, leaving the worker thread to finish alone, so that a hanging call cannot
  hold the process for the whole read timeout. What still holds then: the email's outcome is
  never recorded, so it stays ``Processed`` and is requeued at the next start (at-least-once,
  exactly as after a crash); whether SES accepted the abandoned call is unknown, so the
  recipient may get it twice; and such duplicates are bounded by the calls running at that
  moment, at most the lane's thread count (one email per ``SendEmail``, up to 50 per
  ``SendBulkEmail``). A call still waiting for a thread never ran and is simply given up.
- **Errors translated here and only here**: :func:`classify_client_error` is a pure table from
  (code, HTTP status, message) to a ``SendError`` (the codes are those SES v2 and the AWS SDKs
  document); :func:`translate_error` applies it to botocore's exceptions. Nothing from botocore
  escapes this module.

Before any call, :func:`build_send_email_request` checks what SES would refuse anyway (header
limits, CR/LF injection, non-ASCII addresses: :func:`~sesender.backends.sendable.check_sendable`)
so such an email fails at once, without spending a rate-limiter token, and punycodes non-ASCII
domains.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING

import boto3.session
import trio
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotocoreConnectionError,
)

from actors import ThreadLane
from sesender.addresses import bare_address
from sesender.backends.addresses import ascii_address
from sesender.backends.base import AccountStatus, OutgoingEmail, SendResult
from sesender.backends.sendable import check_sendable
from sesender.backends.ses_bulk import (
    MAX_BULK_ENTRIES,
    BulkKey,
    BulkTemplate,
    bulk_key,
    bulk_template,
    chunk_sizes,
    entry_result,
)
from sesender.backends.ses_bulk_body import install_bulk_body
from sesender.backends.ses_bulk_call import (
    BulkAnswer,
    BulkCall,
    BulkRecipient,
    RecipientFields,
    send_bulk_call,
)
from sesender.backends.ses_tags import ses_tag_part, ses_tags
from sesender.backends.text import text_part
from sesender.config import SesSendMode
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SendError,
    SenderSendError,
    TransientSendError,
)

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import (
        BodyTypeDef,
        GetAccountResponseTypeDef,
        MessageTypeDef,
        SendEmailRequestTypeDef,
        SendEmailResponseTypeDef,
    )

__all__ = [
    "SesBackend",
    "SesStatistics",
    "build_send_email_request",
    "build_ses_client",
    "classify_client_error",
    "sender_not_verified",
    "ses_tag_part",
    "translate_error",
]

# SES's (and the AWS SDKs') throttling codes: slow down and retry.
THROTTLING_CODES = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "LimitExceededException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
# Transient failures that are not throttling: retry after a backoff.
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
# The account cannot send anything: pause, fail nothing.
ACCOUNT_CODES = frozenset(
    {
        "SendingPausedException",
        "AccountSuspendedException",
        # SES v1 spellings, in case an endpoint or proxy speaks v1 errors.
        "AccountSendingPausedException",
        "ConfigurationSetSendingPausedException",
    }
)
# Credentials or permissions are wrong: no email can be sent until an operator fixes them, so
# failing each email permanently would fail the whole queue for one operator mistake. Pause
# instead.
AUTHORISATION_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
# The sender's identity cannot send: fail that sender's emails (kind ``config``), not the account.
SENDER_CODES = frozenset({"MailFromDomainNotVerifiedException"})
DAILY_QUOTA = re.compile(r"daily|24[ -]?hour", re.IGNORECASE)
#: An email's fields that a bulk call carries (``ses_bulk_call.RecipientFields``), in one C call.
RECIPIENT_FIELDS: Callable[[OutgoingEmail], RecipientFields] = attrgetter(*BulkRecipient._fields)
UTF8 = "UTF-8"


def sender_not_verified(message: str, sender: str | None) -> bool:
    """Whether an SES refusal (``MessageRejected``, a bulk entry's ``MESSAGE_REJECTED``) says
    that ``sender`` is not a verified identity. SES names the identities that failed the check
    ("Email address is not verified. The following identities failed the check in region
    US-EAST-1: news@example.com"); in the sandbox a recipient can be among them, which is that
    email's fault alone, so only a refusal naming the sender's address counts."""
    if sender is None:
        return False
    lowered = message.lower()
    return "not verified" in lowered and bare_address(sender) in lowered


def classify_client_error(
    code: str, status: int | None, message: str, *, sender: str | None = None
) -> SendError:
    """Map one SES error response to the ``SendError`` the pipeline acts on.

    Pure and table-driven: ``code`` is ``response["Error"]["Code"]``, ``status`` the HTTP status
    (None when unknown), ``message`` the error message, ``sender`` the address the call sent
    from (to tell an unverified sender from an unverified sandbox recipient). The returned
    error carries ``code``.
    """
    text = f"SES {code or status}: {message}".rstrip(": ")
    if code in SENDER_CODES or (code == "MessageRejected" and sender_not_verified(message, sender)):
        return SenderSendError(text, code=code)
    if code in THROTTLING_CODES:
        # A throttle that names the daily quota will not clear with a backoff: pause until the
        # 24-hour window frees up (SES v1 says "Daily message quota exceeded." with "Throttling").
        if DAILY_QUOTA.search(message):
            return AccountSendError(text, code=code)
        return TransientSendError(text, code=code, throttled=True)
    if code in ACCOUNT_CODES or code in AUTHORISATION_CODES:
        return AccountSendError(text, code=code)
    if code in TRANSIENT_CODES:
        return TransientSendError(text, code=code)
    if status is not None:
        if status == 429:
            return TransientSendError(text, code=code, throttled=True)
        if status >= 500:
            return TransientSendError(text, code=code)
        if status in (401, 403):
            return AccountSendError(text, code=code)
    # MessageRejected (other than an unverified sender), NotFoundException,
    # BadRequestException and everything unknown: this message will not go as it is.
    return PermanentSendError(text, code=code)


def translate_error(exc: BotoCoreError | ClientError, *, sender: str | None = None) -> SendError:
    """Translate a botocore exception into a ``SendError`` (the caller raises it ``from exc``);
    ``sender``: the call's sender (see :func:`classify_client_error`)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return classify_client_error(
            str(error.get("Code", "")), status, str(error.get("Message", "")), sender=sender
        )
    code = type(exc).__name__
    if isinstance(exc, BotocoreConnectionError):
        # Connection refused, connect timeout, DNS, TLS and proxy failures: the request never
        # reached SES. Not this email's fault: the pipeline pauses until SES answers again.
        return TransientSendError(f"SES unreachable: {exc}", code=code, unreachable=True)
    if isinstance(exc, HTTPClientError):
        # Read timeouts and dropped connections: SES may have sent it; retry (at-least-once).
        return TransientSendError(f"SES connection failed: {exc}", code=code)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AccountSendError(f"no usable AWS credentials: {exc}", code=code)
    return PermanentSendError(f"SES request failed: {exc}", code=code)


def build_send_email_request(email: OutgoingEmail) -> SendEmailRequestTypeDef:
    """Build the ``send_email`` keyword arguments for ``email`` (pure).

    Raises :class:`PermanentSendError` for what SES would refuse (see the module docstring). The
    text part is generated from the HTML and left out only when the HTML has no text at all.
    Tags keep the first occurrence of each (sanitised) name.
    """
    sender, recipient = check_sendable(email)

    body: BodyTypeDef = {"Html": {"Data": email.html, "Charset": UTF8}}
    text = text_part(email)
    if text:
        body["Text"] = {"Data": text, "Charset": UTF8}
    simple: MessageTypeDef = {"Subject": {"Data": email.subject, "Charset": UTF8}, "Body": body}
    if email.headers:
        simple["Headers"] = [{"Name": name, "Value": value} for name, value in email.headers]
    request: SendEmailRequestTypeDef = {
        "FromEmailAddress": sender,
        "Destination": {"ToAddresses": [recipient]},
        "Content": {"Simple": simple},
    }
    if email.reply_to is not None:
        request["ReplyToAddresses"] = [ascii_address(email.reply_to, field="reply-to")]
    tags = ses_tags(email.tags)
    if tags:
        request["EmailTags"] = tags
    if email.configuration_set:
        request["ConfigurationSetName"] = email.configuration_set
    return request


def build_ses_client(
    *,
    region: str,
    pool_size: int,
    connect_timeout: float,
    read_timeout: float,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    bulk_body_by_json: bool = True,
) -> SESV2Client:
    """Build the one ``sesv2`` client the service shares (see the module docstring).

    Credentials left as None come from boto3's usual chain (environment, profile, instance or
    task role). ``pool_size`` should be the SES thread lane's limit. This call is blocking (it
    loads the service model): make it once at start. ``bulk_body_by_json`` writes
    ``SendBulkEmail`` bodies with ``json.dumps`` rather than botocore's model walk
    (:mod:`sesender.backends.ses_bulk_body`, the same bytes); benchmarks turn it off for their
    plain-boto3 baselines.
    """
    if (access_key_id is None) != (secret_access_key is None):
        raise ValueError("give both access_key_id and secret_access_key, or neither")
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        region_name=region,
    )
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=max(pool_size, 10),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # botocore's client-side check of every request against the model costs about a fifth
        # of its CPU per call (0.18 of 0.95 ms measured), on the one GIL the whole service
        # shares. The request is built by build_send_email_request only, and a unit test
        # validates what it builds against the same model; SES itself still checks it.
        parameter_validation=False,
    )
    client = session.client("sesv2", endpoint_url=endpoint_url, config=config)
    if bulk_body_by_json:
        # Needs parameter_validation=False: the check would see requests without their entries.
        install_bulk_body(client)
    return client


@dataclass(frozen=True, slots=True)
class SesStatistics:
    """A snapshot of the backend's work.

    ``attempts`` counts calls made (``SendEmail`` and ``SendBulkEmail``), ``bulk_calls`` the
    bulk ones and ``bulk_emails`` the emails they carried; ``sent``, ``throttled``,
    ``transient``, ``permanent`` and ``account`` count emails by outcome. ``permanent`` also
    counts emails refused before any call (invalid headers or addresses). ``in_flight`` is
    calls running now.
    """

    attempts: int
    sent: int
    throttled: int
    transient: int
    permanent: int
    account: int
    in_flight: int
    bulk_calls: int = 0
    bulk_emails: int = 0


#: Bulk calls the SES client process may have waiting beyond those it works on: enough that it
#: never waits for the event loop's next call (see :meth:`SesBackend.emails_it_can_hold`).
CALLS_QUEUED_AHEAD = 8


class SesBackend:
    """Sends through the shared client, in the SES lane: ``send`` makes one ``SendEmail``
    call; ``send_batch`` groups emails of one content into ``SendBulkEmail`` calls (in
    ``SesSendMode.BULK``) and sends the rest with ``SendEmail``, all calls at once."""

    name = "ses"

    def __init__(
        self,
        *,
        client: SESV2Client,
        lane: ThreadLane,
        send_mode: SesSendMode = SesSendMode.BULK,
    ) -> None:
        self.client = client
        self.lane = lane
        self.send_mode = send_mode
        #: The SES client process's ``send_bulk_call`` (the request is built there), or None
        #: for a client in this process (built in the lane's thread). Looked up, not imported:
        #: the client process's module must not be imported with this package (``python -m``).
        self._remote_bulk_call: Callable[[BulkCall], BulkAnswer] | None = getattr(
            client, "send_bulk_call", None
        )
        #: Its ``send_bulk_call_async``, awaited with no lane thread (the same limit on calls
        #: at once as the lane's).
        self._remote_bulk_call_async: Callable[[BulkCall], Awaitable[BulkAnswer]] | None = getattr(
            client, "send_bulk_call_async", None
        )
        self._remote_calls = trio.CapacityLimiter(lane.limit)
        #: How many calls the SES client process is working on (None: no such process); looked
        #: up as ``send_bulk_call`` is.
        self._child_busy_calls: Callable[[], int] | None = getattr(client, "busy_calls", None)
        self._bulk_calls = 0
        self._bulk_emails = 0
        self._attempts = 0
        self._sent = 0
        self._throttled = 0
        self._transient = 0
        self._permanent = 0
        self._account = 0
        self._in_flight = 0

    async def send(self, email: OutgoingEmail) -> str:
        """Send ``email`` and return SES's MessageId; raise the translated ``SendError``."""

        def call() -> SendEmailResponseTypeDef:
            # Built in the worker thread too: the HTML-to-text conversion and the request
            # dict cost about 0.3 ms, which is the event loop's time otherwise. A message SES
            # would refuse raises here, before any call (and is not counted as an attempt).
            request = build_send_email_request(email)
            built.append(True)
            return self.client.send_email(**request)

        # Whether the request was built (an attempt was made). A list, not a threading.Event:
        # the flag is read after the call returned (or was abandoned, when the count is moot),
        # and an Event's lock and condition were 2% of the service's CPU per email.
        built: list[bool] = []
        self._in_flight += 1
        try:
            # Abandonable: at the shutdown deadline a hanging call must not hold the process
            # for the whole read timeout. Its email stays Processed and is sent again after the
            # restart, exactly as after a crash (at-least-once).
            response = await self.lane.run_abandonable(call)
        except PermanentSendError:
            self._permanent += 1
            raise
        except (BotoCoreError, ClientError) as exc:
            error = translate_error(exc, sender=email.sender)
            self._count_failure(error)
            raise error from exc
        finally:
            self._in_flight -= 1
            if built:
                self._attempts += 1
        message_id = response.get("MessageId")
        if not isinstance(message_id, str) or not message_id:
            # An answer without its MessageId (a cut or garbled answer that botocore still
            # parsed) must not crash the sender pool: whether SES took the email is unknown, so
            # it is retried, as after a lost connection (at-least-once).
            error = TransientSendError("SES answered without a MessageId", code="MissingMessageId")
            self._count_failure(error)
            raise error
        self._sent += 1
        return message_id

    async def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        """Send every email; one result per email, in order (see ``Backend.send_batch``).

        In bulk mode emails that can share a template (:mod:`sesender.backends.ses_bulk`)
        go in ``SendBulkEmail`` calls of at most 50; an email alone in its group, one whose
        content SES's substitution could alter, and every email in single mode go with
        ``SendEmail`` (for one email that is the cheaper call). All calls run at once, as many
        as the lane has threads.
        """
        results: list[SendResult | None] = [None] * len(emails)
        singles: list[int] = []
        groups: dict[BulkKey, list[tuple[int, dict[str, str]]]] = {}
        bulk = self.send_mode is SesSendMode.BULK
        # The emails of one content come together and share one key object (kept by
        # ``bulk_key``): the same key as the email before needs no hashing of it.
        last_key: BulkKey | None = None
        members: list[tuple[int, dict[str, str]]] = []
        for index, email in enumerate(emails):
            shaped = bulk_key(email) if bulk else None
            if shaped is None:
                singles.append(index)
                continue
            key, data = shaped
            if key is not last_key:
                members = groups.setdefault(key, [])
                last_key = key
            members.append((index, data))
        chunks: list[tuple[BulkKey, BulkTemplate, list[tuple[int, dict[str, str]]]]] = []
        for key, members in groups.items():
            template = bulk_template(key) if len(members) > 1 else None
            if template is None:
                singles.extend(index for index, _ in members)
                continue
            start = 0
            for size in chunk_sizes(len(members)):
                chunks.append((key, template, members[start : start + size]))
                start += size

        async def send_single(index: int) -> None:
            try:
                results[index] = await self.send(emails[index])
            except SendError as error:
                results[index] = error

        async def send_chunk(
            key: BulkKey, template: BulkTemplate, members: list[tuple[int, dict[str, str]]]
        ) -> None:
            chunk_results = await self._send_bulk(
                key, template, [emails[index] for index, _ in members], [d for _, d in members]
            )
            for (index, _), result in zip(members, chunk_results, strict=True):
                results[index] = result

        if len(chunks) == 1 and not singles:
            # The usual batch (at most 50 emails of one content): one call, awaited here; a
            # nursery and a task for it cost the event loop about 20 us more per batch.
            await send_chunk(*chunks[0])
        else:
            async with trio.open_nursery() as nursery:
                for index in singles:
                    nursery.start_soon(send_single, index)
                for key, template, members in chunks:
                    nursery.start_soon(send_chunk, key, template, members)
        done: list[SendResult] = []
        for result in results:
            assert result is not None, "every email has its result"
            done.append(result)
        return done

    async def _send_bulk(
        self,
        key: BulkKey,
        template: BulkTemplate,
        emails: list[OutgoingEmail],
        data: list[dict[str, str]],
    ) -> list[SendResult]:
        """One ``SendBulkEmail`` call for ``emails`` (one key); never raises ``SendError``.

        The call goes as a compact :class:`BulkCall`, checked and built next to the client
        (:mod:`sesender.backends.ses_bulk_call`): emails SES would refuse (addresses, headers)
        fail at once and leave the call.
        """
        call = BulkCall(key, template, tuple(map(RECIPIENT_FIELDS, emails)), tuple(data))
        answer: BulkAnswer | None = None
        self._in_flight += 1
        try:
            answer = await self._bulk_answer(call)
        except (BotoCoreError, ClientError) as exc:
            # The SES client process died or is gone: which emails it would have refused is
            # unknown, so every one is retried as after a lost connection (at-least-once).
            answer = BulkAnswer({}, tuple(range(len(emails))), None, exc)
        finally:
            self._in_flight -= 1
            if answer is not None and answer.carried:
                self._attempts += 1
                self._bulk_calls += 1
                self._bulk_emails += len(answer.carried)
        answers: Mapping[int, SendResult]
        if answer.error is not None:
            error = translate_error(answer.error, sender=key.sender)
            error.__cause__ = answer.error
            answers = dict.fromkeys(answer.carried, error)
        else:
            answers = {
                position: entry_result(entry, sender=key.sender)
                for position, entry in zip(answer.carried, answer.results or (), strict=False)
            }
        refused = answer.refused
        results: list[SendResult] = []
        for position in range(len(emails)):
            result = refused.get(position) or answers.get(position)
            if result is None:
                # SES answered fewer entries than it was given: not this email's fault.
                result = TransientSendError(
                    "SES answered no result for this bulk entry", code="MissingEntryResult"
                )
            if isinstance(result, str):
                self._sent += 1
            else:
                self._count_failure(result)
            results.append(result)
        return results

    async def _bulk_answer(self, call: BulkCall) -> BulkAnswer:
        """``call`` sent by the SES client process (awaited directly when it can be), or by
        the client in this process in a lane thread. Cancelled, it returns at once either way
        and the call runs on unheard (the lane's thread is abandoned)."""
        if self._remote_bulk_call_async is not None:
            async with self._remote_calls:
                return await self._remote_bulk_call_async(call)
        run: Callable[[], BulkAnswer]
        if self._remote_bulk_call is not None:
            run = partial(self._remote_bulk_call, call)
        else:
            run = partial(send_bulk_call, self.client, call)
        return await self.lane.run_abandonable(run)

    def _count_failure(self, error: SendError) -> None:
        """Count a failed call under the kind of failure the pipeline will see."""
        if isinstance(error, TransientSendError):
            if error.throttled:
                self._throttled += 1
            else:
                self._transient += 1
        elif isinstance(error, AccountSendError):
            self._account += 1
        else:
            self._permanent += 1

    def emails_it_can_hold(self) -> int | None:
        """How many emails the pipeline should have with this backend at once (None: no limit
        of its own, the pipeline's in-flight limit holds).

        In bulk mode through the SES client process: room for twice the calls the child is
        working on, plus :data:`CALLS_QUEUED_AHEAD`, of 50 emails each. Why: without it the
        event loop hands batches over faster than a busy child takes them, and up to the
        in-flight limit (2R) of composed emails waited in memory in front of it (9,000 to
        16,500 at full speed, up to 200,000 at the highest rate setting; docs/performance.md,
        "Issue 13, seventh pass"); now they wait in the store, and a stuck child holds only
        its room. Twice: against a slow SES the child's calls are mostly waiting on its
        answer, and the room doubles with each round trip, as a TCP window does in slow start,
        until the latency is covered.
        """
        busy = self._child_busy_calls
        if busy is None or self.send_mode is not SesSendMode.BULK:
            return None
        return (2 * busy() + CALLS_QUEUED_AHEAD) * MAX_BULK_ENTRIES

    async def account_status(self) -> AccountStatus:
        """Read ``GetAccount``: can the account send, and at what ``MaxSendRate``.

        When ``GetAccount`` cannot be used (not permitted by the IAM policy, not implemented by a
        local stand-in such as moto), sending is assumed possible with an unknown rate: the sends
        themselves will say otherwise. When it fails transiently or the credentials are unusable,
        ``can_send`` is False with the reason, so a pause is not ended on a guess. Never raises
        for provider errors.
        """

        def call() -> GetAccountResponseTypeDef:
            return self.client.get_account()

        try:
            response = await self.lane.run_abandonable(call)  # a read: safe to abandon
        except NotImplementedError as exc:
            # moto's in-process mock raises this for operations it does not implement.
            return AccountStatus(
                can_send=True,
                reason=f"get_account unavailable: {exc}",
                details={"error_code": "NotImplemented"},
            )
        except (BotoCoreError, ClientError) as exc:
            error = translate_error(exc)
            details = {"error_code": error.code}
            if isinstance(error, PermanentSendError) or error.code in (
                "AccessDenied",
                "AccessDeniedException",
            ):
                return AccountStatus(
                    can_send=True, reason=f"get_account unavailable: {error}", details=details
                )
            return AccountStatus(
                can_send=False, reason=f"get_account failed: {error}", details=details
            )
        return account_status_from(response)

    async def aclose(self) -> None:
        """Close the client's connection pool (in the lane: it may block on sockets)."""
        await self.lane.run(self.client.close)

    def statistics(self) -> SesStatistics:
        """Return a frozen snapshot of the counters."""
        return SesStatistics(
            attempts=self._attempts,
            sent=self._sent,
            throttled=self._throttled,
            transient=self._transient,
            permanent=self._permanent,
            account=self._account,
            in_flight=self._in_flight,
            bulk_calls=self._bulk_calls,
            bulk_emails=self._bulk_emails,
        )


def account_status_from(response: GetAccountResponseTypeDef) -> AccountStatus:
    """Interpret a ``GetAccount`` response (``SendingEnabled``, ``EnforcementStatus``,
    ``SendQuota``); pure."""
    sending_enabled = bool(response.get("SendingEnabled", True))
    enforcement = str(response.get("EnforcementStatus", ""))
    quota = response.get("SendQuota", {})
    max_send_rate = quota.get("MaxSendRate")
    reasons = []
    if not sending_enabled:
        reasons.append("sending is disabled for the account")
    if enforcement == "SHUTDOWN":
        reasons.append("the account's enforcement status is SHUTDOWN")
    max_24_hours = quota.get("Max24HourSend")
    sent_24_hours = quota.get("SentLast24Hours")
    # -1 means unlimited. A used-up daily quota clears only as the 24-hour window moves on:
    # without this, every probe would resume sending just to be refused again.
    if (
        max_24_hours is not None
        and sent_24_hours is not None
        and max_24_hours >= 0
        and sent_24_hours >= max_24_hours
    ):
        reasons.append(
            f"the daily sending quota is used up ({sent_24_hours:g} of {max_24_hours:g})"
        )
    details = {
        "enforcement_status": enforcement,
        "production_access": str(response.get("ProductionAccessEnabled", "")),
        "max_24_hour_send": str(quota.get("Max24HourSend", "")),
        "sent_last_24_hours": str(quota.get("SentLast24Hours", "")),
    }
    return AccountStatus(
        can_send=not reasons,
        max_send_rate=float(max_send_rate) if max_send_rate is not None else None,
        reason="; ".join(reasons),
        details=details,
    )
