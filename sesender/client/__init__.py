"""A client of a running sesender: the typed HTTP client and the ``sesender`` client commands
(``send``, ``stats``, ``cancel``, ``retry``, ``suppressions``)."""

from sesender.client.api import (
    RejectedAddress,
    SesenderClient,
    SubmitResult,
    SuppressionEntry,
    SuppressionPage,
    TopicStats,
)
from sesender.errors import ClientError

__all__ = [
    "ClientError",
    "RejectedAddress",
    "SesenderClient",
    "SubmitResult",
    "SuppressionEntry",
    "SuppressionPage",
    "TopicStats",
]
