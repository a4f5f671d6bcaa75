"""SNS signature verification against genuine AWS messages, test-signed fixtures and forgeries.

The genuine fixtures (tests/fixtures/sns/genuine/) were signed by AWS SNS; verifying them, and
refusing every single-field change to them, shows the canonicalisation and crypto are the real
thing and not merely self-consistent with our own signer.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypedDict, Unpack

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sesender.errors import SnsMalformed, SnsSignatureInvalid
from sesender.feedback import (
    MAX_ENVELOPE_BYTES,
    SnsEnvelope,
    SnsVerifier,
    parse_envelope,
    string_to_sign,
)
from sesender.feedback.sns import check_cert_url
from sesender.feedback.testing import (
    DEFAULT_TEST_CERT_URL,
    MemoryCertificateFetcher,
    SnsMessageSigner,
    self_signed_certificate,
)

GENUINE_NAMES = [
    "perl_aws_sns_verify_2015",
    "php_validator_fixture_0_sigv1",
    "php_validator_fixture_1_sigv2",
    "php_validator_fixture_2_sigv1",
    "php_validator_fixture_3_sigv2",
]
TEST_SIGNED_NAMES = [
    "bounce",
    "complaint",
    "delivery",
    "event_bounce",
    "event_complaint",
    "event_delivery",
    "subscription_confirmation",
]
MILLISECOND = timedelta(milliseconds=1)


def edit(body: bytes, **changes: object) -> bytes:
    """Return ``body`` with keys changed (``None`` deletes one), keeping the old Signature."""
    document = json.loads(body)
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return json.dumps(document).encode()


class VerifierOptions(TypedDict, total=False):
    """The ``SnsVerifier`` settings a test may change (the rest keep their defaults)."""

    topic_arns: frozenset[str] | None
    cert_url_pattern: re.Pattern[str] | None
    cache_size: int
    require_signature_version_2: bool


def verifier_at(
    envelope: SnsEnvelope, fetcher: MemoryCertificateFetcher, **options: Unpack[VerifierOptions]
) -> SnsVerifier:
    """A verifier whose clock stands at the message's own Timestamp."""
    return SnsVerifier(fetch_pem=fetcher, now=lambda: envelope.timestamp, **options)


def rejected(reason: str) -> pytest.RaisesExc[SnsSignatureInvalid]:
    return pytest.raises(SnsSignatureInvalid, match=rf"^SNS message rejected \({reason}\)")


# --- Genuine AWS messages ----------------------------------------------------------------------


@pytest.mark.parametrize("name", GENUINE_NAMES)
async def test_genuine_aws_message_verifies(
    name: str, genuine_body: Callable[[str], bytes], genuine_pem: Callable[[str], bytes]
) -> None:
    envelope = parse_envelope(genuine_body(name))
    fetcher = MemoryCertificateFetcher().serve(envelope.signing_cert_url, genuine_pem(name))
    verifier = verifier_at(envelope, fetcher)

    await verifier.verify(envelope)

    assert fetcher.calls == [envelope.signing_cert_url]
    assert verifier.statistics().verified == 1


@pytest.mark.parametrize("name", GENUINE_NAMES)
async def test_genuine_aws_message_is_rejected_at_the_real_now(
    name: str, genuine_body: Callable[[str], bytes], genuine_pem: Callable[[str], bytes]
) -> None:
    envelope = parse_envelope(genuine_body(name))
    fetcher = MemoryCertificateFetcher(default=genuine_pem(name))
    verifier = SnsVerifier(fetch_pem=fetcher, now=lambda: datetime.now(UTC))

    with rejected("too_old"):
        await verifier.verify(envelope)
    assert fetcher.calls == [], "a stale message must not cost a certificate download"


def _tampered_values(document: dict[str, object]) -> list[tuple[str, object]]:
    """One changed copy of each signed field of ``document`` (and Subject added / removed)."""
    timestamp = str(document["Timestamp"])
    last_digit = timestamp[-2]
    message_id = str(document["MessageId"])
    changes: list[tuple[str, object]] = [
        ("Message", f"{document['Message']} "),
        ("MessageId", message_id[:-1] + ("0" if message_id[-1] != "0" else "1")),
        ("Timestamp", timestamp[:-2] + ("0" if last_digit != "0" else "1") + "Z"),
        ("TopicArn", f"{document['TopicArn']}x"),
    ]
    if document["Type"] == "Notification":
        if "Subject" in document:
            changes += [("Subject", f"{document['Subject']}x"), ("Subject", None)]
        else:
            changes.append(("Subject", "injected"))
    else:
        changes += [
            ("SubscribeURL", f"{document['SubscribeURL']}&x=1"),
            ("Token", f"{document['Token']}0"),
        ]
    return changes


@pytest.mark.parametrize("name", [*GENUINE_NAMES, *TEST_SIGNED_NAMES])
async def test_every_single_field_tampering_is_rejected(
    name: str,
    genuine_body: Callable[[str], bytes],
    genuine_pem: Callable[[str], bytes],
    test_signed_body: Callable[[str], bytes],
    test_cert_pem: bytes,
) -> None:
    if name in GENUINE_NAMES:
        body, pem = genuine_body(name), genuine_pem(name)
    else:
        body, pem = test_signed_body(name), test_cert_pem
    original = parse_envelope(body)
    verifier = verifier_at(original, MemoryCertificateFetcher(default=pem))
    await verifier.verify(original)  # the untouched message is fine

    changes = _tampered_values(json.loads(body))
    for key, value in changes:
        with rejected("signature"):
            await verifier.verify(parse_envelope(edit(body, **{key: value})))
    assert verifier.statistics().rejected == {"signature": len(changes)}


@pytest.mark.parametrize("name", [*GENUINE_NAMES, "subscription_confirmation"])
async def test_changing_the_type_is_rejected(
    name: str,
    genuine_body: Callable[[str], bytes],
    genuine_pem: Callable[[str], bytes],
    test_signed_body: Callable[[str], bytes],
    test_cert_pem: bytes,
) -> None:
    if name in GENUINE_NAMES:
        body, pem = genuine_body(name), genuine_pem(name)
        forged = edit(
            body,
            Type="SubscriptionConfirmation",
            SubscribeURL="https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription",
            Token="abc",
        )
    else:
        body, pem = test_signed_body(name), test_cert_pem
        forged = edit(body, Type="UnsubscribeConfirmation")
    envelope = parse_envelope(forged)

    with rejected("signature"):
        await verifier_at(envelope, MemoryCertificateFetcher(default=pem)).verify(envelope)


@pytest.mark.parametrize("name", GENUINE_NAMES)
@pytest.mark.parametrize("bit", [0, 7, 8 * 128 + 3, 8 * 256 - 1])
async def test_signature_bit_flip_is_rejected(
    name: str, bit: int, genuine_body: Callable[[str], bytes], genuine_pem: Callable[[str], bytes]
) -> None:
    body = genuine_body(name)
    signature = bytearray(base64.b64decode(json.loads(body)["Signature"]))
    signature[bit // 8] ^= 1 << (bit % 8)
    envelope = parse_envelope(edit(body, Signature=base64.b64encode(signature).decode()))

    with rejected("signature"):
        await verifier_at(envelope, MemoryCertificateFetcher(default=genuine_pem(name))).verify(
            envelope
        )


@pytest.mark.parametrize("name", GENUINE_NAMES)
async def test_swapping_signature_version_is_rejected(
    name: str, genuine_body: Callable[[str], bytes], genuine_pem: Callable[[str], bytes]
) -> None:
    body = genuine_body(name)
    swapped = "2" if json.loads(body)["SignatureVersion"] == "1" else "1"
    envelope = parse_envelope(edit(body, SignatureVersion=swapped))

    with rejected("signature"):
        await verifier_at(envelope, MemoryCertificateFetcher(default=genuine_pem(name))).verify(
            envelope
        )


async def test_unsigned_fields_may_change(
    genuine_body: Callable[[str], bytes], genuine_pem: Callable[[str], bytes]
) -> None:
    """UnsubscribeURL and MessageAttributes are not signed: changing them keeps a message valid.

    (They are therefore never trusted: UnsubscribeURL is not used, MessageAttributes only in raw.)
    """
    name = "perl_aws_sns_verify_2015"  # the one genuine message carrying MessageAttributes
    body = edit(
        genuine_body(name),
        UnsubscribeURL="https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&other=1",
        MessageAttributes={"changed": {"Type": "String", "Value": "x"}},
    )
    envelope = parse_envelope(body)
    await verifier_at(envelope, MemoryCertificateFetcher(default=genuine_pem(name))).verify(
        envelope
    )
    assert envelope.raw["MessageAttributes"] == {"changed": {"Type": "String", "Value": "x"}}


async def test_lambda_style_keys_verify(
    genuine_body: Callable[[str], bytes], genuine_pem: Callable[[str], bytes]
) -> None:
    """Through Lambda, SNS spells SigningCertUrl / UnsubscribeUrl and sends "Subject": null."""
    for name in ("php_validator_fixture_0_sigv1", "php_validator_fixture_3_sigv2"):
        document = json.loads(genuine_body(name))
        document["SigningCertUrl"] = document.pop("SigningCertURL")
        document["UnsubscribeUrl"] = document.pop("UnsubscribeURL")
        document.setdefault("Subject", None)
        envelope = parse_envelope(json.dumps(document).encode())
        assert envelope.unsubscribe_url is not None
        fetcher = MemoryCertificateFetcher(default=genuine_pem(name))
        await verifier_at(envelope, fetcher).verify(envelope)


# --- Test-signed fixtures ----------------------------------------------------------------------


@pytest.mark.parametrize("name", TEST_SIGNED_NAMES)
async def test_test_signed_fixture_verifies_with_the_test_certificate(
    name: str, test_signed_body: Callable[[str], bytes], test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(test_signed_body(name))
    assert envelope.signing_cert_url == DEFAULT_TEST_CERT_URL

    # The URL passes the default rule and the test certificate's CN is sns.amazonaws.com, so an
    # injected fetcher is enough; an operator pattern matching the URL works as well.
    for pattern in (None, re.compile(re.escape(DEFAULT_TEST_CERT_URL))):
        fetcher = MemoryCertificateFetcher().serve(DEFAULT_TEST_CERT_URL, test_cert_pem)
        await verifier_at(envelope, fetcher, cert_url_pattern=pattern).verify(envelope)
        assert fetcher.calls == [DEFAULT_TEST_CERT_URL]


async def test_test_certificate_does_not_verify_genuine_messages(
    genuine_body: Callable[[str], bytes], test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(genuine_body("php_validator_fixture_1_sigv2"))
    with rejected("signature"):
        await verifier_at(envelope, MemoryCertificateFetcher(default=test_cert_pem)).verify(
            envelope
        )


# --- The order of checks and each check --------------------------------------------------------


async def test_topic_allow_list(signer: SnsMessageSigner, test_cert_pem: bytes) -> None:
    envelope = parse_envelope(signer.notification())
    allowed = frozenset({"arn:aws:sns:us-east-1:123456789012:ses-events"})
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    await verifier_at(envelope, fetcher, topic_arns=allowed).verify(envelope)

    foreign = parse_envelope(signer.notification(TopicArn="arn:aws:sns:us-east-1:999999999999:x"))
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    with rejected("topic"):
        await verifier_at(foreign, fetcher, topic_arns=allowed).verify(foreign)
    assert fetcher.calls == []


@pytest.mark.parametrize("version", ["3", "0", "1.0", "SHA256", "v2"])
async def test_unknown_signature_version_is_rejected_before_fetching(
    version: str, signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(signer.notification(SignatureVersion=version))
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    with rejected("signature_version"):
        await verifier_at(envelope, fetcher).verify(envelope)
    assert fetcher.calls == []


async def test_signature_version_2_can_be_required(
    genuine_body: Callable[[str], bytes], genuine_pem: Callable[[str], bytes]
) -> None:
    v1 = parse_envelope(genuine_body("php_validator_fixture_0_sigv1"))
    v2 = parse_envelope(genuine_body("php_validator_fixture_1_sigv2"))
    fetcher = MemoryCertificateFetcher(default=genuine_pem("php_validator_fixture_0_sigv1"))

    with rejected("signature_version"):
        await verifier_at(v1, fetcher, require_signature_version_2=True).verify(v1)
    await verifier_at(v2, fetcher, require_signature_version_2=True).verify(v2)
    assert fetcher.calls == [v2.signing_cert_url]


async def test_freshness_window_edges(signer: SnsMessageSigner, test_cert_pem: bytes) -> None:
    """Accepted from now - (max_age + skew) to now + skew (ref §1.5), and not a millisecond more."""
    envelope = parse_envelope(signer.notification())
    sent = envelope.timestamp
    max_age, skew = timedelta(hours=1), timedelta(minutes=5)

    def verifier(now: datetime) -> SnsVerifier:
        fetcher = MemoryCertificateFetcher(default=test_cert_pem)
        return SnsVerifier(fetch_pem=fetcher, now=lambda: now, max_age=max_age, future_skew=skew)

    await verifier(sent + max_age + skew).verify(envelope)
    await verifier(sent - skew).verify(envelope)
    with rejected("too_old"):
        await verifier(sent + max_age + skew + MILLISECOND).verify(envelope)
    with rejected("in_future"):
        await verifier(sent - skew - MILLISECOND).verify(envelope)


async def test_certificate_must_be_valid_at_the_message_timestamp(
    signer: SnsMessageSigner,
    test_cert_pem: bytes,
    genuine_body: Callable[[str], bytes],
    genuine_pem: Callable[[str], bytes],
) -> None:
    # The test certificate is valid from 2020-01-01.
    early = parse_envelope(signer.notification(Timestamp="2019-12-31T23:59:59.999Z"))
    with rejected("cert_validity"):
        await verifier_at(early, MemoryCertificateFetcher(default=test_cert_pem)).verify(early)

    # A 2015 message against the 2021-2022 certificate.
    old = parse_envelope(genuine_body("perl_aws_sns_verify_2015"))
    fetcher = MemoryCertificateFetcher(default=genuine_pem("php_validator_fixture_0_sigv1"))
    with rejected("cert_validity"):
        await verifier_at(old, fetcher).verify(old)


async def test_certificate_subject_must_be_sns_unless_a_pattern_is_set(
    other_rsa_key: rsa.RSAPrivateKey,
) -> None:
    pem = self_signed_certificate(other_rsa_key, common_name="evil.example.com")
    envelope = parse_envelope(SnsMessageSigner(other_rsa_key).notification())

    with rejected("cert_subject"):
        await verifier_at(envelope, MemoryCertificateFetcher(default=pem)).verify(envelope)

    pattern = re.compile(re.escape(DEFAULT_TEST_CERT_URL))
    fetcher = MemoryCertificateFetcher(default=pem)
    await verifier_at(envelope, fetcher, cert_url_pattern=pattern).verify(envelope)


async def test_certificate_key_must_be_rsa_of_at_least_2048_bits(
    signer: SnsMessageSigner,
) -> None:
    envelope = parse_envelope(signer.notification())
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for key in (ec.generate_private_key(ec.SECP256R1()), weak_rsa):
        fetcher = MemoryCertificateFetcher(default=self_signed_certificate(key))
        with rejected("cert_key"):
            await verifier_at(envelope, fetcher).verify(envelope)


async def test_signature_from_another_key_is_rejected(
    other_rsa_key: rsa.RSAPrivateKey, test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(SnsMessageSigner(other_rsa_key).notification())
    with rejected("signature"):
        await verifier_at(envelope, MemoryCertificateFetcher(default=test_cert_pem)).verify(
            envelope
        )


# --- Certificate cache -------------------------------------------------------------------------


def _cert_url(region: str, name: str = "0") -> str:
    return f"https://sns.{region}.amazonaws.com/SimpleNotificationService-{name}.pem"


async def test_certificate_is_cached_by_full_url(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    # Same path on two hosts, and two paths on one host: three cache entries, three downloads.
    urls = [_cert_url("us-east-1"), _cert_url("us-west-2"), _cert_url("us-east-1", "1")]
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    envelope = parse_envelope(signer.notification())
    verifier = verifier_at(envelope, fetcher)

    for _ in range(2):
        for url in urls:
            await verifier.verify(parse_envelope(signer.notification(SigningCertURL=url)))

    assert fetcher.calls == urls
    statistics = verifier.statistics()
    assert (statistics.cache_misses, statistics.cache_hits, statistics.fetches) == (3, 3, 3)
    assert statistics.cached_certificates == 3
    assert statistics.verified == 6


async def test_certificate_cache_is_a_bounded_lru(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    a, b, c = (_cert_url("us-east-1", name) for name in "abc")
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    verifier = verifier_at(parse_envelope(signer.notification()), fetcher, cache_size=2)

    for url in (a, b, a, c, a, b):  # c evicts b (a was used more recently); b comes back
        await verifier.verify(parse_envelope(signer.notification(SigningCertURL=url)))

    assert fetcher.calls == [a, b, c, b]
    assert verifier.statistics().cached_certificates == 2


async def test_fetch_failure_is_rejected_and_not_cached(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(signer.notification())
    url = envelope.signing_cert_url
    fetcher = MemoryCertificateFetcher().serve(url, OSError("connection reset"), test_cert_pem)
    verifier = verifier_at(envelope, fetcher)

    with rejected("cert_fetch"):
        await verifier.verify(envelope)
    await verifier.verify(envelope)  # downloaded again, not a cached failure

    assert fetcher.calls == [url, url]
    statistics = verifier.statistics()
    assert (statistics.fetches, statistics.fetch_failures, statistics.verified) == (2, 1, 1)


@pytest.mark.parametrize(
    "download", [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\nAAAA\n", b"x" * 70_000]
)
async def test_unusable_download_is_rejected_and_not_cached(
    download: bytes, signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(signer.notification())
    url = envelope.signing_cert_url
    fetcher = MemoryCertificateFetcher().serve(url, download, test_cert_pem)
    verifier = verifier_at(envelope, fetcher)

    with rejected("cert_parse"):
        await verifier.verify(envelope)
    await verifier.verify(envelope)
    assert fetcher.calls == [url, url]


async def test_concurrent_verifications_share_one_download(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(signer.notification())
    fetcher = MemoryCertificateFetcher(default=test_cert_pem, gate=trio.Event())
    verifier = verifier_at(envelope, fetcher)
    assert fetcher.gate is not None

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(verifier.verify, envelope)
        await trio.testing.wait_all_tasks_blocked()
        assert fetcher.calls == [envelope.signing_cert_url]
        assert verifier.statistics().fetches_in_flight == 1
        fetcher.gate.set()

    statistics = verifier.statistics()
    assert (statistics.fetches, statistics.verified, statistics.fetches_in_flight) == (1, 5, 0)
    assert (statistics.cache_misses, statistics.cache_hits) == (1, 4)


async def test_concurrent_verifications_share_a_failed_download(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(signer.notification())
    url = envelope.signing_cert_url
    fetcher = MemoryCertificateFetcher(gate=trio.Event()).serve(url, OSError("down"), test_cert_pem)
    verifier = verifier_at(envelope, fetcher)
    failures: list[str] = []

    async def verify() -> None:
        try:
            await verifier.verify(envelope)
        except SnsSignatureInvalid as exc:
            failures.append(str(exc))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(verify)
        await trio.testing.wait_all_tasks_blocked()
        assert fetcher.gate is not None
        fetcher.gate.set()

    assert len(failures) == 4
    assert all("(cert_fetch)" in failure for failure in failures)
    assert fetcher.calls == [url]
    await verifier.verify(envelope)  # nothing was cached: the next message downloads again
    assert fetcher.calls == [url, url]


async def test_cancelled_download_lets_a_waiting_verification_retry(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(signer.notification())
    fetcher = MemoryCertificateFetcher(default=test_cert_pem, gate=trio.Event())
    verifier = verifier_at(envelope, fetcher)
    first_scope = trio.CancelScope()
    second_done = trio.Event()

    async def first() -> None:
        with first_scope:
            await verifier.verify(envelope)

    async def second() -> None:
        await verifier.verify(envelope)
        second_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        first_scope.cancel()  # the downloading task goes away; the waiter must not hang or fail
        await trio.testing.wait_all_tasks_blocked()
        assert fetcher.calls == [envelope.signing_cert_url] * 2
        assert fetcher.gate is not None
        fetcher.gate.set()

    assert second_done.is_set()
    assert verifier.statistics().verified == 1


async def test_statistics_count_rejections_by_reason(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    good = parse_envelope(signer.notification())
    verifier = verifier_at(good, fetcher, topic_arns=frozenset({good.topic_arn}))
    await verifier.verify(good)
    for body in (
        signer.notification(TopicArn="arn:aws:sns:us-east-1:123456789012:other"),
        signer.notification(SigningCertURL="https://evil.example/x.pem"),
        signer.notification(SigningCertURL="https://evil.example/y.pem"),
        signer.notification(Timestamp="2020-01-01T00:00:00Z"),
    ):
        with pytest.raises(SnsSignatureInvalid):
            await verifier.verify(parse_envelope(body))

    statistics = verifier.statistics()
    assert statistics.verified == 1
    assert statistics.rejected == {"topic": 1, "cert_url": 2, "too_old": 1}


def test_verifier_refuses_nonsense_settings() -> None:
    async def fetch(url: str) -> bytes:
        raise AssertionError  # pragma: no cover

    with pytest.raises(ValueError, match="cache_size"):
        SnsVerifier(fetch_pem=fetch, now=lambda: datetime.now(UTC), cache_size=0)
    with pytest.raises(ValueError, match="max_age"):
        SnsVerifier(fetch_pem=fetch, now=lambda: datetime.now(UTC), max_age=timedelta(0))


# --- Subscription confirmation -----------------------------------------------------------------


async def test_confirmation_url_of_a_verified_subscription_confirmation(
    test_signed_body: Callable[[str], bytes], test_cert_pem: bytes
) -> None:
    envelope = parse_envelope(test_signed_body("subscription_confirmation"))
    verifier = verifier_at(envelope, MemoryCertificateFetcher(default=test_cert_pem))
    await verifier.verify(envelope)

    assert verifier.confirmation_url(envelope) == (
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
        "&TopicArn=arn:aws:sns:us-east-1:123456789012:ses-events&Token=2336412f37fbEXAMPLE"
    )


async def test_confirmation_url_is_refused_for_other_types_and_foreign_topics(
    signer: SnsMessageSigner, test_cert_pem: bytes
) -> None:
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    unsubscribe = parse_envelope(signer.subscription_confirmation(Type="UnsubscribeConfirmation"))
    notification = parse_envelope(signer.notification())
    foreign = parse_envelope(
        signer.subscription_confirmation(
            SubscribeURL=(
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
                "&TopicArn=arn:aws:sns:us-east-1:999999999999:attacker&Token=2336412f37fbEXAMPLE"
            )
        )
    )
    verifier = verifier_at(notification, fetcher)  # the confirmations are an hour older
    for envelope in (unsubscribe, notification, foreign):
        await verifier.verify(envelope)  # authentic, but not something to visit
        with pytest.raises(SnsSignatureInvalid):
            verifier.confirmation_url(envelope)


# --- Envelopes built by hand (not through parse_envelope) -------------------------------------


async def test_hand_built_envelopes_are_checked_too(
    test_signed_body: Callable[[str], bytes], test_cert_pem: bytes
) -> None:
    notification = parse_envelope(test_signed_body("bounce"))
    confirmation = parse_envelope(test_signed_body("subscription_confirmation"))
    fetcher = MemoryCertificateFetcher(default=test_cert_pem)
    verifier = verifier_at(notification, fetcher)

    for envelope, reason in (
        (dataclasses.replace(notification, type="Bogus"), "type"),  # type: ignore[arg-type]
        (dataclasses.replace(confirmation, token=None), "missing_key"),
        (dataclasses.replace(confirmation, subscribe_url=None), "missing_key"),
        (dataclasses.replace(notification, message_id=""), "missing_key"),
        (dataclasses.replace(notification, signature=b""), "missing_key"),
    ):
        with rejected(reason):
            await verifier.verify(envelope)
    with pytest.raises(SnsMalformed):
        await verifier.verify(dataclasses.replace(notification, message="\ud800"))
    with pytest.raises(SnsMalformed):
        string_to_sign(dataclasses.replace(confirmation, token=None))
    assert fetcher.calls == [notification.signing_cert_url]


async def test_a_naive_clock_is_a_programming_error(signer: SnsMessageSigner) -> None:
    envelope = parse_envelope(signer.notification())
    verifier = SnsVerifier(fetch_pem=MemoryCertificateFetcher(), now=datetime.now)
    with pytest.raises(TypeError, match=r"^SnsVerifier's now\(\) must return an aware datetime$"):
        await verifier.verify(envelope)


async def test_memory_certificate_fetcher_scripts_answers() -> None:
    fetcher = MemoryCertificateFetcher().serve("a", b"1", OSError("x"), b"2")
    assert await fetcher("a") == b"1"
    with pytest.raises(OSError, match="x"):
        await fetcher("a")
    assert await fetcher("a") == b"2"
    assert await fetcher("a") == b"2"  # the last answer repeats
    with pytest.raises(OSError, match="no certificate"):
        await fetcher("b")
    assert fetcher.calls == ["a", "a", "a", "a", "b"]
    with pytest.raises(ValueError, match="outcome"):
        fetcher.serve("c")


def test_signer_can_remove_keys(signer: SnsMessageSigner) -> None:
    document = json.loads(signer.notification(UnsubscribeURL=None, Subject="s"))
    assert "UnsubscribeURL" not in document
    assert document["Subject"] == "s"


# --- string_to_sign ----------------------------------------------------------------------------


def test_string_to_sign_notification_without_subject(
    genuine_body: Callable[[str], bytes],
) -> None:
    envelope = parse_envelope(genuine_body("php_validator_fixture_0_sigv1"))
    assert string_to_sign(envelope) == (
        b"Message\nHello world\n"
        b"MessageId\n792cda85-518f-5dd3-9163-81d851212f3a\n"
        b"Timestamp\n2022-07-28T21:23:58.317Z\n"
        b"TopicArn\narn:aws:sns:us-east-2:295079676684:"
        b"publish-and-verify-892f85fe-4836-424d-8188-ab85bef0f362\n"
        b"Type\nNotification\n"
    )


def test_string_to_sign_notification_with_subject(genuine_body: Callable[[str], bytes]) -> None:
    envelope = parse_envelope(genuine_body("php_validator_fixture_2_sigv1"))
    assert string_to_sign(envelope) == (
        b"Message\nHello world\n"
        b"MessageId\n11405cc3-9ac7-56d5-b45d-079e8f7a8edf\n"
        b"Subject\nHello world\n"
        b"Timestamp\n2022-07-28T22:53:49.654Z\n"
        b"TopicArn\narn:aws:sns:us-east-2:295079676684:"
        b"publish-and-verify-6e11fed2-fcdf-4c52-9dc4-36ef43f37f84\n"
        b"Type\nNotification\n"
    )


def test_string_to_sign_subscription_confirmation(
    test_signed_body: Callable[[str], bytes],
) -> None:
    envelope = parse_envelope(test_signed_body("subscription_confirmation"))
    topic = "arn:aws:sns:us-east-1:123456789012:ses-events"
    assert (
        string_to_sign(envelope)
        == (
            f"Message\nYou have chosen to subscribe to the topic {topic}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message.\n"
            "MessageId\n6576ac6a-1d5a-5cb7-a265-31c06e978822\n"
            "SubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={topic}&Token=2336412f37fbEXAMPLE\n"
            "Timestamp\n2026-01-15T09:00:00.000Z\n"
            "Token\n2336412f37fbEXAMPLE\n"
            f"TopicArn\n{topic}\n"
            "Type\nSubscriptionConfirmation\n"
        ).encode()
    )


def test_string_to_sign_uses_unescaped_unicode(signer: SnsMessageSigner) -> None:
    envelope = parse_envelope(signer.notification(Message='{"a": "\u00e9\\n"}'))
    assert string_to_sign(envelope).startswith('Message\n{"a": "é\\n"}\n'.encode())


# --- parse_envelope ----------------------------------------------------------------------------


def _raw(text: bytes) -> Callable[[bytes], bytes]:
    return lambda _base: text


def _edited(**changes: object) -> Callable[[bytes], bytes]:
    return lambda base: edit(base, **changes)


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "empty": _raw(b""),
    "not json": _raw(b"hello"),
    "truncated json": _raw(b'{"Type": "Notification"'),
    "array": _raw(b"[]"),
    "null": _raw(b"null"),
    "string": _raw(b'"Notification"'),
    "invalid utf-8": _raw(b'{"Type": "\xff"}'),
    "nan": _raw(b'{"Type": NaN}'),
    "deep nesting": _raw(b"[" * 50_000 + b"]" * 50_000),
    "duplicate key": lambda base: base.replace(b"{", b'{"Type": "Notification", ', 1),
    "oversized": lambda base: base + b" " * MAX_ENVELOPE_BYTES,
    "lone surrogate": lambda base: edit(base, Message="x").replace(b'"x"', b'"\\ud800"'),
    "no Type": _edited(Type=None),
    "Type not a string": _edited(Type=1),
    "Type as a boolean": _edited(Type=True),
    "Type as a list": _edited(Type=["Notification"]),
    "unknown Type": _edited(Type="Notice"),
    "lower-case Type": _edited(Type="notification"),
    "misspelt UnsubscriptionConfirmation": _edited(Type="UnsubscriptionConfirmation"),
    "no Message": _edited(Message=None),
    "Message as an object (moto)": _edited(Message={"notificationType": "Bounce"}),
    "Message as a number": _edited(Message=3),
    "no MessageId": _edited(MessageId=None),
    "MessageId with newline": _edited(MessageId="abc\nSubject"),
    "empty MessageId": _edited(MessageId=""),
    "no TopicArn": _edited(TopicArn=None),
    "TopicArn not an ARN": _edited(TopicArn="ses-events"),
    "TopicArn of another service": _edited(TopicArn="arn:aws:sqs:us-east-1:123456789012:q"),
    "no Timestamp": _edited(Timestamp=None),
    "Timestamp without time": _edited(Timestamp="2026-01-15"),
    "Timestamp without zone": _edited(Timestamp="2026-01-15T10:00:00.000"),
    "Timestamp in words": _edited(Timestamp="yesterday"),
    "Timestamp as a number": _edited(Timestamp=1768471205),
    "Timestamp impossible date": _edited(Timestamp="2026-02-30T10:00:00Z"),
    "Timestamp impossible offset": _edited(Timestamp="2026-01-15T10:00:00+24:00"),
    "Timestamp out of range": _edited(Timestamp="0001-01-01T00:00:00+01:00"),
    "Timestamp with unicode digits": _edited(Timestamp="٢٠٢٦-01-15T10:00:00Z"),
    "no SignatureVersion": _edited(SignatureVersion=None),
    "SignatureVersion as a number": _edited(SignatureVersion=2),
    "no Signature": _edited(Signature=None),
    "Signature not base64": _edited(Signature="!!!!"),
    "Signature with whitespace": _edited(Signature="AAAA\nAAAA"),
    "Signature with bad padding": _edited(Signature="AAA"),
    "empty Signature": _edited(Signature=""),
    "no SigningCertURL": _edited(SigningCertURL=None),
    "SigningCertURL as a list": _edited(SigningCertURL=["https://sns.x.amazonaws.com/a.pem"]),
    "both cert URL spellings": _edited(SigningCertUrl="https://sns.x.amazonaws.com/a.pem"),
    "both unsubscribe URL spellings": _edited(UnsubscribeUrl="https://sns.x.amazonaws.com/"),
    "UnsubscribeURL as a number": _edited(UnsubscribeURL=1),
    "Subject as a number": _edited(Subject=1),
    "Subject with a newline": _edited(Subject="a\nTimestamp"),
    "confirmation without Token": _edited(
        Type="SubscriptionConfirmation", SubscribeURL="https://a"
    ),
    "confirmation without SubscribeURL": _edited(Type="SubscriptionConfirmation", Token="abc"),
}


@pytest.mark.parametrize("make", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bodies_are_refused(
    make: Callable[[bytes], bytes], test_signed_body: Callable[[str], bytes]
) -> None:
    with pytest.raises(SnsMalformed):
        parse_envelope(make(test_signed_body("bounce")))


def test_parse_envelope_fields(test_signed_body: Callable[[str], bytes]) -> None:
    envelope = parse_envelope(test_signed_body("event_bounce"))
    assert envelope.type == "Notification"
    assert envelope.message_id == "c27d5688-fc58-5201-8803-712712d1c726"
    assert envelope.topic_arn == "arn:aws:sns:us-east-1:123456789012:ses-events"
    assert envelope.subject == "Amazon SES Email Event Notification"
    assert envelope.timestamp == datetime(2026, 1, 15, 10, 0, 5, 123000, tzinfo=UTC)
    assert envelope.timestamp_text == "2026-01-15T10:00:05.123Z"
    assert envelope.signature_version == "2"
    assert len(envelope.signature) == 256
    assert envelope.signing_cert_url == DEFAULT_TEST_CERT_URL
    assert envelope.unsubscribe_url is not None
    assert envelope.subscribe_url is None
    assert envelope.token is None
    assert json.loads(envelope.message)["eventType"] == "Bounce"
    for secret in (
        envelope.unsubscribe_url,
        json.loads(test_signed_body("event_bounce"))["Signature"],
    ):
        assert secret not in repr(envelope)


def test_unsigned_keys_of_another_type_are_not_exposed(signer: SnsMessageSigner) -> None:
    """A Notification's SubscribeURL / Token and a confirmation's Subject are not signed."""
    notification = parse_envelope(signer.notification(SubscribeURL="https://x", Token="t"))
    assert (notification.subscribe_url, notification.token) == (None, None)
    confirmation = parse_envelope(signer.subscription_confirmation(Subject="unsigned"))
    assert confirmation.subject is None
    assert confirmation.token == "2336412f37fbEXAMPLE"


def test_timestamp_with_offset_is_normalised_to_utc(signer: SnsMessageSigner) -> None:
    envelope = parse_envelope(signer.notification(Timestamp="2026-01-15T12:00:00.5+02:00"))
    assert envelope.timestamp == datetime(2026, 1, 15, 10, 0, 0, 500000, tzinfo=UTC)
    assert envelope.timestamp_text == "2026-01-15T12:00:00.5+02:00"


# --- Fuzzing: only SnsMalformed or SnsSignatureInvalid may ever come out -----------------------

SNS_KEYS = [
    "Type",
    "MessageId",
    "TopicArn",
    "Subject",
    "Message",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
    "SigningCertUrl",
    "SubscribeURL",
    "Token",
    "UnsubscribeURL",
    "UnsubscribeUrl",
]
INTERESTING_TEXT = st.sampled_from(
    [
        "Notification",
        "SubscriptionConfirmation",
        "UnsubscribeConfirmation",
        "1",
        "2",
        "",
        "AAAA",
        "2022-07-28T21:23:58.317Z",
        "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=a&Token=b",
        "arn:aws:sns:us-east-2:295079676684:t",
        "\ud800",
        "\x00",
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FUZZ_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


async def _parse_and_verify(body: bytes, pem: bytes, now: datetime) -> None:
    fetcher = MemoryCertificateFetcher(default=pem)
    try:
        envelope = parse_envelope(body)
        await SnsVerifier(fetch_pem=fetcher, now=lambda: now).verify(envelope)
    except (SnsMalformed, SnsSignatureInvalid):
        pass


@FUZZ_SETTINGS
@given(body=st.binary(max_size=4096))
async def test_fuzz_arbitrary_bytes(body: bytes, test_cert_pem: bytes) -> None:
    await _parse_and_verify(body, test_cert_pem, datetime(2026, 1, 15, tzinfo=UTC))


@FUZZ_SETTINGS
@given(
    document=st.dictionaries(
        st.sampled_from(SNS_KEYS) | st.text(max_size=10), JSON_VALUES | INTERESTING_TEXT
    )
)
async def test_fuzz_arbitrary_json_objects(
    document: dict[str, object], test_cert_pem: bytes
) -> None:
    body = json.dumps(document).encode("utf-8", "surrogatepass")
    await _parse_and_verify(body, test_cert_pem, datetime(2026, 1, 15, tzinfo=UTC))


@FUZZ_SETTINGS
@given(
    name=st.sampled_from(GENUINE_NAMES),
    changes=st.dictionaries(st.sampled_from(SNS_KEYS), JSON_VALUES | INTERESTING_TEXT, max_size=3),
    removals=st.sets(st.sampled_from(SNS_KEYS), max_size=2),
)
async def test_fuzz_mutated_genuine_messages(
    name: str,
    changes: dict[str, object],
    removals: set[str],
    genuine_body: Callable[[str], bytes],
    genuine_pem: Callable[[str], bytes],
) -> None:
    document = json.loads(genuine_body(name))
    now = parse_envelope(genuine_body(name)).timestamp
    for key in removals:
        document.pop(key, None)
    document.update(changes)
    body = json.dumps(document).encode("utf-8", "surrogatepass")
    await _parse_and_verify(body, genuine_pem(name), now)


# --- issue 20: what a rejection says (mutation testing found the texts unchecked) ---------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"type": "X" * 100}, f"(type): unknown message Type {'X' * 64!r}"),
        (
            {"type": "SubscriptionConfirmation", "subscribe_url": None},
            "(missing_key): SubscriptionConfirmation needs SubscribeURL and Token",
        ),
        ({"message_id": ""}, "(missing_key): MessageId, TopicArn and Signature must not be empty"),
    ],
)
async def test_a_rejection_says_what_is_wrong(
    changes: dict[str, object], expected: str, genuine_body: Callable[[str], bytes]
) -> None:
    envelope = parse_envelope(genuine_body("php_validator_fixture_1_sigv2"))
    verifier = verifier_at(envelope, MemoryCertificateFetcher())
    with pytest.raises(SnsSignatureInvalid) as caught:
        await verifier.verify(dataclasses.replace(envelope, **changes))  # type: ignore[arg-type]
    assert str(caught.value) == f"SNS message rejected {expected}"


def test_string_to_sign_names_what_is_missing_or_not_unicode(
    genuine_body: Callable[[str], bytes],
) -> None:
    envelope = parse_envelope(genuine_body("php_validator_fixture_1_sigv2"))
    with pytest.raises(SnsMalformed) as missing:
        string_to_sign(dataclasses.replace(envelope, message_id=None))  # type: ignore[arg-type]
    assert str(missing.value) == f"SNS {envelope.type} has no MessageId"
    with pytest.raises(SnsMalformed) as broken:
        string_to_sign(dataclasses.replace(envelope, message="\udcff"))
    assert str(broken.value) == "SNS message contains text that is not valid Unicode"


async def test_every_check_says_what_failed(genuine_body: Callable[[str], bytes]) -> None:
    """One envelope per check, each failing only that check, and the exact text it logs."""
    envelope = parse_envelope(genuine_body("php_validator_fixture_1_sigv2"))
    assert envelope.signature_version == "2"
    fetcher = MemoryCertificateFetcher()
    hour = timedelta(hours=1)
    cases: list[tuple[SnsVerifier, object, str]] = [
        (
            verifier_at(envelope, fetcher, topic_arns=frozenset({"arn:other"})),
            envelope,
            f"(topic): TopicArn {envelope.topic_arn[:300]!r} is not allowed",
        ),
        (
            verifier_at(envelope, fetcher),
            dataclasses.replace(envelope, signature_version="3"),
            "(signature_version): SignatureVersion must be 1 or 2",
        ),
        (
            verifier_at(envelope, fetcher, require_signature_version_2=True),
            dataclasses.replace(envelope, signature_version="1"),
            "(signature_version): SignatureVersion 2 is required",
        ),
        (
            SnsVerifier(fetch_pem=fetcher, now=lambda: envelope.timestamp + 2 * hour),
            envelope,
            "(too_old): Timestamp is older than the accepted window",
        ),
        (
            SnsVerifier(fetch_pem=fetcher, now=lambda: envelope.timestamp - hour),
            envelope,
            "(in_future): Timestamp is in the future",
        ),
    ]
    for verifier, candidate, expected in cases:
        with pytest.raises(SnsSignatureInvalid) as caught:
            await verifier.verify(candidate)  # type: ignore[arg-type]
        assert str(caught.value) == f"SNS message rejected {expected}"


async def test_a_refused_certificate_url_keeps_its_reason_and_cause(
    genuine_body: Callable[[str], bytes],
) -> None:
    envelope = parse_envelope(genuine_body("php_validator_fixture_1_sigv2"))
    bad = dataclasses.replace(envelope, signing_cert_url="http://example.com/cert.pem")
    with pytest.raises(SnsSignatureInvalid) as direct:
        check_cert_url(bad.signing_cert_url)
    with pytest.raises(SnsSignatureInvalid) as caught:
        await verifier_at(bad, MemoryCertificateFetcher()).verify(bad)
    assert str(caught.value) == f"SNS message rejected (cert_url): {direct.value}"
    assert type(caught.value.__cause__) is SnsSignatureInvalid
    assert str(caught.value.__cause__) == str(direct.value)


@pytest.mark.parametrize("stamp", ["2020-01-01T00:00:00.000Z", "2040-01-01T00:00:00.000Z"])
async def test_a_certificate_is_valid_on_its_first_and_last_instant(
    signer: SnsMessageSigner, test_cert_pem: bytes, stamp: str
) -> None:
    """Both ends of the validity period count (not_valid_before <= Timestamp <= not_valid_after)."""
    envelope = parse_envelope(signer.notification(Timestamp=stamp))
    await verifier_at(envelope, MemoryCertificateFetcher(default=test_cert_pem)).verify(envelope)


async def test_certificate_rejections_say_why(
    signer: SnsMessageSigner, test_cert_pem: bytes, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    early = parse_envelope(signer.notification(Timestamp="2019-12-31T23:59:59.999Z"))
    with pytest.raises(SnsSignatureInvalid) as invalid:
        await verifier_at(early, MemoryCertificateFetcher(default=test_cert_pem)).verify(early)
    assert str(invalid.value) == (
        "SNS message rejected (cert_validity): certificate was not valid at the message Timestamp"
    )
    pem = self_signed_certificate(other_rsa_key, common_name="evil.example.com")
    envelope = parse_envelope(SnsMessageSigner(other_rsa_key).notification())
    with pytest.raises(SnsSignatureInvalid) as subject:
        await verifier_at(envelope, MemoryCertificateFetcher(default=pem)).verify(envelope)
    assert str(subject.value) == (
        "SNS message rejected (cert_subject): certificate subject is not sns.amazonaws.com"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
            "SigningCertURL must not have a query",
        ),
        (
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem#f",
            "SigningCertURL must not have a fragment",
        ),
        (
            "https://sns.us-east-1.amazonaws.com/other.pem",
            "SigningCertURL path is not /SimpleNotificationService-<id>.pem",
        ),
        ("http://example.com/x.pem", "SigningCertURL must use https"),
        ("https://evil.com\\@sns.us-east-1.amazonaws.com/x", "SigningCertURL contains a backslash"),
    ],
)
def test_a_refused_certificate_url_says_why(url: str, expected: str) -> None:
    with pytest.raises(SnsSignatureInvalid) as caught:
        check_cert_url(url)
    assert str(caught.value) == expected


async def test_key_and_signature_rejections_say_why(
    signer: SnsMessageSigner, test_cert_pem: bytes, genuine_body: Callable[[str], bytes]
) -> None:
    envelope = parse_envelope(signer.notification())
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cases: list[tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]] = [
        (ec.generate_private_key(ec.SECP256R1()), "certificate key is not RSA"),
        (weak, "certificate RSA key is shorter than 2048 bits"),
    ]
    for key, text in cases:
        fetcher = MemoryCertificateFetcher(default=self_signed_certificate(key))
        with pytest.raises(SnsSignatureInvalid) as caught:
            await verifier_at(envelope, fetcher).verify(envelope)
        assert str(caught.value) == f"SNS message rejected (cert_key): {text}"
    forged = dataclasses.replace(envelope, message="forged")
    with pytest.raises(SnsSignatureInvalid) as bad:
        await verifier_at(forged, MemoryCertificateFetcher(default=test_cert_pem)).verify(forged)
    assert str(bad.value) == (
        "SNS message rejected (signature): signature does not match the signed fields"
    )
    assert bad.value.__cause__ is not None
    long_arn = "arn:" + "x" * 400
    other = dataclasses.replace(envelope, topic_arn=long_arn)
    verifier = verifier_at(other, MemoryCertificateFetcher(), topic_arns=frozenset({"arn:a"}))
    with pytest.raises(SnsSignatureInvalid) as topic:
        await verifier.verify(other)
    assert str(topic.value) == (
        f"SNS message rejected (topic): TopicArn {long_arn[:300]!r} is not allowed"
    )


async def test_verify_is_a_checkpoint_even_with_the_certificate_cached(
    test_signed_body: Callable[[str], bytes], test_cert_pem: bytes
) -> None:
    """trio's rule: a verification that needs no download still lets other tasks run."""
    envelope = parse_envelope(test_signed_body(TEST_SIGNED_NAMES[0]))
    fetcher = MemoryCertificateFetcher().serve(DEFAULT_TEST_CERT_URL, test_cert_pem)
    verifier = verifier_at(envelope, fetcher)
    await verifier.verify(envelope)  # downloads the certificate once
    with trio.testing.assert_checkpoints():
        await verifier.verify(envelope)
    assert fetcher.calls == [DEFAULT_TEST_CERT_URL]
