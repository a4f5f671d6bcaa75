"""The SES feedback loop end to end: signed SNS messages posted to the running service.

The service runs as a process (the console script). SES is moto's server on 127.0.0.1, so the
SES message ids the events refer to are real ``SendEmail`` answers. The SNS messages are minted
with the test key and point their ``SigningCertURL`` at a loopback server serving the test
certificate; ``SNS_CERT_URL_PATTERN`` admits that server (and a fake ``SubscribeURL`` beside it),
and nothing else.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ServiceProcess, message_details, submit, wait_for, wait_topic
from tests.e2e.sns_support import (
    CERT_PATH,
    LOOPBACK_PATTERN,
    TOPIC_ARN,
    LoopbackServer,
    MotoSes,
    SesFormat,
    SesKind,
    SnsMinter,
    SubscribeScript,
    envelope_of,
    flip_signature,
    forge,
    moto_ses,
    post_sns,
    running_service,
    subscribe_endpoint,
    subscribe_url,
)

pytestmark = pytest.mark.e2e

API_KEY = "e2e-feedback-key"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoSes]:
    with moto_ses() as server:
        yield server


@pytest.fixture(scope="module")
def ses_service(
    moto: MotoSes, cert_server: LoopbackServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The service sending through moto; tests use their own topics and addresses."""
    with running_service(
        tmp_path_factory.mktemp("ses-service"), **moto.service_env(**feedback_env())
    ) as service:
        yield service


@pytest.fixture(scope="module")
def memory_service(
    cert_server: LoopbackServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """The service with the memory backend, for the subscription tests."""
    with running_service(
        tmp_path_factory.mktemp("memory-service"), **feedback_env(SENDER_BACKEND="memory")
    ) as service:
        yield service


def feedback_env(**overrides: str) -> dict[str, str]:
    env = {
        "API_KEY": API_KEY,
        "SNS_CERT_URL_PATTERN": LOOPBACK_PATTERN,
        "MAX_SEND_PER_SECOND": "100",
        "HTTP_READ_TIMEOUT_SECONDS": "3",
    }
    env.update(overrides)
    return env


def anonymous(service: ServiceProcess, *, keep_alive: bool = False) -> httpx.Client:
    """A client with no API key, as SNS is. A new connection per request unless
    ``keep_alive``: reusing a connection after a refusal is the subject of its own test."""
    return httpx.Client(
        base_url=service.url,
        timeout=5 if keep_alive else 30,
        limits=httpx.Limits(max_keepalive_connections=None if keep_alive else 0),
    )


def suppressed(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/suppressions", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return {entry["email"]: entry for entry in response.json()["suppressions"]}


def result_counts(client: httpx.Client, topic: str) -> dict[str, int]:
    response = client.get(f"/v1/topics/{topic}")
    assert response.status_code == 200, response.text
    counts: dict[str, int] = response.json()["result_counts"]
    return counts


def events_of(client: httpx.Client, request_id: int) -> dict[str, dict[str, Any]]:
    response = client.get(f"/v1/messages/{request_id}")
    assert response.status_code == 200, response.text
    return {event["type"]: event for event in response.json()["events"]}


def send_and_wait(client: httpx.Client, topic: str, emails: list[str]) -> dict[str, dict[str, Any]]:
    """Submit ``emails`` to ``topic`` and wait until all are Sent; return each email's details
    (``request_id``, the SES ``message_id``...)."""
    ids = submit(client, topic=topic, emails=emails)
    wait_topic(client, topic, count=len(emails), timeout=30)
    details = {detail["email"]: detail for detail in message_details(client, ids)}
    assert all(detail["message_id"] for detail in details.values()), details
    return details


def test_ses_events_in_both_formats_are_counted_and_suppress_later_sends(
    ses_service: ServiceProcess, moto: MotoSes, minter: SnsMinter, cert_server: LoopbackServer
) -> None:
    service = ses_service
    plan: dict[str, tuple[SesKind, SesFormat]] = {
        # recipient: (SES event kind, SNS message format)
        "hard-notify@example.org": ("bounce", "notification"),
        "hard-event@example.org": ("bounce", "event"),
        "angry-notify@example.org": ("complaint", "notification"),
        "angry-event@example.org": ("complaint", "event"),
        "happy-notify@example.org": ("delivery", "notification"),
        "happy-event@example.org": ("delivery", "event"),
    }
    recipients = list(plan)
    certificate_hits = cert_server.hits(CERT_PATH)
    with service.client() as client, anonymous(service) as sns:
        ids = submit(client, topic="feedback", emails=recipients)
        wait_topic(client, "feedback", count=len(recipients), timeout=30)
        details = {d["email"]: d for d in message_details(client, ids)}
        sent_counts = moto.count_to()
        for email, detail in details.items():
            assert detail["status"] == "Sent"
            # The stored id is the one moto's SendEmail answered for this recipient.
            assert sent_counts.get(email) == 1, (email, sent_counts)
        assert {m["id"] for m in moto.messages()} >= {d["message_id"] for d in details.values()}

        for email, (kind, fmt) in plan.items():
            body = minter.ses_notification(
                kind,
                fmt,
                ses_message_id=details[email]["message_id"],
                recipient=email,
            )
            response = post_sns(sns, body)
            assert response.status_code == 200, (email, response.text)
            assert response.json()["result"] == "recorded", (email, response.json())

        # One certificate download for all six messages (cached by URL).
        assert cert_server.hits(CERT_PATH) - certificate_hits <= 1

        counts = result_counts(client, "feedback")
        assert counts["Bounce"] == 2
        assert counts["Complaint"] == 2
        assert counts["Delivery"] == 2
        assert counts["Open"] == 0

        bounce = events_of(client, details["hard-notify@example.org"]["request_id"])["Bounce"]
        assert bounce["count"] == 1
        assert "5.1.1" in bounce["detail"]
        assert "hard-notify@example.org" in bounce["detail"]
        assert set(events_of(client, details["angry-event@example.org"]["request_id"])) == {
            "Complaint"
        }

        entries = suppressed(client)
        for email, (kind, _) in plan.items():
            if kind == "delivery":
                assert email not in entries
            else:
                assert entries[email]["reason"] == kind, entries[email]
        # The SNS MessageId that caused it is recorded as the source.
        assert entries["hard-event@example.org"]["source"]

        # A new submission to every address: the suppressed four never reach SES again.
        before = moto.count_to()
        again = submit(client, topic="feedback-again", emails=recipients)
        final = wait_topic(client, "feedback-again", status="Suppressed", count=4, timeout=30)
        final = wait_topic(client, "feedback-again", status="Sent", count=2, timeout=30)
        assert final["Suppressed"] == 4
        assert final["Sent"] == 2
        statuses = {d["email"]: d["status"] for d in message_details(client, again)}
        for email, (kind, _) in plan.items():
            assert statuses[email] == ("Sent" if kind == "delivery" else "Suppressed"), statuses
        after = moto.count_to()
        for email, (kind, _) in plan.items():
            expected = before[email] + (1 if kind == "delivery" else 0)
            assert after.get(email, 0) == expected, (email, before, after)


def test_replays_forgeries_malformed_bodies_and_unknown_ids(
    ses_service: ServiceProcess, minter: SnsMinter
) -> None:
    service = ses_service
    with service.client() as client, anonymous(service) as sns:
        details = send_and_wait(client, "replay", ["twice@example.org", "forged@example.org"])
        ses_ids = {email: detail["message_id"] for email, detail in details.items()}
        body = minter.ses_notification(
            "bounce",
            "notification",
            ses_message_id=ses_ids["twice@example.org"],
            recipient="twice@example.org",
        )

        # SNS delivers at least once: the same MessageId again is acknowledged, counted once.
        first = post_sns(sns, body)
        assert first.status_code == 200, first.text
        assert first.json()["result"] == "recorded"
        replay = post_sns(sns, body)
        assert replay.status_code == 200, replay.text
        assert replay.json()["result"] == "duplicate"
        assert result_counts(client, "replay")["Bounce"] == 1
        twice = details["twice@example.org"]["request_id"]
        assert events_of(client, twice)["Bounce"]["count"] == 1

        # Forgeries: a changed signed field, or a changed signature -> 403, nothing stored.
        genuine = minter.ses_notification(
            "complaint",
            "event",
            ses_message_id=ses_ids["forged@example.org"],
            recipient="forged@example.org",
        )
        altered_message = envelope_of(
            minter.ses_notification(
                "complaint",
                "event",
                ses_message_id=ses_ids["forged@example.org"],
                recipient="victim@example.org",
            )
        )["Message"]
        for forged in (
            flip_signature(genuine),
            forge(genuine, Message=altered_message),
            forge(genuine, MessageId="00000000-0000-0000-0000-000000000000"),
            forge(genuine, TopicArn="arn:aws:sns:us-east-1:123456789012:other"),
        ):
            response = post_sns(sns, forged)
            assert response.status_code == 403, response.text
            assert response.json() == {"error": "SNS message verification failed"}
        entries = suppressed(client)
        assert "forged@example.org" not in entries
        assert "victim@example.org" not in entries
        assert result_counts(client, "replay").get("Complaint", 0) == 0

        # A certificate URL outside the allowed pattern is refused without fetching it.
        elsewhere = SnsMinter("http://127.0.0.2:9/" + CERT_PATH.lstrip("/")).ses_notification(
            "complaint",
            "notification",
            ses_message_id=ses_ids["forged@example.org"],
            recipient="forged@example.org",
        )
        assert post_sns(sns, elsewhere).status_code == 403

        # Malformed bodies and headers -> 400, nothing stored.
        for bad_body in (b"", b"not json", b"[]", b'{"Type": "Notification"}', b"\xff\xfe"):
            response = post_sns(sns, bad_body)
            assert response.status_code == 400, (bad_body, response.text)
            assert "error" in response.json()
        missing_header = post_sns(sns, genuine, message_type=None)
        assert missing_header.status_code == 400
        assert missing_header.json() == {"error": "Missing x-amz-sns-message-type header"}
        contradicting = post_sns(sns, genuine, message_type="SubscriptionConfirmation")
        assert contradicting.status_code == 400
        assert "forged@example.org" not in suppressed(client)

        # The genuine message itself still goes through (none of the refusals consumed it).
        accepted = post_sns(sns, genuine)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["result"] == "recorded"
        assert suppressed(client)["forged@example.org"]["reason"] == "complaint"

        # An event for an SES message sesender never sent: 200 (SNS must not retry) and logged.
        unknown = minter.ses_notification(
            "delivery",
            "event",
            ses_message_id="0100000000000000-unknown-000000",
            recipient="stranger@example.org",
        )
        response = post_sns(sns, unknown)
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "unknown_message"
        wait_for(
            lambda: service.find("ses_event_unknown"), timeout=5, what="the unknown-id log line"
        )
        assert "stranger@example.org" not in suppressed(client)

        # An event whose SES message id is not stored (yet) is matched by sesender's own tag.
        tagged = minter.ses_notification(
            "delivery",
            "event",
            ses_message_id="0100000000000000-not-stored-yet-000000",
            recipient="twice@example.org",
            tags={"sesender_request_id": [str(twice)], "sesender_topic": ["replay"]},
        )
        response = post_sns(sns, tagged)
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "recorded"
        assert result_counts(client, "replay")["Delivery"] == 1
        assert set(events_of(client, twice)) == {"Bounce", "Delivery"}

        # A notification that is not an SES event at all is acknowledged and ignored.
        hello = post_sns(sns, minter.notification("hello"))
        assert hello.status_code == 200
        assert hello.json()["result"] == "ignored"


def test_an_acknowledged_event_survives_sigkill(
    start_service: Callable[..., ServiceProcess], minter: SnsMinter
) -> None:
    env = feedback_env(SENDER_BACKEND="memory")
    service = start_service(**env)
    emails = [f"durable{n}@example.org" for n in range(8)]
    with service.client() as client:
        details = send_and_wait(client, "durable", emails)
    bodies = [
        minter.ses_notification(
            "bounce" if n % 2 else "delivery",
            "event" if n % 4 < 2 else "notification",
            ses_message_id=details[email]["message_id"],
            recipient=email,
        )
        for n, email in enumerate(emails)
    ]

    def post(body: bytes) -> int:
        with anonymous(service) as sns:
            return post_sns(sns, body).status_code

    # Concurrent posts (they share group commits); the process dies right after the last 200.
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        statuses = list(pool.map(post, bodies))
    service.signal(signal.SIGKILL)
    assert statuses == [200] * len(bodies)
    service.kill()

    restarted = start_service(**env)
    with restarted.client() as client:
        counts = result_counts(client, "durable")
        assert counts["Bounce"] == 4
        assert counts["Delivery"] == 4
        for n, email in enumerate(emails):
            assert set(events_of(client, details[email]["request_id"])) == {
                "Bounce" if n % 2 else "Delivery"
            }
        entries = suppressed(client)
        assert {email for email in entries if email.startswith("durable")} == {
            email for n, email in enumerate(emails) if n % 2
        }
        # The dedup record survived too: SNS retrying after the crash changes nothing.
        with anonymous(restarted) as sns:
            retry = post_sns(sns, bodies[1])
        assert retry.status_code == 200
        assert retry.json()["result"] == "duplicate"
        assert result_counts(client, "durable")["Bounce"] == 4
    assert restarted.stop() == 0


def test_subscription_confirmation_fetches_an_allowed_subscribe_url_once(
    memory_service: ServiceProcess, minter: SnsMinter
) -> None:
    service = memory_service
    with subscribe_endpoint() as fake, anonymous(service) as sns:
        url = subscribe_url(fake.base_url, token="good-token-1")
        response = post_sns(
            sns,
            minter.subscription_confirmation(url, token="good-token-1"),
            "SubscriptionConfirmation",
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "subscription_confirmed"
        (request,) = fake.requests
        assert request.method == "GET"
        assert request.path == "/"
        assert request.query == {
            "Action": ["ConfirmSubscription"],
            "TopicArn": [TOPIC_ARN],
            "Token": ["good-token-1"],
        }
        assert "cookie" not in request.headers
        wait_for(lambda: service.find("sns_subscription_confirmed"), timeout=5, what="the log line")


def test_subscription_confirmations_pointing_elsewhere_are_refused_unfetched(
    memory_service: ServiceProcess, minter: SnsMinter
) -> None:
    service = memory_service
    confirmed = len(service.events("sns_subscription_confirmed"))
    with (
        subscribe_endpoint() as fake,
        subscribe_endpoint(host="127.0.0.2") as other_host,
        anonymous(service) as sns,
    ):
        signed_token = "the-signed-token"
        refused = {
            # Another loopback host: not the pattern's 127.0.0.1.
            "other host": subscribe_url(other_host.base_url, token=signed_token),
            # A public look-alike.
            "public host": subscribe_url("https://evil.example.com", token=signed_token),
            # The allowed host, but not SNS's confirmation action...
            "action": f"{fake.base_url}/?Action=Unsubscribe&TopicArn={TOPIC_ARN}"
            f"&Token={signed_token}",
            # ...or another topic than the signed one...
            "topic": subscribe_url(
                fake.base_url,
                topic_arn="arn:aws:sns:us-east-1:123456789012:other",
                token=signed_token,
            ),
            # ...or another token than the signed one.
            "token": subscribe_url(fake.base_url, token="another-token"),
        }
        for name, url in refused.items():
            body = minter.subscription_confirmation(url, token=signed_token)
            response = post_sns(sns, body, "SubscriptionConfirmation")
            assert response.status_code == 403, (name, response.text)
        assert fake.requests == []
        assert other_host.requests == []
        assert len(service.events("sns_subscription_confirmed")) == confirmed


def test_a_failing_or_redirecting_subscribe_url_is_retried_not_followed(
    memory_service: ServiceProcess, minter: SnsMinter
) -> None:
    service = memory_service
    script = SubscribeScript()
    with (
        subscribe_endpoint(script=script) as fake,
        subscribe_endpoint() as target,
        anonymous(service) as sns,
    ):
        script.status["t-500"] = 500
        script.redirect_to["t-302"] = subscribe_url(target.base_url, token="t-302")
        for token in ("t-500", "t-302"):
            body = minter.subscription_confirmation(
                subscribe_url(fake.base_url, token=token), token=token
            )
            response = post_sns(sns, body, "SubscriptionConfirmation")
            # 5xx: SNS sends the confirmation again later.
            assert response.status_code == 503, (token, response.text)
        assert [r.query["Token"] for r in fake.requests] == [["t-500"], ["t-302"]]
        assert target.requests == []  # the redirect was not followed


def test_unsubscribe_confirmation_is_logged_as_an_error_and_never_followed(
    memory_service: ServiceProcess, minter: SnsMinter
) -> None:
    service = memory_service
    unsubscribed = len(service.events("sns_unsubscribed"))
    with subscribe_endpoint() as fake, anonymous(service) as sns:
        url = subscribe_url(fake.base_url, token="resubscribe-token")
        body = minter.unsubscribe_confirmation(url, token="resubscribe-token")
        response = post_sns(sns, body, "UnsubscribeConfirmation")
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "unsubscribed"
        lines = wait_for(
            lambda: service.events("sns_unsubscribed")[unsubscribed:],
            timeout=5,
            what="the sns_unsubscribed log line",
        )
        (line,) = lines
        assert line["level"] == "error"
        assert line["topic_arn"] == TOPIC_ARN
        # A forged one is refused and not logged as an unsubscription.
        assert post_sns(sns, flip_signature(body), "UnsubscribeConfirmation").status_code == 403
        assert len(service.events("sns_unsubscribed")) == unsubscribed + 1
        # Visiting its SubscribeURL would subscribe again: never done.
        assert fake.requests == []


def test_a_refused_message_does_not_stall_the_next_one_on_its_connection(
    memory_service: ServiceProcess, minter: SnsMinter
) -> None:
    """SNS may deliver over a kept-alive connection. A refusal answered before the body was
    read (the missing-header 400) must not leave the connection unable to serve the next
    message (it stalled until the read timeout, then closed without a response)."""
    body = minter.notification("hello")
    with anonymous(memory_service, keep_alive=True) as sns:
        for attempt in range(20):
            assert post_sns(sns, body, message_type=None).status_code == 400
            try:
                response = post_sns(sns, body)
            except httpx.HTTPError as exc:
                pytest.fail(f"message {attempt} after a refused one failed: {exc!r}")
            assert response.status_code == 200


def test_an_oversized_chunked_webhook_body_is_413(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """Without Content-Length the size is known only after reading: still 413, nothing stored."""
    service = start_service(SENDER_BACKEND="memory")

    def chunks() -> Iterator[bytes]:
        for _ in range(300):
            yield b"x" * 1024

    with service.client() as client:
        response = client.post(
            "/v1/events/results",
            content=chunks(),
            headers={"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"},
        )
    assert response.status_code == 413
    assert response.json() == {"error": "Request body too large"}
