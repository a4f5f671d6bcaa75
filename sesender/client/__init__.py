"""A client of a running sesender: the typed HTTP client and the ``sesender`` client commands
(``send``, ``stats``, ``cancel``, ``retry``, ``suppressions``)."""

from sesender.client.api import (
    ClientError,
    RejectedAddress,
    SesenderClient,
    SubmitResult,
    SuppressionEntry,
    SuppressionPage,
    TopicStats,
)

__all__ = [
    "ClientError",
    "RejectedAddress",
    "SesenderClient",
    "SubmitResult",
    "SuppressionEntry",
    "SuppressionPage",
    "TopicStats",
]
