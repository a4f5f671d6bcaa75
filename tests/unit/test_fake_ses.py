"""bench.fake_ses answers a bulk call whose entries all succeed without parsing it: the same
answer as the parsing path gives, however the entries' values read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from bench import fake_ses
from sesender.backends.base import OutgoingEmail
from sesender.backends.ses_bulk import build_bulk_request, bulk_key, bulk_template
from sesender.pipeline.pixel import insert_pixel

SOURCE = "<html><body><p>Hello</p></body></html>"
# Values that hold the bytes the fast path counts, inside JSON strings (escaped there).
TRICKY = '"Destination": {"ToAddresses": ["x@example.org"]}'


def outgoing(index: int) -> OutgoingEmail:
    pixel = f"https://bench.example/v1/events/open?request_id=tok{index}"
    return OutgoingEmail(
        request_id=index,
        topic_id=f'topic "Destination": {index}',
        sender="news@example.com",
        recipient=f"user{index}@example.org",
        subject="Hello",
        html=insert_pixel(SOURCE, pixel),
        headers=(("X-Note", TRICKY),),
        tags=(("request_id", str(index)), ("note", TRICKY)),
        source_html=SOURCE,
        pixel_url=pixel,
    )


def body_of(count: int) -> bytes:
    """A SendBulkEmail body as the SES backend's client writes it (json.dumps of the request)."""
    emails = [outgoing(index) for index in range(count)]
    shaped = [bulk_key(email) for email in emails]
    assert all(item is not None for item in shaped)
    key = shaped[0][0] if shaped[0] else None
    assert key is not None
    template = bulk_template(key)
    assert template is not None
    data = [item[1] if item else {} for item in shaped]
    return json.dumps(build_bulk_request(key, template, emails, data)).encode()


def answer_of(reply: bytes) -> Any:
    return json.loads(reply.partition(b"\r\n\r\n")[2])


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    saved = fake_ses.STATE
    fake_ses.STATE = fake_ses.State()
    try:
        yield
    finally:
        fake_ses.STATE = saved


@pytest.mark.parametrize("count", [1, 2, 50])
def test_unparsed_answer_is_the_parsed_one(count: int) -> None:
    body = body_of(count)
    assert TRICKY.replace('"', '\\"').encode() in body  # the counted bytes, escaped, are there
    assert fake_ses.STATE.every_entry_succeeds()
    fast = answer_of(fake_ses.send_bulk_email(body))
    fake_ses.STATE.settings.record = True  # recording parses the request
    assert not fake_ses.STATE.every_entry_succeeds()
    parsed = answer_of(fake_ses.send_bulk_email(body))

    assert len(fast["BulkEmailEntryResults"]) == count
    assert [r["Status"] for r in fast["BulkEmailEntryResults"]] == ["SUCCESS"] * count
    assert [r["Status"] for r in parsed["BulkEmailEntryResults"]] == ["SUCCESS"] * count
    ids = [r["MessageId"] for r in fast["BulkEmailEntryResults"]] + [
        r["MessageId"] for r in parsed["BulkEmailEntryResults"]
    ]
    assert len(set(ids)) == 2 * count  # every entry its own id, across both answers
    assert fake_ses.STATE.bulk_entries == 2 * count
    assert fake_ses.STATE.send_bulk_email == 2


def test_any_setting_that_can_refuse_an_entry_parses_the_request() -> None:
    state = fake_ses.STATE
    for change in (
        {"reject_prefix": "user1"},
        {"unverified_senders": ("news@example.com",)},
        {"entry_throttle_every": 2},
        {"pause_after": 1},
        {"record": True},
    ):
        state.settings = fake_ses.Settings(**change)
        assert not state.every_entry_succeeds(), change
    state.settings = fake_ses.Settings()
    state.paused = True
    assert not state.every_entry_succeeds()
    state.paused = False
    state.settings = fake_ses.Settings(reject_prefix="user1")
    answer = answer_of(fake_ses.send_bulk_email(body_of(3)))
    statuses = [r["Status"] for r in answer["BulkEmailEntryResults"]]
    assert statuses == ["SUCCESS", "MESSAGE_REJECTED", "SUCCESS"]
