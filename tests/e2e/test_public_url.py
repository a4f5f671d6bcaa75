"""With the SES backend, a SERVER_URL that no recipient can reach stops the start (exit code 2).

Every email carries a tracking pixel and a one-click unsubscribe link built from ``SERVER_URL``;
the default ``http://localhost:PORT`` would put dead links into every real email. The SES
endpoint is a moto server on loopback; only ``SERVER_URL`` is what is checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html import unescape

import pytest

from tests.e2e.harness import ServiceProcess, submit, wait_for, wait_topic
from tests.e2e.sns_support import SENDER, MotoSes
from tests.e2e.sns_support import moto_ses as start_moto_ses

pytestmark = pytest.mark.e2e

PIXEL = re.compile(r'<img src="([^"]+)"')


@pytest.fixture
def moto_ses() -> Iterator[MotoSes]:
    with start_moto_ses(identity=SENDER.split("@")[1]) as server:
        yield server


@pytest.mark.parametrize("server_url", ["", "http://localhost:3000", "http://127.0.0.1:8080"])
def test_a_loopback_or_missing_server_url_is_a_configuration_error(
    start_service: Callable[..., ServiceProcess], moto_ses: MotoSes, server_url: str
) -> None:
    service = start_service(wait=False, **moto_ses.service_env(SERVER_URL=server_url))
    assert service.wait(timeout=30) == 2
    assert service.raw_lines[0] == "sesender: invalid configuration:"
    (problem,) = [line for line in service.raw_lines if "SERVER_URL" in line]
    assert "SENDER_BACKEND=ses" in problem
    assert "OPEN_TRACKING_ENABLED, TRACK_CLICKS and UNSUBSCRIBE_ENABLED" in problem
    assert service.find("listening") is None


def test_with_tracking_and_unsubscribe_off_no_server_url_is_needed(
    start_service: Callable[..., ServiceProcess], moto_ses: MotoSes
) -> None:
    service = start_service(
        **moto_ses.service_env(
            SERVER_URL="", OPEN_TRACKING_ENABLED="false", UNSUBSCRIBE_ENABLED="false"
        )
    )
    with service.client() as client:
        submit(client, topic="plain", emails=["plain@example.org"], content="<p>plain</p>")
        wait_topic(client, "plain", count=1, timeout=30)
    (message,) = moto_ses.messages()
    assert message["body"] == "<p>plain</p>"  # no pixel
    assert service.stop() == 0


def test_a_public_server_url_starts_and_goes_into_the_links(
    start_service: Callable[..., ServiceProcess], moto_ses: MotoSes
) -> None:
    public = "https://mail.example.com"
    service = start_service(**moto_ses.service_env(SERVER_URL=public))
    with service.client() as client:
        submit(client, topic="public", emails=["public@example.org"])
        wait_topic(client, "public", count=1, timeout=30)
    message = wait_for(lambda: moto_ses.messages(), timeout=10, what="the SES send")[0]
    match = PIXEL.search(message["body"])
    assert match is not None
    assert unescape(match.group(1)).startswith(f"{public}/v1/events/open?request_id=")
    start = service.find("start")
    assert start is not None
    assert start["settings"]["server_url"] == public
    assert service.stop() == 0
