"""Persistence: one store protocol per consumer, their union :class:`Store`, and SQLite."""

from sesender.models import IdempotencyRecord
from sesender.store.base import (
    ApiKeyStore,
    ApiStore,
    FeedbackStore,
    HealthStore,
    HousekeepingStore,
    HttpStore,
    QueueStore,
    StopResult,
    Store,
    WebhookAdminStore,
    WebhookDeliveryStore,
)
from sesender.store.sqlite import SqliteStore, migrate, open_sqlite_store

__all__ = [
    "ApiKeyStore",
    "ApiStore",
    "FeedbackStore",
    "HealthStore",
    "HousekeepingStore",
    "HttpStore",
    "IdempotencyRecord",
    "QueueStore",
    "SqliteStore",
    "StopResult",
    "Store",
    "WebhookAdminStore",
    "WebhookDeliveryStore",
    "migrate",
    "open_sqlite_store",
]
