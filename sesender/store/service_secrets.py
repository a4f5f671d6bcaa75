"""What the start-up needs from the store: a few named secrets, created once and kept.

Two things must survive restarts without the operator configuring them, or every restart breaks
what was handed out before it: the tracking secret (every pixel and unsubscribe link ever sent is
signed with it) and, when no ``API_KEY`` is set, the generated API key (kept as a SHA-256 digest:
it only needs verifying). :mod:`sesender.startup_secrets` decides what goes in; the store only
keeps bytes under a name. ``ensure`` is atomic, so two processes starting on one database at the
same moment end up with the same value.
"""

from __future__ import annotations

from typing import Final, Protocol

#: The generated tracking secret (raw bytes), used when ``TRACKING_SECRET`` is not set.
TRACKING_SECRET: Final = "tracking_secret"
#: SHA-256 of the generated API key, used when ``API_KEY`` is not set.
API_KEY_SHA256: Final = "api_key_sha256"


class ServiceSecretsStore(Protocol):
    async def ensure_service_secret(self, name: str, candidate: bytes, *, now_ms: int) -> bytes:
        """Keep ``candidate`` under ``name`` unless a value is already there; return the kept
        value (``candidate`` itself exactly when this call stored it)."""
        ...

    async def service_secret(self, name: str) -> bytes | None:
        """The value kept under ``name``, or ``None``."""
        ...

    async def replace_service_secret(self, name: str, value: bytes, *, now_ms: int) -> None:
        """Keep ``value`` under ``name``, replacing whatever was there."""
        ...
