"""Secrets and signatures of the Standard Webhooks specification.

A secret is ``whsec_`` + base64 of 32 random bytes. The ``webhook-signature`` header carries one
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` per secret in effect, separated by spaces: after
a rotation the previous secret signs beside the new one for 24 hours, so a receiver can switch at
its own pace (the specification lets a verifier accept any one of the listed signatures).

The signature is computed here with ``hmac.digest`` (one C call) rather than through
``standardwebhooks.Webhook.sign``, which spends ten times as long around the same HMAC (datetime
conversions, string formatting, the ``hmac`` object): signing is done once per delivery attempt.
The scheme is the specification's, and the tests verify every header with the
``standardwebhooks`` package, as receivers do.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (its base64 part decoded, as the specification's
    libraries decode it: padding added if it was left out)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "==")


class Signer:
    """Signs bodies; keeps each secret's decoded key (decoding a secret is not free)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    def _key(self, secret: str) -> bytes:
        key = self._keys.get(secret)
        if key is None:
            if len(self._keys) > 1000:  # secrets rotate; never grow without bound
                self._keys.clear()
            key = self._keys[secret] = secret_key(secret)
        return key

    def raw_headers(
        self, secrets_in_effect: Sequence[str], event_id: str, timestamp_s: int, body: bytes
    ) -> list[tuple[bytes, bytes]]:
        """The three Standard Webhooks headers for one delivery attempt, as bytes pairs."""
        event_id_bytes = event_id.encode("utf-8")
        timestamp = str(timestamp_s).encode("ascii")
        signed = b"%s.%s.%s" % (event_id_bytes, timestamp, body)
        signature = b" ".join(
            b"v1," + base64.b64encode(hmac.digest(self._key(secret), signed, "sha256"))
            for secret in secrets_in_effect
        )
        return [
            (b"webhook-id", event_id_bytes),
            (b"webhook-timestamp", timestamp),
            (b"webhook-signature", signature),
        ]

    def headers(
        self, secrets_in_effect: Sequence[str], event_id: str, timestamp_s: int, body: bytes
    ) -> dict[str, str]:
        """The same headers as text (what a receiver's library is handed)."""
        return {
            name.decode("ascii"): value.decode("utf-8")
            for name, value in self.raw_headers(secrets_in_effect, event_id, timestamp_s, body)
        }
