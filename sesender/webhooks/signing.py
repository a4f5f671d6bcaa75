"""Secrets and signatures of the Standard Webhooks specification, through ``standardwebhooks``.

A secret is ``whsec_`` + base64 of 32 random bytes. The ``webhook-signature`` header carries one
``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` per secret in effect, separated by spaces: after
a rotation the previous secret signs beside the new one for 24 hours, so a receiver can switch at
its own pace (the specification lets a verifier accept any one of the listed signatures).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class Signer:
    """Signs bodies; keeps one ``Webhook`` per secret (decoding a secret is not free)."""

    def __init__(self) -> None:
        self._webhooks: dict[str, Webhook] = {}

    def _webhook(self, secret: str) -> Webhook:
        webhook = self._webhooks.get(secret)
        if webhook is None:
            if len(self._webhooks) > 1000:  # secrets rotate; never grow without bound
                self._webhooks.clear()
            webhook = self._webhooks[secret] = Webhook(secret)
        return webhook

    def headers(
        self, secrets_in_effect: Sequence[str], event_id: str, timestamp_s: int, body: bytes
    ) -> dict[str, str]:
        """The three Standard Webhooks headers for one delivery attempt."""
        moment = datetime.fromtimestamp(timestamp_s, UTC)
        text = body.decode("utf-8")
        signature = " ".join(
            self._webhook(secret).sign(event_id, moment, text) for secret in secrets_in_effect
        )
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp_s),
            "webhook-signature": signature,
        }
