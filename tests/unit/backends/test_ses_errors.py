"""SES error translation, table-driven from the tables ``sesender.backends.ses`` acts on (issue 20).

Mutation testing showed that 19 of the 28 table entries could be deleted without a failing test;
without its entry ``AccountSendingPausedException`` (which arrives with HTTP 400) became a
permanent failure and failed the queue instead of pausing it. Every entry is checked here with a
status that would classify it otherwise (400), so deleting any entry fails
``test_every_table_entry_maps_to_its_class``. The HTTP-status fallbacks (429, ``>= 500``, 401,
403, unknown codes) and ``translate_error``'s exception paths (``unreachable`` only for
connection errors) are pinned too.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from sesender.backends import ses
from sesender.backends.ses import classify_client_error, translate_error
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SendError,
    SenderSendError,
    TransientSendError,
)

#: (table, the class it maps to, throttled) -- the same tables the module classifies with.
TABLES = [
    (ses.THROTTLING_CODES, TransientSendError, True),
    (ses.TRANSIENT_CODES, TransientSendError, False),
    (ses.ACCOUNT_CODES, AccountSendError, None),
    (ses.AUTHORISATION_CODES, AccountSendError, None),
]
ENTRIES = [
    pytest.param(code, kind, throttled, id=code)
    for table, kind, throttled in TABLES
    for code in sorted(table)
]


def test_the_tables_hold_what_the_pipeline_relies_on() -> None:
    """The entries themselves (a deleted entry fails the table-driven test below too)."""
    assert len(ENTRIES) == 28
    assert "AccountSendingPausedException" in ses.ACCOUNT_CODES
    assert "TooManyRequestsException" in ses.THROTTLING_CODES
    tables = [table for table, _, _ in TABLES]
    assert sum(len(table) for table in tables) == len(frozenset().union(*tables))  # disjoint


@pytest.mark.parametrize(("code", "kind", "throttled"), ENTRIES)
@pytest.mark.parametrize("status", [400, None])
def test_every_table_entry_maps_to_its_class(
    code: str, kind: type[SendError], throttled: bool | None, status: int | None
) -> None:
    error = classify_client_error(code, status, "refused")
    assert type(error) is kind
    assert error.code == code
    assert str(error) == f"SES {code}: refused"
    if isinstance(error, TransientSendError):
        assert error.throttled is throttled
        assert error.unreachable is False


def test_account_sending_paused_with_400_pauses_instead_of_failing() -> None:
    error = classify_client_error("AccountSendingPausedException", 400, "Sending paused")
    assert isinstance(error, AccountSendError)


@pytest.mark.parametrize("code", sorted(ses.THROTTLING_CODES))
@pytest.mark.parametrize(
    "message", ["Daily message quota exceeded.", "Maximum sending rate for 24 hour period"]
)
def test_a_throttle_naming_the_daily_quota_pauses(code: str, message: str) -> None:
    assert type(classify_client_error(code, 400, message)) is AccountSendError


@pytest.mark.parametrize(
    ("status", "kind", "throttled"),
    [
        (429, TransientSendError, True),
        (500, TransientSendError, False),
        (503, TransientSendError, False),
        (599, TransientSendError, False),
        (499, PermanentSendError, None),
        (401, AccountSendError, None),
        (403, AccountSendError, None),
        (400, PermanentSendError, None),
        (404, PermanentSendError, None),
        (None, PermanentSendError, None),
    ],
)
def test_unknown_codes_fall_back_on_the_http_status(
    status: int | None, kind: type[SendError], throttled: bool | None
) -> None:
    error = classify_client_error("SomethingNew", status, "msg")
    assert type(error) is kind
    assert error.code == "SomethingNew"
    if isinstance(error, TransientSendError):
        assert error.throttled is throttled


def test_a_code_less_error_is_named_by_its_status() -> None:
    assert str(classify_client_error("", 503, "")) == "SES 503"
    assert str(classify_client_error("MessageRejected", 400, "")) == "SES MessageRejected"


def client_error(code: str, status: int | None, message: str = "no") -> ClientError:
    response: dict[str, object] = {"Error": {"Code": code, "Message": message}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "SendEmail")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "kind", "throttled"),
    [
        (client_error("Weird", 503), TransientSendError, False),
        (client_error("Weird", 500), TransientSendError, False),
        (client_error("Weird", 429), TransientSendError, True),
        (client_error("Weird", 401), AccountSendError, None),
        (client_error("Weird", 400), PermanentSendError, None),
        (client_error("Weird", None), PermanentSendError, None),
        (client_error("AccountSendingPausedException", 400), AccountSendError, None),
    ],
)
def test_translate_error_reads_code_and_status_of_client_errors(
    exc: ClientError, kind: type[SendError], throttled: bool | None
) -> None:
    error = translate_error(exc)
    assert type(error) is kind
    assert error.code == exc.response["Error"]["Code"]
    assert str(error).endswith(": no")
    if isinstance(error, TransientSendError):
        assert error.throttled is throttled
        assert error.unreachable is False


def test_translate_error_without_an_error_document() -> None:
    error = translate_error(ClientError({}, "SendEmail"))
    assert type(error) is PermanentSendError
    assert error.code == ""


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="https://email.example"),
        ConnectTimeoutError(endpoint_url="https://email.example"),
    ],
)
def test_connection_errors_are_transient_and_unreachable(exc: Exception) -> None:
    error = translate_error(exc)  # type: ignore[arg-type]
    assert type(error) is TransientSendError
    assert error.unreachable is True
    assert error.throttled is False
    assert error.code == type(exc).__name__
    assert str(error).startswith("SES unreachable: ")


def test_a_read_timeout_is_transient_but_reached_ses() -> None:
    error = translate_error(ReadTimeoutError(endpoint_url="https://email.example"))
    assert type(error) is TransientSendError
    assert error.unreachable is False
    assert error.code == "ReadTimeoutError"
    assert str(error).startswith("SES connection failed: ")


@pytest.mark.parametrize(
    "exc",
    [
        NoCredentialsError(),
        PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        CredentialRetrievalError(provider="sso", error_msg="expired"),
    ],
)
def test_missing_credentials_pause(exc: Exception) -> None:
    error = translate_error(exc)  # type: ignore[arg-type]
    assert type(error) is AccountSendError
    assert error.code == type(exc).__name__
    assert str(error).startswith("no usable AWS credentials: ")


def test_other_botocore_errors_are_permanent() -> None:
    error = translate_error(ParamValidationError(report="bad"))
    assert type(error) is PermanentSendError
    assert error.code == "ParamValidationError"
    assert str(error).startswith("SES request failed: ")


def test_the_message_is_kept_whole() -> None:
    """Only the ": " left by an empty message is trimmed, never letters of the message."""
    assert str(classify_client_error("Weird", 400, "TAX")) == "SES Weird: TAX"
    assert str(classify_client_error("Weird", 400, "")) == "SES Weird"


def test_a_client_error_without_a_message_has_no_placeholder() -> None:
    error = translate_error(ClientError({"Error": {"Code": "MessageRejected"}}, "SendEmail"))
    assert str(error) == "SES MessageRejected"
    assert type(error) is PermanentSendError


@pytest.mark.parametrize(
    ("code", "message", "sender"),
    [
        ("MailFromDomainNotVerifiedException", "MAIL FROM not verified", None),
        ("MessageRejected", "Email address is not verified: news@example.com", "news@example.com"),
    ],
)
def test_a_sender_refusal_says_what_ses_said(code: str, message: str, sender: str | None) -> None:
    error = classify_client_error(code, 400, message, sender=sender)
    assert type(error) is SenderSendError
    assert str(error) == f"SES {code}: {message}"
    assert error.code == code
