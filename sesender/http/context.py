"""AppContext: everything the HTTP handlers may use, handed to the app as one typed object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from actors import PipeSender, ShutdownTrigger, Supervisor
from sesender.config import Config
from sesender.feedback.intake import FeedbackIntake
from sesender.metrics import Metrics
from sesender.pipeline.pipeline import Pipeline
from sesender.pipeline.result_writer import ResultWrite
from sesender.store.base import HttpStore
from sesender.tracking import TokenSigner


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
