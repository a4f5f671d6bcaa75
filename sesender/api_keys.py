"""Named API keys: how they are made, and the key ring that checks them on every request.

A key is ``ssk_`` and 32 random bytes (URL-safe text). Only its SHA-256 digest is stored, with a
short prefix that lets an operator recognise it in a listing; the key itself is shown once, when
created. A fast hash is right here, not bcrypt or argon2: those slow down guessing a *human*
password, but a 256-bit random key cannot be guessed at any speed, and a slow hash would add tens
of milliseconds of CPU to every request (the hot path: a POST of 10,000 recipients, repeated).

The :class:`KeyRing` keeps every valid key in memory, by digest, and reads them again from the
store when its copy is older than :data:`REFRESH_SECONDS` (at most once a second per instance,
one short read, shared by the requests that arrive meanwhile). So a key revoked on any instance
sharing the database stops working on every instance within a second; on the instance that
revoked it, at once. ``API_KEY`` (or the generated key) is checked first, with
``hmac.compare_digest``, and is an ``admin`` key. Looking a named key up by its digest in a dict
is not constant-time in the digest, but what it could leak is a few bits of the SHA-256 of the
presented string, which says nothing usable about any valid key (preimage resistance).

When a refresh fails (the database is unreachable) the request is answered 503 rather than
checked against a copy that might still hold a revoked key.

A key's last use is kept in memory and written at a refresh, only when the stored time is more
than :data:`LAST_USED_RESOLUTION_MS` older: a listing shows it to the minute, and the hot path
never writes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from sesender.errors import ApiError, StoreError
from sesender.models import ApiKey, Scope
from sesender.store.base import ApiKeyStore

__all__ = [
    "KEY_PREFIX",
    "KeyRing",
    "Principal",
    "generate_named_key",
    "key_digest",
]

logger = logging.getLogger(__name__)

KEY_PREFIX = "ssk_"
#: Characters of a key shown in listings (``ssk_`` and 8 of its random characters).
SHOWN_PREFIX_LENGTH = 12
REFRESH_SECONDS = 1.0
LAST_USED_RESOLUTION_MS = 60_000

MISSING = "Missing X-API-KEY header"
EMPTY = "Empty API Key"
INVALID = "Invalid API Key"


def key_digest(key: str) -> bytes:
    """The digest a key is stored and looked up as."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def generate_named_key() -> tuple[str, str, bytes]:
    """A new key: (the key, its shown prefix, its digest)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:SHOWN_PREFIX_LENGTH], key_digest(key)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: a named key (``key_id``), or ``API_KEY`` (``key_id`` None, admin)."""

    key_id: int | None
    name: str
    scopes: frozenset[Scope]
    #: the senders (addresses, domains) the key may use; None: every allowed sender.
    senders: tuple[str, ...] | None = None

    def has(self, scope: Scope) -> bool:
        """``admin`` includes every scope."""
        return Scope.ADMIN in self.scopes or scope in self.scopes


#: ``API_KEY`` from the environment, or the generated key: an admin key of no particular name.
CONFIGURED_KEY = Principal(key_id=None, name="API_KEY", scopes=frozenset({Scope.ADMIN}))


def principal_of(key: ApiKey) -> Principal:
    return Principal(key_id=key.id, name=key.name, scopes=key.scopes, senders=key.senders)


class KeyRing:
    """Checks ``X-API-KEY`` values: ``API_KEY`` first, then the named keys cached by digest."""

    def __init__(
        self,
        store: ApiKeyStore,
        *,
        configured_digest: bytes,
        now_ms: Callable[[], int],
        clock: Callable[[], float] = trio.current_time,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._store = store
        self._configured = configured_digest
        self._now_ms = now_ms
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._keys: Mapping[bytes, Principal] = {}
        #: last-used times the store has (as last read), and those seen since.
        self._stored_last_used: dict[int, int] = {}
        self._used: dict[int, int] = {}
        self._valid_until: float | None = None
        self._lock = trio.Lock()

    async def authenticate(self, presented: str | None) -> Principal:
        """The principal of ``presented``, or a 401 ApiError with the original's messages."""
        if presented is None:
            raise ApiError(401, MISSING)
        if presented.strip() == "":
            raise ApiError(401, EMPTY)
        digest = key_digest(presented)
        if hmac.compare_digest(digest, self._configured):
            return CONFIGURED_KEY
        keys = await self._current()
        principal = keys.get(digest)
        if principal is None:
            raise ApiError(401, INVALID)
        assert principal.key_id is not None
        self._used[principal.key_id] = self._now_ms()
        return principal

    def invalidate(self) -> None:
        """Read the keys again before the next check (after a create or a revoke here)."""
        self._valid_until = None

    async def _current(self) -> Mapping[bytes, Principal]:
        if self._valid_until is not None and self._clock() < self._valid_until:
            return self._keys
        refreshed = False
        async with self._lock:  # one refresh at a time; the others use its result
            if self._valid_until is None or self._clock() >= self._valid_until:
                await self._refresh()
                refreshed = True
        if refreshed:
            # After the lock: the requests waiting for the copy need not wait for the write.
            await self._write_last_used()
        return self._keys

    async def _refresh(self) -> None:
        started = self._clock()
        keys = await self._store.api_keys(include_revoked=False)
        self._keys = {key.digest: principal_of(key) for key in keys}
        self._stored_last_used = {key.id: key.last_used_at_ms or 0 for key in keys}
        self._valid_until = started + self._refresh_seconds

    async def _write_last_used(self) -> None:
        used, self._used = self._used, {}
        stale = [
            (key_id, at)
            for key_id, at in used.items()
            if key_id in self._stored_last_used
            and at - self._stored_last_used[key_id] >= LAST_USED_RESOLUTION_MS
        ]
        if not stale:
            return
        try:
            await self._store.touch_api_keys(stale)
        except StoreError as exc:  # a full disk must not refuse keys: the time is only shown
            logger.warning("could not record API keys' last use: %s", exc)
            return
        for key_id, at in stale:
            self._stored_last_used[key_id] = at
