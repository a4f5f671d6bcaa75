"""In-memory doubles for SNS verification, public so every test suite can use the same ones.

- :class:`MemoryCertificateFetcher` is a ``fetch_pem`` for :class:`~sesender.feedback.SnsVerifier`
  that serves PEMs from memory, records each call, and can fail or hold a download in flight.
- :class:`SnsMessageSigner` mints SNS messages signed the way SNS signs them, with a test key, so
  webhook tests can post authentic-looking bodies (the test suite's key and certificate are in
  ``tests/fixtures/sns/test-signing/``).
- :func:`self_signed_certificate` makes a certificate for any key (wrong subject, wrong dates,
  non-RSA keys) to exercise the certificate checks.

The signer canonicalises with its own copy of the reference key lists rather than with
:func:`~sesender.feedback.string_to_sign`, so a bug there cannot hide by signing and checking the
same wrong bytes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "DEFAULT_TEST_CERT_URL",
    "MemoryCertificateFetcher",
    "SnsMessageSigner",
    "reference_string_to_sign",
    "self_signed_certificate",
]

DEFAULT_TEST_CERT_URL: Final = (
    "https://sns.us-east-1.amazonaws.com/"
    "SimpleNotificationService-00000000000000000000000000000000.pem"
)
"""The SigningCertURL of the test-signed fixtures (tests/fixtures/sns/)."""

_SIGNED_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


def reference_string_to_sign(document: Mapping[str, object]) -> bytes:
    """The string SNS signs for a raw message dict (ref ses-sns.md §1.2), absent keys skipped."""
    lines: list[str] = []
    for key in _SIGNED_KEYS[str(document["Type"])]:
        value = document.get(key)
        if value is not None:
            lines.append(f"{key}\n{value}\n")
    return "".join(lines).encode("utf-8")


@dataclass
class MemoryCertificateFetcher:
    """A ``fetch_pem`` double. Await it like the real fetcher: ``pem = await fetcher(url)``.

    :meth:`serve` scripts what a URL answers: each call takes the next outcome (bytes are
    returned, an exception is raised) and the last one repeats. Unscripted URLs answer
    ``default``, or raise ``OSError`` when there is none. ``calls`` lists every URL requested, in
    order. While ``gate`` is set to an unset ``trio.Event``, every call waits on it.
    """

    default: bytes | None = None
    gate: trio.Event | None = None
    calls: list[str] = field(default_factory=list)
    _outcomes: dict[str, list[bytes | Exception]] = field(default_factory=dict, repr=False)

    def serve(self, url: str, *outcomes: bytes | Exception) -> MemoryCertificateFetcher:
        """Script the answers for ``url``; returns ``self`` for chaining."""
        if not outcomes:
            raise ValueError("serve() needs at least one outcome")
        self._outcomes[url] = list(outcomes)
        return self

    async def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        queue = self._outcomes.get(url)
        outcome: bytes | Exception
        if queue:
            outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        elif self.default is not None:
            outcome = self.default
        else:
            outcome = OSError("no certificate served at this URL")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@dataclass(frozen=True)
class SnsMessageSigner:
    """Signs SNS message dicts with a test key, as SNS would (PKCS#1 v1.5, SHA1 or SHA256)."""

    private_key: rsa.RSAPrivateKey
    cert_url: str = DEFAULT_TEST_CERT_URL

    def sign(self, document: Mapping[str, object]) -> dict[str, object]:
        """Return a copy of ``document`` with the ``Signature`` for its ``SignatureVersion``."""
        algorithm: hashes.HashAlgorithm = (
            hashes.SHA1() if document.get("SignatureVersion") == "1" else hashes.SHA256()
        )
        signature = self.private_key.sign(
            reference_string_to_sign(document), padding.PKCS1v15(), algorithm
        )
        return {**document, "Signature": base64.b64encode(signature).decode("ascii")}

    def notification(self, **fields: object) -> bytes:
        """A signed Notification body. ``fields`` override the defaults; ``None`` removes a key."""
        return self._body(
            {
                "Type": "Notification",
                "MessageId": "0b0c9f5e-2d6f-5f55-9f1e-6a1f3f1d2c3b",
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
                "Message": "hello",
                "Timestamp": "2026-01-15T10:00:00.000Z",
                "SignatureVersion": "2",
                "SigningCertURL": self.cert_url,
                "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
            },
            fields,
        )

    def subscription_confirmation(self, **fields: object) -> bytes:
        """A signed SubscriptionConfirmation body, overridable like :meth:`notification`."""
        topic_arn = str(fields.get("TopicArn", "arn:aws:sns:us-east-1:123456789012:ses-events"))
        token = str(fields.get("Token", "2336412f37fbEXAMPLE"))
        return self._body(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": "6576ac6a-1d5a-5cb7-a265-31c06e978822",
                "TopicArn": topic_arn,
                "Message": f"You have chosen to subscribe to the topic {topic_arn}.",
                "Timestamp": "2026-01-15T09:00:00.000Z",
                "SubscribeURL": (
                    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
                    f"&TopicArn={topic_arn}&Token={token}"
                ),
                "Token": token,
                "SignatureVersion": "1",
                "SigningCertURL": self.cert_url,
            },
            fields,
        )

    def _body(self, document: dict[str, object], fields: Mapping[str, object]) -> bytes:
        for key, value in fields.items():
            if value is None:
                document.pop(key, None)
            else:
                document[key] = value
        return json.dumps(self.sign(document)).encode("utf-8")


def self_signed_certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    common_name: str = "sns.amazonaws.com",
    not_before: datetime = datetime(2020, 1, 1, tzinfo=UTC),
    not_after: datetime = datetime(2040, 1, 1, tzinfo=UTC),
) -> bytes:
    """A self-signed certificate for ``key``, as PEM bytes."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
