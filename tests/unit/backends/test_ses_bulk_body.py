"""The ``SendBulkEmail`` body written by ``orjson`` is the JSON document botocore's own serializer
writes (the same members and values; only spacing and escaping differ, as JSON allows), and it is
what goes on the wire (captured before sending, no network); an answer read by ``orjson`` is what
botocore's parser makes of it, and any answer it would read otherwise is left to the parser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ClientError
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.backends.ses import build_ses_client
from sesender.backends.ses_bulk import build_bulk_request, bulk_key, bulk_template
from sesender.backends.ses_bulk_body import read_answer, string_members
from tests.unit.backends.test_ses_bulk import email, merged_email


class Raw:
    """The smallest raw HTTP body botocore reads an answer from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


class Answer:
    """What a captured call is answered (changed between calls)."""

    status = 200
    body = b'{"BulkEmailEntryResults":[]}'


def client_with_hook(*, hooked: bool = True) -> tuple[Any, list[bytes], Answer]:
    """The service's sesv2 client on a closed port; every body it would send is captured at
    the last moment (``before-send``) and answered as its :class:`Answer` says, without any
    network."""
    client = build_ses_client(
        region="us-east-1",
        pool_size=1,
        connect_timeout=1,
        read_timeout=1,
        endpoint_url="http://127.0.0.1:9",
        access_key_id="testing",
        secret_access_key="testing",
        bulk_body_by_json=hooked,
    )
    bodies: list[bytes] = []
    answer = Answer()

    def capture(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        body = request.body
        bodies.append(body if isinstance(body, bytes) else str(body).encode())
        headers = HTTPHeaders()
        headers["x-amzn-RequestId"] = "request-1"
        headers["Content-Type"] = "application/json"
        return AWSResponse(request.url, answer.status, headers, Raw(answer.body))

    hook: Any = capture  # botocore types its handlers as returning None
    client.meta.events.register("before-send.sesv2", hook)
    return client, bodies, answer


@cache
def shared_client(hooked: bool) -> tuple[Any, list[bytes], Answer]:
    """One client of each kind for the many answers of the property tests (a client takes a
    quarter of a second to build)."""
    return client_with_hook(hooked=hooked)


def bulk_request_for(emails: list[Any]) -> Any:
    shaped = [bulk_key(item) for item in emails]
    assert all(item is not None for item in shaped)
    key = shaped[0][0]  # type: ignore[index]
    template = bulk_template(key)
    assert template is not None
    return build_bulk_request(key, template, emails, [item[1] for item in shaped])  # type: ignore[index]


def botocore_body(client: Any, request: Any) -> bytes:
    serializer = create_serializer("rest-json", include_validation=False)
    model = client.meta.service_model.operation_model("SendBulkEmail")
    body = serializer.serialize_to_request(request, model)["body"]
    assert isinstance(body, bytes)
    return body


@pytest.mark.parametrize(
    "emails",
    [
        [email(1), email(2), email(3)],
        [email(n, recipient=f"Zoë <user{n}@bücher.de>") for n in (4, 5)],
        [email(n, configuration_set=None, pixel=False) for n in (6, 7)],
        [
            merged_email(
                n,
                "Hello {{first_name}}",
                "<html><body><p>Dear {{ first_name }} &amp; co</p></body></html>",
                {"first_name": f"Ada{n}"},
            )
            for n in (8, 9)
        ],
    ],
)
def test_the_bulk_body_is_what_botocore_serializes(emails: list[Any]) -> None:
    client, bodies, _ = client_with_hook()
    request = bulk_request_for(emails)
    entries = len(request["BulkEmailEntries"])
    client.send_bulk_email(**request)
    (body,) = bodies
    # The same document: every member and value, the entries in order, the non-ASCII text too.
    assert json.loads(body) == json.loads(botocore_body(client, request))
    assert json.loads(body)["BulkEmailEntries"] == request["BulkEmailEntries"]
    assert len(request["BulkEmailEntries"]) == entries  # the caller's request is left whole


def test_the_same_document_goes_out_with_and_without_the_hook() -> None:
    request = bulk_request_for([email(1), email(2, recipient="Zoë <zoe@bücher.de>")])
    sent = []
    for hooked in (True, False):
        client, bodies, _ = client_with_hook(hooked=hooked)
        client.send_bulk_email(**request)
        (body,) = bodies
        sent.append(body)
    assert json.loads(sent[0]) == json.loads(sent[1])
    assert sent[0] != sent[1]  # orjson's bytes, not botocore's (else the hook did nothing)


def test_other_operations_are_left_to_botocore() -> None:
    client, bodies, _ = client_with_hook()
    client.send_email(
        FromEmailAddress="news@example.com",
        Destination={"ToAddresses": ["user@example.org"]},
        Content={"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hello"}}}},
    )
    assert len(bodies) == 1
    assert b'"FromEmailAddress"' in bodies[0]
    assert b"Hello" in bodies[0]


# --- the answer ---------------------------------------------------------------------------------

ENTRY_MEMBERS = ("Status", "Error", "MessageId")
#: JSON values botocore reads differently from a string, or not at all.
NOT_STRINGS = st.one_of(
    st.none(), st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=2)
)
ENTRY = st.dictionaries(
    st.sampled_from(ENTRY_MEMBERS),
    st.text(max_size=20),  # any text: quotes, backslashes, control characters, non-ASCII
    max_size=3,
)
ODD_DICT_ENTRY = st.dictionaries(
    st.sampled_from((*ENTRY_MEMBERS, "Unknown", "status")),
    st.one_of(st.text(max_size=5), NOT_STRINGS),
    max_size=4,
)
ANSWERS = st.one_of(
    st.builds(lambda entries: {"BulkEmailEntryResults": entries}, st.lists(ENTRY, max_size=6)),
    st.builds(
        lambda entries: {"BulkEmailEntryResults": entries},
        st.lists(st.one_of(ENTRY, ODD_DICT_ENTRY), max_size=4),
    ),
    st.builds(
        lambda entries: {"BulkEmailEntryResults": entries},
        st.lists(st.one_of(ENTRY, NOT_STRINGS), max_size=3),
    ),
    st.dictionaries(
        st.sampled_from(("BulkEmailEntryResults", "NextToken", "Other")),
        st.one_of(st.lists(ENTRY, max_size=2), NOT_STRINGS),
        max_size=3,
    ),
    NOT_STRINGS,
)


def plain(answer: Any) -> bool:
    """Whether ``answer`` is one :func:`read_answer` takes (the module docstring's rule)."""
    return (
        isinstance(answer, dict)
        and list(answer) == ["BulkEmailEntryResults"]
        and isinstance(answer["BulkEmailEntryResults"], list)
        and all(
            isinstance(entry, dict)
            and set(entry) <= set(ENTRY_MEMBERS)
            and all(isinstance(value, str) for value in entry.values())
            for entry in answer["BulkEmailEntryResults"]
        )
    )


def answer_through(client_hooked: bool, status: int, body: bytes) -> Any:
    """What ``send_bulk_email`` returns for ``body``: the answer, the error's parsed answer, or
    (for some malformed answers) the exception botocore's parser raises."""
    client, _, answer = shared_client(client_hooked)
    answer.status, answer.body = status, body
    try:
        return client.send_bulk_email(**bulk_request_for([email(1)]))
    except ClientError as error:
        return ("error", error.response)
    except (TypeError, AttributeError, ValueError) as error:
        return ("raised", type(error), str(error))


@settings(max_examples=300, deadline=None)
@given(answer=ANSWERS, status=st.sampled_from((200, 200, 200, 400, 500)))
def test_an_answer_reads_as_botocore_reads_it(answer: Any, status: int) -> None:
    body = json.dumps(answer).encode()
    assert answer_through(True, status, body) == answer_through(False, status, body)


@pytest.mark.parametrize(
    "answer",
    [
        {"BulkEmailEntryResults": [{"Status": "SUCCESS", "Error": None, "MessageId": "m-1"}]},
        {"BulkEmailEntryResults": [{"Status": "SUCCESS", "MessageId": 17}]},
        {"BulkEmailEntryResults": [{"Status": "SUCCESS", "Unknown": "x", "MessageId": "m-1"}]},
        {"BulkEmailEntryResults": [{"Status": "SUCCESS"}], "NextToken": "t"},
        {"BulkEmailEntryResults": [{}, {"Status": "FAILED", "Error": "no"}]},
        {"BulkEmailEntryResults": None},
        {"BulkEmailEntryResults": {"Status": "SUCCESS"}},
        {},
        # A lone surrogate, escaped: Python's json reads it, orjson refuses it (left to botocore).
        {"BulkEmailEntryResults": [{"Status": "SUCCESS", "MessageId": "m-\ud800"}]},
    ],
)
def test_an_odd_answer_reads_as_botocore_reads_it(answer: Any) -> None:
    body = json.dumps(answer).encode()
    assert answer_through(True, 200, body) == answer_through(False, 200, body)


@settings(max_examples=300, deadline=None)
@given(answer=ANSWERS, status=st.sampled_from((200, 400, 500)))
def test_only_a_plain_successful_answer_is_taken(answer: Any, status: int) -> None:
    client, _, _ = shared_client(True)
    body = json.dumps(answer).encode()
    response = {"status_code": status, "body": body, "headers": {}}
    customized: dict[str, Any] = {}
    read_answer(response, customized, entry_members=string_members(client))
    if status == 200 and plain(answer):
        assert customized == answer
        assert response["body"] == b"{}"
    else:
        assert customized == {}
        assert response["body"] == body


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b'{"BulkEmailEntryResults":[{"Status":"SUCCESS"}]', b"\xff\xfe"],
)
def test_a_body_that_is_not_json_is_left_to_botocore(body: bytes) -> None:
    client, _, _ = shared_client(True)
    response = {"status_code": 200, "body": body, "headers": {}}
    customized: dict[str, Any] = {}
    read_answer(response, customized, entry_members=string_members(client))
    assert (customized, response["body"]) == ({}, body)


def test_the_members_taken_are_the_models_string_members() -> None:
    client, _, _ = shared_client(True)
    assert string_members(client) == frozenset(ENTRY_MEMBERS)


def test_a_real_answer_is_read_by_the_hook() -> None:
    answer = {
        "BulkEmailEntryResults": [
            {"Status": "SUCCESS", "MessageId": "0100018c-aaaa"},
            {"Status": "MESSAGE_REJECTED", "Error": "Email address is not verified: \u00e9"},
        ]
    }
    body = json.dumps(answer).encode()
    read: list[bytes] = []
    client, _, reply = client_with_hook()
    reply.body = body

    def after_hook(response_dict: dict[str, Any], **_: Any) -> None:
        read.append(response_dict["body"])

    client.meta.events.register_last("before-parse.sesv2.SendBulkEmail", after_hook)
    response = client.send_bulk_email(**bulk_request_for([email(1), email(2)]))
    assert read == [b"{}"]  # botocore's parser saw an empty answer
    assert response["BulkEmailEntryResults"] == answer["BulkEmailEntryResults"]
    assert response["ResponseMetadata"]["RequestId"] == "request-1"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
