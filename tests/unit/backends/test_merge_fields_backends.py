"""A templated email reads the same whichever backend sends it: memory, outbox and SES single.

Compose renders the merge fields once; each backend then builds its message from the same
``OutgoingEmail``. This compares what each would deliver, part by part (subject, HTML, text), for
values chosen to break a careless renderer: markup, quotes, ampersands, line breaks, non-ASCII.
"""

from __future__ import annotations

import email
import email.message
from email import policy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import ThreadLane
from sesender.backends import MemoryBackend, OutboxBackend, text
from sesender.backends.ses import build_send_email_request
from sesender.backends.text import text_part
from sesender.models import ClaimedEmail, Content
from sesender.pipeline.compose import MessageComposer
from sesender.tracking import TokenSigner

COMPOSER = MessageComposer(
    sender="News <news@example.com>",
    public_url="https://mail.example.com",
    signer=TokenSigner(b"k" * 32),
    configuration_set=None,
    unsubscribe_enabled=True,
)
TEMPLATE = Content(
    "Hello {{ name }}, about {{topic}}",
    "<html><body><h1>Dear {{name}}</h1><p title='{{ topic }}'>News on {{topic}}</p>"
    '<p><a href="{{unsubscribe_url}}">Unsubscribe</a> ({{email}})</p></body></html>',
)
HOSTILE = [
    ("Ada", "plans"),
    ("<script>alert(1)</script>", "a & b"),
    ("\"quoted\" 'single'", "</p><img src=x onerror=alert(1)>"),
    ("Zoë \U0001f600", "tab\tand  two spaces"),
    ("&amp; already escaped", "{{name}}"),
]
SUBJECT_SAFE = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40
).filter(lambda value: value.strip() == value and value.strip())


def outbox_parts(directory: Path) -> tuple[str, str, str]:
    (path,) = list(directory.iterdir())
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    html = message.get_body(preferencelist=("html",))
    text = message.get_body(preferencelist=("plain",))
    assert html is not None
    assert text is not None
    path.unlink()
    return str(message["Subject"]), html.get_content().rstrip("\n"), text.get_content().rstrip("\n")


async def delivered(name: str, topic: str, outbox: Path) -> dict[str, tuple[str, str, str]]:
    claimed = ClaimedEmail(
        7, "t", "ada@example.org", TEMPLATE, 0, data={"name": name, "topic": topic}
    )
    outgoing = COMPOSER.compose(claimed)
    memory = MemoryBackend()
    await memory.send(outgoing)
    (record,) = memory.sent
    writer = OutboxBackend(directory=outbox, lane=ThreadLane("outbox", 1))
    try:
        await writer.send(outgoing)
    finally:
        await writer.aclose()
    simple = build_send_email_request(outgoing)["Content"]["Simple"]
    return {
        "memory": (record.email.subject, record.email.html, text_part(record.email)),
        "outbox": outbox_parts(outbox),
        "ses": (
            simple["Subject"]["Data"],
            simple["Body"]["Html"]["Data"],
            simple["Body"]["Text"]["Data"],
        ),
    }


@pytest.mark.parametrize(("name", "topic"), HOSTILE)
async def test_every_backend_delivers_the_same_parts(name: str, topic: str, tmp_path: Path) -> None:
    parts = await delivered(name, topic, tmp_path / "outbox")
    assert parts["memory"] == parts["outbox"] == parts["ses"]
    subject, html, text = parts["ses"]
    assert subject == f"Hello {name}, about {topic}"
    assert "<script>" not in html
    assert "onerror=alert(1)>" not in html
    assert f"Dear {' '.join(name.split())}" in text  # the text part reads the plain value


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=SUBJECT_SAFE, topic=SUBJECT_SAFE)
async def test_arbitrary_values_read_the_same_everywhere(
    name: str, topic: str, tmp_path: Path
) -> None:
    parts = await delivered(name, topic, tmp_path / f"outbox-{abs(hash((name, topic)))}")
    assert parts["memory"] == parts["outbox"] == parts["ses"]
    assert parts["ses"][0] == f"Hello {name}, about {topic}"


def test_templated_emails_do_not_evict_shared_contents_from_the_text_cache() -> None:
    plain = COMPOSER.compose(
        ClaimedEmail(1, "t", "a@example.org", Content("s", "<p>plain content</p>"), 0)
    )
    assert text_part(plain) == "plain content"
    before = text._cached_text.cache_info()
    for n in range(2 * text.TEXT_CACHE_SIZE):
        claimed = ClaimedEmail(n + 2, "t", "b@example.org", TEMPLATE, 0, data={"name": str(n)})
        templated = COMPOSER.compose(claimed)
        assert f"Dear {n}" in text_part(templated)
    assert text._cached_text.cache_info().currsize == before.currsize
    assert text_part(plain) == "plain content"
    assert text._cached_text.cache_info().hits == before.hits + 1
