"""Sentry: initialised only when ``SENTRY_DSN`` is set, with email addresses scrubbed.

Errors logged at ERROR level become Sentry events through the logging integration; actor crashes
are reported with an ``actor`` tag; 5xx responses are reported by the HTTP layer. Nothing that
leaves the process may carry an email address or a message body, so every event passes
:func:`scrub_event` first.
"""

from __future__ import annotations

import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import ignore_logger

from sesender import __version__
from sesender.config import ObservabilityConfig

EMAIL_PATTERN = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
REDACTED = "[email]"
#: Keys whose values are never sent, whatever they look like.
SENSITIVE_KEYS = frozenset({"content", "body", "html", "subject", "emails", "email", "recipient"})


def scrub(value: Any) -> Any:
    """Recursively replace email addresses in strings and drop sensitive keys."""
    if isinstance(value, str):
        return EMAIL_PATTERN.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            key: "[redacted]" if str(key).lower() in SENSITIVE_KEYS else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(scrub(item) for item in value)
    return value


def scrub_event(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    scrubbed: dict[str, Any] = scrub(event)
    return scrubbed


def init_sentry(config: ObservabilityConfig) -> bool:
    """Initialise Sentry when a DSN is configured; return whether it is on."""
    if not config.sentry_dsn:
        return False
    # The supervisor logs a crash and then calls report_actor_crash, which tags the event with
    # the actor; Sentry's deduplication would keep only the first (untagged) one.
    ignore_logger("actors.supervisor")
    sentry_sdk.init(
        dsn=config.sentry_dsn,
        environment=config.sentry_environment,
        release=f"sesender@{__version__}",
        traces_sample_rate=config.sentry_traces_sample_rate,
        send_default_pii=False,
        before_send=scrub_event,  # type: ignore[arg-type]
        before_send_transaction=scrub_event,  # type: ignore[arg-type]
        include_local_variables=False,
        max_request_body_size="never",
    )
    return True


def report_actor_crash(actor: str, exc: BaseException) -> None:
    """The supervisor's on_crash hook: one Sentry event tagged with the actor's name."""
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("actor", actor)
        sentry_sdk.capture_exception(exc)


def report_exception(exc: BaseException, **tags: str) -> None:
    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            scope.set_tag(key, value)
        sentry_sdk.capture_exception(exc)


def flush(timeout: float = 2.0) -> None:
    if sentry_sdk.is_initialized():
        sentry_sdk.flush(timeout=timeout)
