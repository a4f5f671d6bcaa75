"""The SSRF guard: refused addresses at creation and at connection time (DNS rebinding), no
redirects followed, answers read only up to a limit, one deadline per attempt.

The connection-time tests post through the real httpx client and guarded transport to a receiver
on loopback; names are resolved by an injected resolver, so "a public name that later resolves
to loopback" is exactly scripted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from sesender.webhooks.guard import AddressPolicy, address_problem, url_problem
from sesender.webhooks.models import DeliveryTarget, PendingEvent
from sesender.webhooks.poster import WebhookPoster
from tests.e2e.webhook_support import Behaviour, WebhookReceiver

SECRET = "whsec_" + "QUJD" * 8


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("169.254.10.10", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("100.64.0.1", "not a public unicast address"),
        ("0.0.0.0", "a private address"),
        ("224.0.0.1", "not a public unicast address"),
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_address_problems(address: str, problem: str | None) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


def resolver(table: dict[str, list[list[str]]]) -> AddressPolicy:
    """A policy (private addresses refused) resolving each name to its next scripted answer."""

    async def resolve(host: str, port: int) -> list[str]:
        answers = table[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return AddressPolicy(allow_private=False, resolve=resolve)


async def test_url_checks_at_creation() -> None:
    policy = resolver(
        {
            "hooks.example.com": [["93.184.216.34"]],
            "inside.example.com": [["10.1.2.3"]],
            "mixed.example.com": [["93.184.216.34", "127.0.0.1"]],
        }
    )
    assert await url_problem("https://hooks.example.com/x", policy) is None
    assert await url_problem("https://93.184.216.34:8443/x", policy) is None
    refused = {
        "https://inside.example.com/": "inside.example.com resolves to 10.1.2.3, a private",
        "https://mixed.example.com/": "resolves to 127.0.0.1, a loopback address",
        "http://169.254.169.254/latest/": "169.254.169.254 is a cloud metadata address",
        "http://[::1]:8080/": "::1 is a loopback address",
        "gopher://hooks.example.com/": "http or https",
        "https:///nohost": "must name a host",
        "https://a:b@hooks.example.com/": "credentials",
        "https://hooks.example.com:99999/": "not a valid URL",
    }
    for url, reason in refused.items():
        problem = await url_problem(url, policy)
        assert problem is not None, url
        assert reason in problem, (url, problem)
    loopback = AddressPolicy(allow_private=True, resolve=policy.resolve)
    assert await url_problem("http://127.0.0.1:9/", loopback) is None


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def event() -> PendingEvent:
    return PendingEvent(
        row_id=1,
        event_id="evt_1",
        endpoint_id="ep_1",
        event_type="email.sent",
        request_id=7,
        topic_id="t",
        email="a@example.com",
        message_id="m-7",
        suppressed=None,
        detail=None,
        occurred_at_ms=1_768_471_200_000,
        attempts=0,
    )


async def post(
    policy: AddressPolicy, url: str, *, deadline: float = 5.0
) -> tuple[int | None, str | None]:
    poster = WebhookPoster(policy=policy, timeout=deadline, max_response_bytes=1024)
    try:
        result = await poster.post(DeliveryTarget("ep_1", url, (SECRET,)), event())
    finally:
        await poster.aclose()
    return result.status_code, result.error


async def test_dns_rebinding_is_refused_at_connection_time(receiver: WebhookReceiver) -> None:
    receiver.secrets["/hook"] = SECRET
    port = receiver.url("/hook").rsplit(":", 1)[1].split("/")[0]
    url = f"http://rebind.example.com:{port}/hook"
    policy = resolver({"rebind.example.com": [["93.184.216.34"], ["127.0.0.1"]]})
    assert await url_problem(url, policy) is None  # public when the endpoint was created
    status, error = await post(policy, url)  # loopback when it is delivered to
    assert status is None
    assert error is not None
    assert "rebind.example.com resolves to 127.0.0.1, a loopback address" in error
    assert receiver.posts == {}  # no connection was made


async def test_a_loopback_literal_is_refused_at_connection_time(receiver: WebhookReceiver) -> None:
    status, error = await post(AddressPolicy(allow_private=False), receiver.url("/hook"))
    assert status is None
    assert error is not None
    assert "127.0.0.1 is a loopback address" in error
    assert receiver.posts == {}


async def test_redirects_are_not_followed(receiver: WebhookReceiver) -> None:
    receiver.secrets["/target"] = SECRET
    receiver.behaviours["/hook"] = Behaviour(redirect_to="http://169.254.169.254/latest/meta-data")
    receiver.behaviours["/local"] = Behaviour(redirect_to=receiver.url("/target"))
    allowed = AddressPolicy(allow_private=True)
    for path in ("/hook", "/local"):
        status, error = await post(allowed, receiver.url(path))
        assert status == 302
        assert error == "HTTP 302: redirects are not followed"
    assert receiver.posts["/target"] == 0
    assert receiver.received("/target") == []


async def test_a_delivery_verifies_and_an_error_answer_is_kept_short(
    receiver: WebhookReceiver,
) -> None:
    allowed = AddressPolicy(allow_private=True)
    receiver.secrets["/hook"] = SECRET
    assert await post(allowed, receiver.url("/hook")) == (204, None)
    (delivery,) = receiver.received("/hook")
    assert delivery.event_id == "evt_1"
    assert delivery.payload["data"]["request_id"] == 7
    receiver.behaviours["/fail"] = Behaviour(failures=1, failure_status=503)
    receiver.secrets["/fail"] = SECRET
    status, error = await post(allowed, receiver.url("/fail"))
    assert status == 503
    assert error == "HTTP 503: receiver is failing on purpose"


async def test_one_deadline_bounds_an_attempt(receiver: WebhookReceiver) -> None:
    receiver.behaviours["/hang"] = Behaviour(hang=True)
    status, error = await post(
        AddressPolicy(allow_private=True), receiver.url("/hang"), deadline=0.2
    )
    assert status is None
    assert error == "timed out after 0.2 s"
