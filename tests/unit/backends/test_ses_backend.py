"""SesBackend against moto, botocore's Stubber and tiny local HTTP servers (127.0.0.1 only)."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import boto3.session
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import Stubber
from botocore.validate import ParamValidationDecorator, validate_parameters
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from actors import ThreadLane
from sesender.backends import Backend, SesBackend, build_ses_client
from sesender.backends.base import OutgoingEmail
from sesender.backends.ses import (
    build_send_email_request,
    classify_client_error,
    ses_tag_part,
    translate_error,
)
from sesender.backends.ses_bulk import entry_result
from sesender.backends.ses_tags import TAG_FORBIDDEN, ses_tags
from sesender.errors import (
    AccountSendError,
    PermanentSendError,
    SendError,
    SenderSendError,
    TransientSendError,
)
from tests.unit.backends.outgoing_changes import OutgoingChanges

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

REGION = "us-east-1"
# Never contacted: the Stubber answers before any connection is made.
UNUSED_ENDPOINT = "http://127.0.0.1:9"
BASE = OutgoingEmail(
    request_id=42,
    topic_id="spring-sale",
    sender="Shop <news@example.com>",
    recipient="user@example.org",
    subject="Grüße",
    html='<p>Hi, see <a href="https://example.com/offer">our offer</a>.</p>',
    headers=(
        ("List-Unsubscribe", "<https://sesender.example/v1/unsubscribe?token=t0k3n>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ),
    tags=(("topic", "spring-sale"), ("request_id", "42")),
    configuration_set="marketing",
)
EXPECTED_TEXT = "Hi, see our offer (https://example.com/offer)."


def outgoing(**changes: Unpack[OutgoingChanges]) -> OutgoingEmail:
    return dataclasses.replace(BASE, **changes)


def make_client(endpoint_url: str | None = None) -> SESV2Client:
    return build_ses_client(
        region=REGION,
        pool_size=4,
        connect_timeout=2.0,
        read_timeout=2.0,
        endpoint_url=endpoint_url,
        access_key_id="testing",
        secret_access_key="testing",
    )


AWS_VARIABLES_TO_CLEAR = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SESV2",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Keep the developer's AWS settings (endpoints, retries, profiles) out of these tests."""
    for name in AWS_VARIABLES_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(directory / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(directory / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def isolated_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SESV2Client]:
    """One client for the Stubber tests: building a client loads the service model (slow),
    and a client is meant to be shared anyway; each test activates its own Stubber on it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_aws_environment(monkeypatch, tmp_path_factory.mktemp("aws"))
        client = make_client(UNUSED_ENDPOINT)
    yield client
    client.close()


@pytest.fixture
def moto_client() -> Iterator[SESV2Client]:
    """An in-process moto SES with the sender's domain created as an identity (moto refuses
    senders that are not)."""
    with mock_aws():
        client = make_client()
        client.create_email_identity(EmailIdentity="example.com")
        yield client
        client.close()


@pytest.fixture
def stubbed(shared_client: SESV2Client) -> Iterator[tuple[SesBackend, Stubber]]:
    with Stubber(shared_client) as stubber:
        yield SesBackend(client=shared_client, lane=ThreadLane("ses", 2)), stubber
        stubber.assert_no_pending_responses()


# ---------------------------------------------------------------------------------------------
# Error classification (pure)


@pytest.mark.parametrize(
    ("message", "sender", "kind"),
    [
        # SES names the identities that failed; the sender among them: that sender's fault.
        (
            "Email address is not verified. The following identities failed the check in"
            " region US-EAST-1: News@Example.com",
            "News <news@example.com>",
            SenderSendError,
        ),
        ("Email address not verified news@example.com", "news@example.com", SenderSendError),
        # A sandbox recipient that is not verified: this email only.
        (
            "Email address is not verified. The following identities failed the check in"
            " region US-EAST-1: someone@example.org",
            "news@example.com",
            PermanentSendError,
        ),
        ("Email address is not verified.", None, PermanentSendError),
        ("Message contains a virus news@example.com", "news@example.com", PermanentSendError),
    ],
)
def test_an_unverified_sender_is_told_from_an_unverified_recipient(
    message: str, sender: str | None, kind: type[SendError]
) -> None:
    assert type(classify_client_error("MessageRejected", 400, message, sender=sender)) is kind


def test_bulk_entries_refusing_the_sender_fail_as_the_sender_s() -> None:
    assert isinstance(
        entry_result({"Status": "MAIL_FROM_DOMAIN_NOT_VERIFIED", "Error": "x"}),
        SenderSendError,
    )
    refused: Any = {"Status": "MESSAGE_REJECTED", "Error": "Email address not verified a@b.example"}
    assert type(entry_result(refused, sender="A@b.example")) is SenderSendError
    assert type(entry_result(refused, sender="c@b.example")) is PermanentSendError


async def test_an_answer_without_a_message_id_is_a_transient_error_not_a_crash(
    stubbed: tuple[SesBackend, Stubber],
) -> None:
    # Seen once in the SES outage test (a connection reset mid-answer): the sender pool crashed
    # on the missing key and the service stopped.
    backend, stubber = stubbed
    stubber.add_response("send_email", {}, expected_params=dict(build_send_email_request(BASE)))
    with pytest.raises(TransientSendError) as raised:
        await backend.send(BASE)
    assert raised.value.code == "MissingMessageId"
    stats = backend.statistics()
    assert (stats.sent, stats.transient) == (0, 1)


@pytest.mark.parametrize(
    ("code", "status", "message", "kind", "throttled"),
    [
        (
            "TooManyRequestsException",
            429,
            "Maximum sending rate exceeded.",
            TransientSendError,
            True,
        ),
        ("Throttling", 400, "Maximum sending rate exceeded.", TransientSendError, True),
        ("ThrottlingException", 400, "Rate exceeded", TransientSendError, True),
        ("LimitExceededException", 400, "Too many instances", TransientSendError, True),
        ("LimitExceededException", 400, "Daily message quota exceeded.", AccountSendError, False),
        ("Throttling", 400, "Daily message quota exceeded.", AccountSendError, False),
        (
            "TooManyRequestsException",
            429,
            "24 hour sending quota exceeded",
            AccountSendError,
            False,
        ),
        ("SendingPausedException", 400, "Sending is paused", AccountSendError, False),
        ("AccountSuspendedException", 400, "Suspended", AccountSendError, False),
        ("AccessDeniedException", 403, "not authorized", AccountSendError, False),
        ("UnrecognizedClientException", 403, "invalid token", AccountSendError, False),
        ("ExpiredTokenException", 400, "expired", AccountSendError, False),
        ("", 403, "", AccountSendError, False),
        ("MessageRejected", 400, "Email address is not verified.", PermanentSendError, False),
        ("MailFromDomainNotVerifiedException", 400, "", SenderSendError, False),
        ("NotFoundException", 404, "Configuration set does not exist", PermanentSendError, False),
        ("BadRequestException", 400, "Invalid header", PermanentSendError, False),
        ("InternalFailure", 500, "", TransientSendError, False),
        ("ServiceUnavailable", 503, "", TransientSendError, False),
        ("RequestTimeout", 408, "", TransientSendError, False),
        ("RequestTimeoutException", 408, "", TransientSendError, False),
        ("SomethingNew", 502, "", TransientSendError, False),
        ("SomethingNew", 429, "", TransientSendError, True),
        ("SomethingNew", 400, "", PermanentSendError, False),
        ("SomethingNew", None, "", PermanentSendError, False),
    ],
)
def test_classify_client_error(
    code: str, status: int | None, message: str, kind: type[SendError], throttled: bool
) -> None:
    error = classify_client_error(code, status, message)
    assert type(error) is kind
    assert error.code == code
    assert getattr(error, "throttled", False) is throttled
    if message:
        assert message in str(error)


URL = "http://ses.example"


def client_error(code: str, status: int, message: str = "") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "SendEmail")


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (client_error("MessageRejected", 400, "bad"), PermanentSendError, "MessageRejected"),
        (client_error("InternalFailure", 500), TransientSendError, "InternalFailure"),
        (
            EndpointConnectionError(endpoint_url="http://x"),
            TransientSendError,
            "EndpointConnectionError",
        ),
        (ConnectTimeoutError(endpoint_url="http://x"), TransientSendError, "ConnectTimeoutError"),
        (ReadTimeoutError(endpoint_url="http://x"), TransientSendError, "ReadTimeoutError"),
        (
            ConnectionClosedError(endpoint_url="http://x"),
            TransientSendError,
            "ConnectionClosedError",
        ),
        (NoCredentialsError(), AccountSendError, "NoCredentialsError"),
        (ParamValidationError(report="bad"), PermanentSendError, "ParamValidationError"),
    ],
)
def test_translate_error(
    exc: BotoCoreError | ClientError, kind: type[SendError], code: str
) -> None:
    error = translate_error(exc)
    assert type(error) is kind
    assert error.code == code


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("topic", "topic"),
        ("spring-sale_2026", "spring-sale_2026"),
        ("topic.2024/05 ü", "topic_2024_05__"),
        ("", "_"),
        ("x" * 300, "x" * 256),
    ],
)
def test_ses_tag_part(value: str, expected: str) -> None:
    assert ses_tag_part(value) == expected


@pytest.mark.parametrize(
    "value",
    ["12345", "abcXYZ09", "a" * 256, "a" * 257, "é1", "١٢٣", "sesender_topic", "", "a.b" * 90],
)
def test_ses_tag_part_fast_path_agrees_with_the_substitution(value: str) -> None:
    """Letters and digits pass as they are, short values are sanitised through a cache, long
    ones directly: all three agree with the plain substitution, asked once or twice."""
    for _ in range(2):
        assert ses_tag_part(value) == (TAG_FORBIDDEN.sub("_", value)[:256] or "_")


@pytest.mark.parametrize(
    "pairs",
    [
        (),
        (("sesender_request_id", "12"), ("sesender_topic", "spring.sale")),
        (("a.b", "1"), ("a/b", "2"), ("c", "3")),  # one sanitised name: the first is kept
        (("x", "1"), ("x", "2"), ("", "3"), ("é", "4")),
        (("campaign", "x" * 300),),
    ],
)
def test_ses_tags_keep_the_first_tag_of_each_sanitised_name(
    pairs: tuple[tuple[str, str], ...],
) -> None:
    """The tags as a plain loop over the pairs makes them, the names' plan cached or not."""
    expected: dict[str, str] = {}
    for name, value in pairs:
        expected.setdefault(ses_tag_part(name), ses_tag_part(value))
    for _ in range(2):
        assert ses_tags(pairs) == [{"Name": n, "Value": v} for n, v in expected.items()]


# ---------------------------------------------------------------------------------------------
# Request building (pure)


def test_request_has_every_part() -> None:
    assert build_send_email_request(BASE) == {
        "FromEmailAddress": "Shop <news@example.com>",
        "Destination": {"ToAddresses": ["user@example.org"]},
        "Content": {
            "Simple": {
                "Subject": {"Data": "Grüße", "Charset": "UTF-8"},
                "Body": {
                    "Html": {"Data": BASE.html, "Charset": "UTF-8"},
                    "Text": {"Data": EXPECTED_TEXT, "Charset": "UTF-8"},
                },
                "Headers": [{"Name": name, "Value": value} for name, value in BASE.headers],
            }
        },
        "EmailTags": [
            {"Name": "topic", "Value": "spring-sale"},
            {"Name": "request_id", "Value": "42"},
        ],
        "ConfigurationSetName": "marketing",
    }


@pytest.mark.parametrize(
    "email",
    [
        BASE,
        outgoing(headers=(), tags=(), configuration_set=None, html="<img src='x.gif'>"),
        outgoing(tags=(("topic id", "a/b"), ("topic_id", "second"), ("", ""))),
    ],
    ids=["every-part", "minimal", "odd-tags"],
)
def test_built_requests_satisfy_botocores_model(email: OutgoingEmail) -> None:
    """The client skips botocore's parameter validation for speed; this is that validation."""
    model = botocore.session.get_session().get_service_model("sesv2")
    shape = model.operation_model("SendEmail").input_shape
    assert shape is not None
    validate_parameters(dict(build_send_email_request(email)), shape)  # raises when invalid


def test_request_leaves_out_what_is_empty() -> None:
    request = build_send_email_request(
        outgoing(headers=(), tags=(), configuration_set=None, html="<img src='x.gif'>")
    )
    assert set(request) == {"FromEmailAddress", "Destination", "Content"}
    simple = request["Content"]["Simple"]
    assert "Headers" not in simple
    assert set(simple["Body"]) == {"Html"}


def test_request_sanitises_tags_and_keeps_the_first_of_a_name() -> None:
    request = build_send_email_request(
        outgoing(tags=(("topic id", "a/b"), ("topic_id", "second"), ("", "")))
    )
    assert request["EmailTags"] == [
        {"Name": "topic_id", "Value": "a_b"},
        {"Name": "_", "Value": "_"},
    ]


def test_request_punycodes_non_ascii_domains() -> None:
    request = build_send_email_request(
        outgoing(sender="Bücherei <news@bücher.de>", recipient="kunde@bücher.de")
    )
    assert request["Destination"] == {"ToAddresses": ["kunde@xn--bcher-kva.de"]}
    sender = request["FromEmailAddress"]
    assert sender.isascii()
    assert str(make_header(decode_header(sender))) == "Bücherei <news@xn--bcher-kva.de>"


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"headers": (("X-Campaign", "a\nBcc: victim@example.com"),)},
        {"headers": tuple((f"X-{n}", "v") for n in range(16))},
        {"headers": (("Reply-To", "x@example.com"),)},
        {"recipient": "josé@example.org"},
        {"recipient": "a@example.org, b@example.org"},
    ],
)
async def test_what_ses_would_refuse_fails_before_any_call(
    stubbed: tuple[SesBackend, Stubber], changes: OutgoingChanges
) -> None:
    backend, _ = stubbed  # no response queued: any call would fail the test loudly
    with pytest.raises(PermanentSendError):
        await backend.send(outgoing(**changes))
    stats = backend.statistics()
    assert (stats.attempts, stats.permanent) == (0, 1)


# ---------------------------------------------------------------------------------------------
# Against moto in-process


def test_satisfies_the_backend_protocol(shared_client: SESV2Client) -> None:
    backend: Backend = SesBackend(client=shared_client, lane=ThreadLane("ses", 1))
    assert backend.name == "ses"


async def test_send_through_moto_returns_its_message_id(moto_client: SESV2Client) -> None:
    backend = SesBackend(client=moto_client, lane=ThreadLane("ses", 4))
    message_id = await backend.send(BASE)

    sent = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    by_id = {message.id: message for message in sent}
    assert message_id in by_id
    message = by_id[message_id]
    assert message.body == BASE.html  # moto keeps only the HTML body when there is one
    assert message.subject == "Grüße"
    assert message.source == "Shop <news@example.com>"
    assert message.destinations["ToAddresses"] == ["user@example.org"]
    stats = backend.statistics()
    assert (stats.attempts, stats.sent, stats.in_flight) == (1, 1, 0)


async def test_the_wire_request_carries_headers_tags_and_text(moto_client: SESV2Client) -> None:
    """moto drops Headers, EmailTags and the configuration set, so spy on the serialised call."""
    seen: list[dict[str, Any]] = []

    def spy(params: dict[str, Any], **_: object) -> None:
        seen.append(json.loads(params["body"]))

    moto_client.meta.events.register("before-call.sesv2.SendEmail", spy)
    backend = SesBackend(client=moto_client, lane=ThreadLane("ses", 1))
    await backend.send(BASE)

    [body] = seen
    simple = body["Content"]["Simple"]
    assert simple["Headers"] == [{"Name": n, "Value": v} for n, v in BASE.headers]
    assert simple["Body"]["Text"] == {"Data": EXPECTED_TEXT, "Charset": "UTF-8"}
    assert simple["Body"]["Html"] == {"Data": BASE.html, "Charset": "UTF-8"}
    assert body["EmailTags"] == [
        {"Name": "topic", "Value": "spring-sale"},
        {"Name": "request_id", "Value": "42"},
    ]
    assert body["ConfigurationSetName"] == "marketing"


async def test_unverified_sender_is_a_permanent_error(moto_client: SESV2Client) -> None:
    backend = SesBackend(client=moto_client, lane=ThreadLane("ses", 1))
    with pytest.raises(PermanentSendError) as caught:
        await backend.send(outgoing(sender="news@unverified.example"))
    assert caught.value.code == "MessageRejected"
    assert isinstance(caught.value.__cause__, ClientError)


async def test_account_status_when_get_account_is_not_implemented(
    moto_client: SESV2Client,
) -> None:
    backend = SesBackend(client=moto_client, lane=ThreadLane("ses", 1))
    status = await backend.account_status()
    assert status.can_send
    assert status.max_send_rate is None
    assert status.reason.startswith("get_account unavailable:")


# ---------------------------------------------------------------------------------------------
# Against botocore's Stubber: exact requests, SES error responses, GetAccount


async def test_stubbed_send_sends_exactly_the_built_request(
    stubbed: tuple[SesBackend, Stubber],
) -> None:
    backend, stubber = stubbed
    stubber.add_response(
        "send_email",
        {"MessageId": "0100-stub"},
        expected_params=dict(build_send_email_request(BASE)),
    )
    assert await backend.send(BASE) == "0100-stub"


@pytest.mark.parametrize(
    ("code", "status", "message", "kind", "throttled"),
    [
        (
            "TooManyRequestsException",
            429,
            "Maximum sending rate exceeded.",
            TransientSendError,
            True,
        ),
        ("LimitExceededException", 400, "Daily message quota exceeded.", AccountSendError, False),
        ("SendingPausedException", 400, "paused", AccountSendError, False),
        ("MessageRejected", 400, "rejected", PermanentSendError, False),
        ("InternalFailure", 500, "oops", TransientSendError, False),
    ],
)
async def test_stubbed_errors_are_translated_and_counted(
    stubbed: tuple[SesBackend, Stubber],
    code: str,
    status: int,
    message: str,
    kind: type[SendError],
    throttled: bool,
) -> None:
    backend, stubber = stubbed
    stubber.add_client_error(
        "send_email", service_error_code=code, service_message=message, http_status_code=status
    )
    with pytest.raises(kind) as caught:
        await backend.send(BASE)
    assert caught.value.code == code
    assert isinstance(caught.value.__cause__, ClientError)
    stats = backend.statistics()
    assert stats.attempts == 1
    assert stats.sent == 0
    assert (stats.throttled, stats.transient, stats.permanent, stats.account) == (
        int(throttled),
        int(kind is TransientSendError and not throttled),
        int(kind is PermanentSendError),
        int(kind is AccountSendError),
    )


def get_account_response(
    *, enabled: bool = True, enforcement: str = "HEALTHY", rate: float = 14.0
) -> dict[str, Any]:
    return {
        "SendingEnabled": enabled,
        "EnforcementStatus": enforcement,
        "ProductionAccessEnabled": True,
        "DedicatedIpAutoWarmupEnabled": False,
        "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": rate, "SentLast24Hours": 12.0},
    }


@pytest.mark.parametrize(
    ("response", "can_send", "reason"),
    [
        (get_account_response(), True, ""),
        (get_account_response(enabled=False), False, "sending is disabled for the account"),
        (
            get_account_response(enforcement="SHUTDOWN"),
            False,
            "the account's enforcement status is SHUTDOWN",
        ),
        (get_account_response(enforcement="PROBATION"), True, ""),
    ],
)
async def test_account_status_reads_get_account(
    stubbed: tuple[SesBackend, Stubber], response: dict[str, Any], can_send: bool, reason: str
) -> None:
    backend, stubber = stubbed
    stubber.add_response("get_account", response, expected_params={})
    status = await backend.account_status()
    assert (status.can_send, status.max_send_rate, status.reason) == (can_send, 14.0, reason)
    assert status.details["max_24_hour_send"] == "50000.0"
    assert status.details["enforcement_status"] == response["EnforcementStatus"]


@pytest.mark.parametrize(
    ("code", "status", "can_send", "prefix"),
    [
        ("AccessDeniedException", 403, True, "get_account unavailable:"),
        ("BadRequestException", 400, True, "get_account unavailable:"),
        ("TooManyRequestsException", 429, False, "get_account failed:"),
        ("InternalFailure", 500, False, "get_account failed:"),
        ("UnrecognizedClientException", 403, False, "get_account failed:"),
    ],
)
async def test_account_status_when_get_account_fails(
    stubbed: tuple[SesBackend, Stubber], code: str, status: int, can_send: bool, prefix: str
) -> None:
    backend, stubber = stubbed
    stubber.add_client_error("get_account", service_error_code=code, http_status_code=status)
    result = await backend.account_status()
    assert (result.can_send, result.max_send_rate) == (can_send, None)
    assert result.reason.startswith(prefix)
    assert result.details == {"error_code": code}


# ---------------------------------------------------------------------------------------------
# The client factory


def test_build_ses_client_configuration() -> None:
    client = build_ses_client(
        region="eu-west-1",
        pool_size=48,
        connect_timeout=3.0,
        read_timeout=7.0,
        endpoint_url=UNUSED_ENDPOINT,
        access_key_id="testing",
        secret_access_key="testing",
    )
    config: Any = client.meta.config  # botocore-stubs does not type Config's attributes
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    # Validation off (see test_built_requests_satisfy_botocores_model): botocore then uses its
    # bare serializer instead of wrapping it in a ParamValidationDecorator.
    assert not isinstance(client._serializer, ParamValidationDecorator)  # type: ignore[attr-defined]
    assert config.max_pool_connections == 48
    assert (config.connect_timeout, config.read_timeout) == (3.0, 7.0)
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == UNUSED_ENDPOINT
    client.close()


def test_small_pools_keep_botocores_minimum_of_ten() -> None:
    client = build_ses_client(region=REGION, pool_size=2, connect_timeout=1, read_timeout=1)
    config: Any = client.meta.config
    assert config.max_pool_connections == 10
    client.close()


def test_half_given_credentials_are_refused() -> None:
    with pytest.raises(ValueError, match="both access_key_id and secret_access_key"):
        build_ses_client(
            region=REGION, pool_size=1, connect_timeout=1, read_timeout=1, access_key_id="x"
        )


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's HTTP server, shared by the module (stopping it takes half a second)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_SESV2", "AWS_ENDPOINT_URL"])
async def test_endpoint_environment_variable_is_honoured(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, moto_server)
    client = make_client(endpoint_url=None)
    assert client.meta.endpoint_url == moto_server
    backend = SesBackend(client=client, lane=ThreadLane("ses", 2))
    await backend.lane.run(lambda: client.create_email_identity(EmailIdentity="example.com"))

    message_id = await backend.send(BASE)

    sent = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    assert message_id in {message.id for message in sent}
    # moto's server answers GetAccount with a plain 404: treated as "not available".
    status = await backend.account_status()
    assert status.can_send
    assert status.reason.startswith("get_account unavailable:")
    await backend.aclose()


# ---------------------------------------------------------------------------------------------
# botocore must never retry behind the rate limiter


class FailingServer:
    """A local HTTP endpoint that answers every request with one fixed error and counts hits."""

    def __init__(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"message": message}).encode()
        hits: list[str] = []
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hits.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-ErrorType", code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval only makes shutdown() return sooner at the end of the test.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def __enter__(self) -> FailingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.mark.parametrize(
    ("status", "code", "message", "kind"),
    [
        (503, "ServiceUnavailable", "try later", TransientSendError),
        (500, "InternalFailure", "oops", TransientSendError),
        (429, "TooManyRequestsException", "Maximum sending rate exceeded.", TransientSendError),
        (400, "LimitExceededException", "Daily message quota exceeded.", AccountSendError),
    ],
)
async def test_botocore_makes_exactly_one_attempt(
    monkeypatch: pytest.MonkeyPatch, status: int, code: str, message: str, kind: type[SendError]
) -> None:
    # Environment settings that would add retries must not override the explicit config.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("AWS_RETRY_MODE", "legacy")
    with FailingServer(status, code, message) as server:
        client = make_client(server.url)
        backend = SesBackend(client=client, lane=ThreadLane("ses", 1))
        with pytest.raises(kind) as caught:
            await backend.send(BASE)
        await backend.aclose()
    assert caught.value.code == code
    assert server.hits == ["/v2/email/outbound-emails"]


def test_the_counting_server_does_see_retries() -> None:
    """Control for the test above: a client that retries is seen retrying."""
    with FailingServer(503, "ServiceUnavailable", "try later") as server:
        client = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        ).client(
            "sesv2",
            endpoint_url=server.url,
            config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
        )
        with pytest.raises(ClientError):
            client.send_email(**build_send_email_request(BASE))
        client.close()
    assert len(server.hits) == 2


async def test_connection_refused_is_transient() -> None:
    # A bound socket that does not listen refuses connections, and its port cannot be reused.
    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        client = make_client(f"http://127.0.0.1:{port}")
        backend = SesBackend(client=client, lane=ThreadLane("ses", 1))
        with pytest.raises(TransientSendError) as caught:
            await backend.send(BASE)
        await backend.aclose()
    assert caught.value.code == "EndpointConnectionError"
    assert not caught.value.throttled
    assert backend.statistics().transient == 1


# ---------------------------------------------------------------------------------------------
# Closing


async def test_aclose_closes_the_client_in_the_lane(
    shared_client: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real client, its ``close`` replaced to see that ``aclose`` calls it, and in which thread
    (and to leave the module's shared client open)."""
    closed_in: list[str] = []
    monkeypatch.setattr(
        shared_client, "close", lambda: closed_in.append(threading.current_thread().name)
    )
    backend = SesBackend(client=shared_client, lane=ThreadLane("ses", 1))
    await backend.aclose()
    assert len(closed_in) == 1
    assert closed_in[0] != threading.main_thread().name
