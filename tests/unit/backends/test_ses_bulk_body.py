"""The ``SendBulkEmail`` body written by ``orjson`` is the JSON document botocore's own serializer
writes (the same members and values; only spacing and escaping differ, as JSON allows), and it is
what goes on the wire (captured before sending, no network)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.serialize import create_serializer

from sesender.backends.ses import build_ses_client
from sesender.backends.ses_bulk import build_bulk_request, bulk_key, bulk_template
from tests.unit.backends.test_ses_bulk import email, merged_email


class Raw:
    """The smallest raw HTTP body botocore reads an answer from."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def client_with_hook(*, hooked: bool = True) -> tuple[Any, list[bytes]]:
    """The service's sesv2 client on a closed port; every body it would send is captured at
    the last moment (``before-send``) and answered without any network."""
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

    def capture(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        body = request.body
        bodies.append(body if isinstance(body, bytes) else str(body).encode())
        return AWSResponse(request.url, 200, HTTPHeaders(), Raw(b'{"BulkEmailEntryResults":[]}'))

    hook: Any = capture  # botocore types its handlers as returning None
    client.meta.events.register("before-send.sesv2", hook)
    return client, bodies


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
    client, bodies = client_with_hook()
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
        client, bodies = client_with_hook(hooked=hooked)
        client.send_bulk_email(**request)
        (body,) = bodies
        sent.append(body)
    assert json.loads(sent[0]) == json.loads(sent[1])
    assert sent[0] != sent[1]  # orjson's bytes, not botocore's (else the hook did nothing)


def test_other_operations_are_left_to_botocore() -> None:
    client, bodies = client_with_hook()
    client.send_email(
        FromEmailAddress="news@example.com",
        Destination={"ToAddresses": ["user@example.org"]},
        Content={"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "Hello"}}}},
    )
    assert len(bodies) == 1
    assert b'"FromEmailAddress"' in bodies[0]
    assert b"Hello" in bodies[0]
