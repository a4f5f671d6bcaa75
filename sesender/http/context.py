"""AppContext: everything the HTTP handlers may use, handed to the app as one typed object.

The app type that carries it (:class:`SesenderApp`) and :func:`app_context`, the one way a
handler reaches it, live here too: below every blueprint, so no blueprint imports another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from quart import current_app
from quart_trio import QuartTrio

from actors import PipeSender, ShutdownTrigger, Supervisor
from sesender.api_keys import KeyRing
from sesender.config import Config
from sesender.feedback.intake import FeedbackIntake
from sesender.metrics import Metrics
from sesender.pipeline.instances import InstanceCoordinator
from sesender.pipeline.pipeline import Pipeline
from sesender.pipeline.result_writer import ResultWrite
from sesender.store.base import HttpStore
from sesender.tracking import TokenSigner
from sesender.webhooks.guard import AddressPolicy


@dataclass(frozen=True, slots=True)
class AppContext:
    config: Config
    store: HttpStore
    pipeline: Pipeline
    supervisor: Supervisor
    shutdown: ShutdownTrigger
    signer: TokenSigner
    now_ms: Callable[[], int]
    #: group-commit path for opens and SES events (see ResultWriter).
    result_tx: PipeSender[ResultWrite]
    intake: FeedbackIntake
    #: SNS messages refused, by kind (malformed / invalid), for metrics.
    sns_rejections: dict[str, int]
    #: None when METRICS_ENABLED=false.
    metrics: Metrics | None
    #: the actors /ready requires to be running (the HTTP actor answers, so it is running).
    required_actors: tuple[str, ...]
    #: checks X-API-KEY: API_KEY, then the named keys (cached, refreshed every second).
    keys: KeyRing
    #: which addresses a webhook URL may resolve to (checked at creation and change).
    webhook_policy: AddressPolicy
    #: tells the webhook deliverer to look at endpoints and due events now.
    webhook_refresh: Callable[[], None]
    #: with PostgreSQL: this instance's membership (heartbeat, notifications); None on SQLite.
    instance: InstanceCoordinator | None = None


class SesenderApp(QuartTrio):
    """The app, carrying its typed :class:`AppContext` (no globals, no ``current_app`` lookups
    of untyped config)."""

    context: AppContext


def app_context() -> AppContext:
    """The running app's :class:`AppContext`; call it inside a request (or app context)."""
    return cast(SesenderApp, current_app).context
