"""The one error tree of sesender.

Every third-party exception (sqlite3, botocore, httpx, cryptography) is translated into one of
these at exactly one boundary, with ``raise ... from exc``, so callers never catch library types
(the boundaries: the SQLite store's runners for sqlite3, the SES backend and the SQS queue
wrapper for botocore, the SNS fetcher and sesender's HTTP client for httpx, the SNS verifier for
cryptography)::

    SesenderError
    ├── ConfigError                 invalid configuration; lists every problem (exit code 2)
    ├── StoreError                  the database failed
    │   └── StoreUnavailable        read-only, disk full, locked: writes refused until it clears
    ├── SendError                   one send attempt failed (carried as a value, never escapes)
    │   ├── TransientSendError      throttling, 5xx, timeouts, connection errors: retry later
    │   ├── PermanentSendError      this message can never be sent: fail it at once
    │   └── AccountSendError        the account cannot send (paused, suspended, quota): pause all
    ├── SnsError                    an SNS message was refused or could not be acted on
    │   ├── SnsMalformed            not a well-formed SNS message (HTTP 400)
    │   ├── SnsSignatureInvalid     signature, certificate or freshness check failed (HTTP 403)
    │   │   └── SnsCertificateUnavailable  the certificate could not be fetched (HTTP 503, so
    │   │                                  SNS retries: a passing network fault loses nothing)
    │   └── SubscriptionConfirmFailed      the SubscribeURL could not be fetched (HTTP 503, so
    │                                      SNS sends the confirmation again)
    ├── QueueError                  the SES events queue (SQS) could not be read or written
    ├── ApiError                    an HTTP handler refuses a request: ``{"error": ...}``, status
    ├── ClientError                 a request of sesender's own HTTP client failed (one line)
    ├── UsageError                  a command-line value is wrong (exit code 2)
    └── InputFileError              a file named on the command line cannot be used

The ``actors`` package is a library of its own and keeps its one error (``ActorCrashed``) there.
"""

from __future__ import annotations


class SesenderError(Exception):
    """Base of every error sesender raises on purpose."""


class ConfigError(SesenderError):
    """The configuration is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in self.problems)
        )


class StoreError(SesenderError):
    """The database failed in a way the caller cannot fix by changing its input."""


class StoreUnavailable(StoreError):
    """The database refuses writes for now (read-only file, disk full, busy); retry later."""


class SendError(SesenderError):
    """One send attempt failed. ``code`` is the provider's error code when it has one."""

    def __init__(self, message: str, *, code: str = "") -> None:
        self.code = code
        super().__init__(message)


class TransientSendError(SendError):
    """Worth retrying after a backoff: throttling, server errors, timeouts, connection errors.

    ``unreachable`` means the request never reached the provider (connection refused, DNS, TLS):
    the provider is down, not the email at fault, so the pipeline pauses and probes instead of
    spending the email's attempts.
    """

    def __init__(
        self, message: str, *, code: str = "", throttled: bool = False, unreachable: bool = False
    ) -> None:
        self.throttled = throttled
        self.unreachable = unreachable
        super().__init__(message, code=code)


class PermanentSendError(SendError):
    """The message can never be sent as it is (rejected content, invalid address...)."""


class SenderSendError(PermanentSendError):
    """The provider refused the message's sender: its identity is not verified (or its custom
    MAIL FROM domain is not set up). Every email of that sender fails until an operator fixes
    the identity, and the emails of other senders go on: this is neither one message's fault
    nor the whole account's. Failed as ``config``, so a retry of the topic sends them then."""


class AccountSendError(SendError):
    """The sending account cannot send at all right now: pause the pipeline, fail nothing."""


class SnsError(SesenderError):
    """An SNS message was refused, or could not be acted on."""


class SnsMalformed(SnsError):
    """The body is not a well-formed SNS message (answered with 400)."""


class SnsSignatureInvalid(SnsError):
    """The message failed signature, certificate, topic or freshness checks (answered with 403)."""


class SnsCertificateUnavailable(SnsSignatureInvalid):
    """The signing certificate could not be downloaded; the message may well be genuine."""


class SubscriptionConfirmFailed(SnsError):
    """The SubscribeURL could not be fetched; answering 5xx makes SNS send the request again."""


class QueueError(SesenderError):
    """SQS refused or failed a call on the SES events queue (network, credentials, throttling).

    Always worth trying again later: an unread message stays in the queue, and an undeleted one
    comes back after its visibility timeout and is recognised as a duplicate.
    """


class ApiError(SesenderError):
    """Raised by HTTP handlers for a request they refuse; rendered as ``{"error": message}``
    with ``status`` (a 4xx, or 503 for a condition that passes)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class ClientError(SesenderError):
    """A request of :class:`sesender.client.api.SesenderClient` failed. ``str(error)`` is one
    line meant for a human.

    ``status`` is the HTTP status when the server answered. ``retryable`` is true when sending the
    same request again may succeed and cannot do harm by itself (timeouts, connection drops after
    the request may have been sent, 503): callers retry only requests that are idempotent or carry
    an ``Idempotency-Key``.
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(" ".join(message.split()))


class UsageError(SesenderError):
    """A command-line value is wrong (exit code 2)."""


class InputFileError(SesenderError):
    """A file named on the command line cannot be used: missing, unreadable, empty, wrong type."""
