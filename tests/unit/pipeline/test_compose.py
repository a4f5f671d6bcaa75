"""The composer's switches: the open-tracking pixel and the one-click unsubscribe headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sesender.config import load_config
from sesender.models import ClaimedEmail, Content
from sesender.pipeline.compose import MessageComposer
from sesender.tracking import TokenSigner

SIGNER = TokenSigner(b"k" * 32)
BODY = "<html><body><p>Hi</p></body></html>"
EMAIL = ClaimedEmail(
    request_id=12, topic_id="t", email="a@example.org", content=Content("s", BODY), attempts=0
)


def composer(*, open_tracking: bool, unsubscribe: bool) -> MessageComposer:
    return MessageComposer(
        sender="news@example.com",
        public_url="https://mail.example.com",
        signer=SIGNER,
        configuration_set=None,
        unsubscribe_enabled=unsubscribe,
        open_tracking_enabled=open_tracking,
    )


def test_the_pixel_is_there_by_default_and_verifies() -> None:
    html = composer(open_tracking=True, unsubscribe=False).compose(EMAIL).html
    token = SIGNER.sign("open", 12)
    assert f'src="https://mail.example.com/v1/events/open?request_id={token}"' in html
    assert html.endswith("</body></html>")


def test_open_tracking_off_sends_the_body_untouched() -> None:
    outgoing = composer(open_tracking=False, unsubscribe=True).compose(EMAIL)
    assert outgoing.html == BODY
    assert "/v1/events/open" not in outgoing.html
    headers = dict(outgoing.headers)
    token = SIGNER.sign("unsubscribe", 12)
    assert headers["List-Unsubscribe"] == f"<https://mail.example.com/v1/unsubscribe?token={token}>"


# -- merge fields ---------------------------------------------------------------------------------

TEMPLATE = Content(
    "Hi {{ name }}",
    '<html><body><p>{{name}}</p><a href="{{ unsubscribe_url }}">stop</a> {{email}}</body></html>',
)


def test_a_template_is_rendered_per_recipient_and_keeps_its_parts() -> None:
    claimed = ClaimedEmail(12, "t", "a@example.org", TEMPLATE, 0, data={"name": "<Ada & Co>"})
    outgoing = composer(open_tracking=True, unsubscribe=True).compose(claimed)
    unsubscribe_url = (
        f"https://mail.example.com/v1/unsubscribe?token={SIGNER.sign('unsubscribe', 12)}"
    )
    assert outgoing.subject == "Hi <Ada & Co>"
    rendered = (
        "<html><body><p>&lt;Ada &amp; Co&gt;</p>"
        f'<a href="{unsubscribe_url}">stop</a> a@example.org</body></html>'
    )
    assert outgoing.source_html == rendered
    assert outgoing.pixel_url is not None
    assert outgoing.html.startswith(rendered.removesuffix("</body></html>"))
    assert f'src="{outgoing.pixel_url}"' in outgoing.html
    assert dict(outgoing.headers)["List-Unsubscribe"] == f"<{unsubscribe_url}>"
    assert outgoing.merge is not None
    assert (outgoing.merge.subject, outgoing.merge.html) == (TEMPLATE.subject, TEMPLATE.body)
    assert outgoing.merge.values == {
        "name": "<Ada & Co>",
        "email": "a@example.org",
        "unsubscribe_url": unsubscribe_url,
    }


def test_content_that_is_not_a_template_is_sent_as_given_braces_included() -> None:
    claimed = ClaimedEmail(12, "t", "a@example.org", TEMPLATE, 0)
    outgoing = composer(open_tracking=False, unsubscribe=False).compose(claimed)
    assert (outgoing.subject, outgoing.html) == (TEMPLATE.subject, TEMPLATE.body)
    assert outgoing.merge is None
    assert outgoing.pixel_url is None


@pytest.mark.parametrize("flags", [("true", "false"), ("false", "true")])
def test_from_config_reads_every_setting_a_composed_email_depends_on(
    tmp_path: Path, flags: tuple[str, str]
) -> None:
    unsubscribe, open_tracking = flags
    config = load_config(
        {
            "DATABASE_PATH": str(tmp_path / "db"),
            "SENDER_BACKEND": "memory",
            "AWS_SES_FROM_EMAIL": "News <news@example.com>",
            "AWS_SES_CONFIGURATION_SET": "bulk-set",
            "SERVER_URL": "https://mail.example.test",
            "UNSUBSCRIBE_ENABLED": unsubscribe,
            "OPEN_TRACKING_ENABLED": open_tracking,
        }
    )
    signer = TokenSigner(b"k" * 32)
    composer = MessageComposer.from_config(config, signer)
    assert composer == MessageComposer(
        sender="News <news@example.com>",
        public_url="https://mail.example.test",
        signer=signer,
        configuration_set="bulk-set",
        unsubscribe_enabled=unsubscribe == "true",
        open_tracking_enabled=open_tracking == "true",
    )
