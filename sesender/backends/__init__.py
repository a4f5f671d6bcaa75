"""Mail backends: one small interface (:class:`Backend`), several implementations.

- :class:`SesBackend` (with :func:`build_ses_client`): Amazon SES v2, the production backend;
- :class:`OutboxBackend`: writes ``.eml`` files, the default when nothing else is configured;
- :class:`MemoryBackend`: records messages, for tests and benchmarks.
"""

from sesender.backends.base import AccountStatus, Backend, OutgoingEmail
from sesender.backends.headers import validate_custom_headers
from sesender.backends.memory import MemoryBackend, MemoryStatistics, SentRecord
from sesender.backends.outbox import OutboxBackend, OutboxStatistics
from sesender.backends.ses import SesBackend, SesStatistics, build_ses_client
from sesender.backends.text import html_to_text

__all__ = [
    "AccountStatus",
    "Backend",
    "MemoryBackend",
    "MemoryStatistics",
    "OutboxBackend",
    "OutboxStatistics",
    "OutgoingEmail",
    "SentRecord",
    "SesBackend",
    "SesStatistics",
    "build_ses_client",
    "html_to_text",
    "validate_custom_headers",
]
