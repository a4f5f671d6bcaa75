"""Configuration: read once from the environment (and an optional ``.env``), validated at start.

Every setting is parsed by :class:`SettingsReader`, which records every problem instead of stopping
at the first, so an operator sees the whole list in one :class:`~sesender.errors.ConfigError`
(exit code 2). The result is a tree of frozen dataclasses passed explicitly to whatever needs it;
no other module reads ``os.environ``. Secrets are kept out of ``repr`` and out of
:meth:`Config.public_settings`, which is what the start-up log line prints.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values

from sesender.errors import ConfigError
from sesender.tracking import MIN_SECRET_BYTES, derive_secret

T = TypeVar("T")

#: The hard ceiling of SES and of the original service: recipients in one POST /v1/messages.
DEFAULT_MAX_RECIPIENTS = 10_000


class BackendKind(enum.StrEnum):
    """Which mail backend sends: picked by configuration type, never by a dotted path."""

    OUTBOX = "outbox"
    SES = "ses"
    MEMORY = "memory"


class SesSendMode(enum.StrEnum):
    """How the SES backend sends: ``bulk`` groups recipients of one content into
    ``SendBulkEmail`` calls of up to 50; ``single`` makes one ``SendEmail`` call per email."""

    BULK = "bulk"
    SINGLE = "single"


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    public_url: str
    #: SHA-256 of the API key. From ``API_KEY`` when set; otherwise empty (no key matches) until
    #: the start-up fills in the generated key's, kept in the database (sesender.startup_secrets).
    api_key_digest: bytes = field(repr=False)
    #: True when ``API_KEY`` is not set: a key generated once and kept in the database is used.
    api_key_generated: bool
    max_request_bytes: int
    max_recipients_per_request: int
    shutdown_timeout: float
    keep_alive_timeout: float
    read_timeout: float
    #: ``ACCESS_LOG``: one ``http_request`` log line per request (see sesender/http/server.py).
    access_log: bool = False


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    path: Path
    busy_timeout: float
    #: ``RETENTION_DAYS``: emails in a final state are deleted this long after their last change
    #: (fractions allowed; 0 keeps everything). Statistics are kept (sesender.pipeline.housekeeper).
    retention_days: float = 90.0
    #: ``HOUSEKEEPING_INTERVAL_SECONDS``: how often the housekeeper prunes.
    housekeeping_interval: float = 3600.0
    #: ``DISK_FREE_WARNING_MB`` in bytes: ``/ready`` warns when the database's disk has less free
    #: space (0: never).
    disk_free_warning_bytes: int = 1024 * 1024 * 1024
    #: ``DATABASE_URL`` (``postgresql://...``): PostgreSQL instead of the SQLite file, for
    #: several instances on one queue (docs/operations.md, "Several instances").
    url: str | None = field(default=None, repr=False)
    #: ``DATABASE_POOL_SIZE``: PostgreSQL connections (and threads) of this instance's store;
    #: one more is held for LISTEN/NOTIFY.
    pool_size: int = 8
    #: ``INSTANCE_ID``: this instance's name in the ``instances`` table and on its claims.
    instance_id: str = ""
    #: ``INSTANCE_LEASE_SECONDS``: an instance silent this long is dead; survivors requeue its
    #: claimed emails.
    lease: float = 10.0
    #: ``INSTANCE_HEARTBEAT_SECONDS``: how often each instance writes its heartbeat.
    heartbeat: float = 1.0

    @property
    def is_postgres(self) -> bool:
        return self.url is not None


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """The send pipeline's settings, handed as this one object to
    :class:`~sesender.pipeline.pipeline.Pipeline`, which gives each actor its part."""

    max_send_per_second: float
    burst: float
    send_channel_size: int
    post_channel_size: int
    scheduler_interval: float
    schedule_timezone: ZoneInfo
    max_attempts: int
    retry_base_delay: float
    retry_max_delay: float
    pause_probe_interval: float
    flush_size: int
    flush_interval: float
    cap_to_account_rate: bool
    #: Sends in flight at once; not a setting of its own: None means twice the rate (at least 1).
    max_in_flight: int | None = None
    #: ``ACCOUNT_POLL_SECONDS``: how often the account monitor reads the account (GetAccount).
    account_poll_interval: float = 300.0

    def in_flight_limit(self) -> int:
        return self.max_in_flight or max(1, int(2 * self.max_send_per_second))


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """The reputation guard's settings (:mod:`sesender.pipeline.reputation_guard`); the
    defaults sit just under the rates at which SES puts an account under review (5 % bounces,
    0.1 % complaints)."""

    #: ``GUARD_ENABLED``: whether the guard holds anything (it always counts).
    enabled: bool = True
    #: ``GUARD_BOUNCE_RATE``: permanent bounces per send, account-wide and per topic.
    bounce_rate: float = 0.04
    #: ``GUARD_COMPLAINT_RATE``: complaints per send, account-wide.
    complaint_rate: float = 0.0008
    #: ``GUARD_MIN_SENDS``: account-wide sends in the window before the rates are trusted.
    min_sends: int = 1000
    #: ``GUARD_TOPIC_MIN_SENDS``: a topic's sends in the window before its rate is trusted.
    topic_min_sends: int = 200
    #: ``GUARD_WINDOW_SECONDS``: how far back the sliding window of sends reaches.
    window: float = 86_400.0
    #: ``GUARD_CHECK_SECONDS``: evaluation interval besides the one after every bounce/complaint.
    check_interval: float = 30.0


@dataclass(frozen=True, slots=True)
class AwsConfig:
    region: str
    from_email: str
    configuration_set: str | None
    endpoint_url: str | None
    access_key_id: str | None = field(repr=False)
    secret_access_key: str | None = field(repr=False)
    session_token: str | None = field(repr=False)
    connect_timeout: float
    read_timeout: float
    #: ``SES_SEND_MODE``: ``SendBulkEmail`` for recipients sharing a content, or one call each.
    send_mode: SesSendMode = SesSendMode.BULK
    #: ``ALLOWED_SENDERS``: addresses and domains (lower-cased) a message's ``from`` may use
    #: besides ``from_email`` (see sesender.senders).
    allowed_senders: tuple[str, ...] = ()
    #: ``SES_CLIENT_PROCESS``: run the boto3 client in a child process (its CPU off the GIL).
    client_process: bool = True
    #: ``SES_CLIENT_PROCESS_NICE``: added to that process's nice value: when the two compete
    #: for a core, the event loop, which every email waits on, gets it first.
    client_process_nice: int = 10


@dataclass(frozen=True, slots=True)
class BackendConfig:
    kind: BackendKind
    outbox_dir: Path
    memory_latency: float
    memory_throttle_rate: float
    aws: AwsConfig


@dataclass(frozen=True, slots=True)
class TrackingConfig:
    """The secrets behind pixel and unsubscribe tokens (docs/operations.md, "Tracking secret")."""

    #: ``TRACKING_SECRET``; ``None``: a secret generated once and kept in the database.
    secret: bytes | None = field(repr=False)
    #: ``TRACKING_SECRETS_PREVIOUS``: accepted for verification only, after a rotation.
    previous_secrets: tuple[bytes, ...] = field(repr=False)
    #: The secret earlier versions derived from ``API_KEY`` (when it is set): links they sent
    #: stay valid while ``API_KEY`` is unchanged.
    api_key_secret: bytes | None = field(repr=False)
    accept_plain_ids: bool
    #: ``OPEN_TRACKING_ENABLED``: whether emails carry the open-tracking pixel (a message's
    #: ``track_opens`` overrides it).
    open_tracking_enabled: bool
    #: ``TRACK_CLICKS``: whether emails' links are rewritten for click tracking (a message's
    #: ``track_clicks`` overrides it). Off by default: it changes what recipients see.
    track_clicks: bool = False


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    cert_url_pattern: re.Pattern[str] | None
    topic_arns: frozenset[str] | None
    max_age: float
    events_queue_url: str | None
    queue_endpoint_url: str | None
    queue_wait_seconds: int
    unsubscribe_enabled: bool
    suppress_after_transient_bounces: int


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Outbound webhooks (sesender.webhooks)."""

    #: ``WEBHOOK_DELIVERY_ENABLED``: whether this instance delivers webhook events (events are
    #: recorded either way; with several instances, any one or more may deliver).
    delivery_enabled: bool
    #: ``WEBHOOK_ALLOW_PRIVATE``: let endpoints reach loopback/private addresses (tests only).
    allow_private: bool
    #: ``WEBHOOK_CONCURRENCY``: POSTs in flight per endpoint.
    concurrency: int
    #: ``WEBHOOK_TIMEOUT_SECONDS``: one attempt's whole deadline.
    timeout: float
    #: ``WEBHOOK_POLL_SECONDS``: how often idle endpoints look for due events.
    poll_interval: float
    #: ``WEBHOOK_RETRY_SCHEDULE``: seconds before attempt 2, 3, ...; then the event fails.
    retry_schedule: tuple[float, ...]
    #: ``WEBHOOK_DISABLE_AFTER_HOURS``: an endpoint failing this long without a success is
    #: disabled.
    disable_after_hours: float
    #: ``WEBHOOK_RETENTION_HOURS``: delivered events are pruned after this long.
    retention_hours: float


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    log_level: str
    log_format: LogFormat
    sentry_dsn: str | None = field(repr=False)
    sentry_environment: str
    sentry_traces_sample_rate: float
    metrics_enabled: bool


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration of one sesender process."""

    server: ServerConfig
    database: DatabaseConfig
    pipeline: PipelineConfig
    backend: BackendConfig
    tracking: TrackingConfig
    feedback: FeedbackConfig
    observability: ObservabilityConfig
    webhooks: WebhookConfig
    guard: GuardConfig = GuardConfig()

    def public_settings(self) -> dict[str, object]:
        """The effective settings worth logging at start: everything but secrets."""
        aws = self.backend.aws
        return {
            "server_host": self.server.host,
            "server_port": self.server.port,
            "server_url": self.server.public_url,
            "api_key": "generated (stored)" if self.server.api_key_generated else "set",
            "tracking_secret": "set" if self.tracking.secret else "generated (stored)",
            "tracking_secrets_previous": len(self.tracking.previous_secrets),
            "open_tracking_enabled": self.tracking.open_tracking_enabled,
            "track_clicks": self.tracking.track_clicks,
            "database_path": str(self.database.path),
            "retention_days": self.database.retention_days,
            "housekeeping_interval_seconds": self.database.housekeeping_interval,
            "disk_free_warning_mb": self.database.disk_free_warning_bytes / (1024 * 1024),
            "database": "postgresql" if self.database.is_postgres else "sqlite",
            "instance_id": self.database.instance_id,
            "sender_backend": self.backend.kind.value,
            "outbox_dir": str(self.backend.outbox_dir),
            "max_send_per_second": self.pipeline.max_send_per_second,
            "burst": self.pipeline.burst,
            "send_channel_size": self.pipeline.send_channel_size,
            "post_channel_size": self.pipeline.post_channel_size,
            "scheduler_interval_seconds": self.pipeline.scheduler_interval,
            "schedule_timezone": str(self.pipeline.schedule_timezone),
            "max_attempts": self.pipeline.max_attempts,
            "aws_region": aws.region,
            "aws_ses_from_email": aws.from_email,
            "aws_ses_configuration_set": aws.configuration_set,
            "aws_endpoint_url_sesv2": aws.endpoint_url,
            "ses_send_mode": aws.send_mode.value,
            "allowed_senders": list(aws.allowed_senders),
            "ses_client_process": aws.client_process,
            "ses_client_process_nice": aws.client_process_nice,
            "aws_credentials": "explicit" if aws.access_key_id else "default chain",
            "sentry": "enabled" if self.observability.sentry_dsn else "disabled",
            "log_level": self.observability.log_level,
            "log_format": self.observability.log_format.value,
            "metrics_enabled": self.observability.metrics_enabled,
            "access_log": self.server.access_log,
            "ses_events_queue_url": self.feedback.events_queue_url,
            "unsubscribe_enabled": self.feedback.unsubscribe_enabled,
            "cap_to_account_rate": self.pipeline.cap_to_account_rate,
            "account_poll_seconds": self.pipeline.account_poll_interval,
            "guard_enabled": self.guard.enabled,
            "guard_bounce_rate": self.guard.bounce_rate,
            "guard_complaint_rate": self.guard.complaint_rate,
            "guard_min_sends": self.guard.min_sends,
            "guard_topic_min_sends": self.guard.topic_min_sends,
            "guard_window_seconds": self.guard.window,
            "webhook_delivery_enabled": self.webhooks.delivery_enabled,
            "webhook_allow_private": self.webhooks.allow_private,
            "webhook_concurrency": self.webhooks.concurrency,
            "webhook_timeout_seconds": self.webhooks.timeout,
        }


class SettingsReader:
    """Parses named settings from a mapping, collecting every problem instead of raising.

    Each accessor returns a usable default when the value is invalid so that parsing can carry on
    and report the next problem; :meth:`raise_if_problems` then raises one ``ConfigError``.
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        """The trimmed value of ``name``, or None when unset or empty."""
        value = self._values.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional_text(self, name: str) -> str | None:
        return self.raw(name)

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        return self._parsed(name, default, int, "a whole number", minimum, maximum)

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        return self._parsed(name, default, _finite_float, "a number", minimum, maximum)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        self.problems.append(f"{name}={value!r} is not a boolean (use true or false)")
        return default

    def choice(self, name: str, enum_type: type[T], default: T) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return enum_type(value.lower())  # type: ignore[call-arg]
        except ValueError:
            allowed = ", ".join(str(member.value) for member in enum_type)  # type: ignore[attr-defined]
            self.problems.append(f"{name}={value!r} is not one of: {allowed}")
            return default

    def timezone(self, name: str, default: str) -> ZoneInfo:
        value = self.text(name, default)
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.problems.append(f"{name}={value!r} is not a known IANA time zone")
            return ZoneInfo(default)

    def url(self, name: str, default: str | None, *, schemes: tuple[str, ...]) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            self.problems.append(
                f"{name}={value!r} is not an absolute URL ({' or '.join(schemes)})"
            )
            return default
        return value.rstrip("/")

    def regex(self, name: str) -> re.Pattern[str] | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            self.problems.append(f"{name} is not a valid regular expression: {exc}")
            return None

    def raise_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)

    def _parsed(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        kind: str,
        minimum: float,
        maximum: float,
    ) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = parse(value)
        except ValueError:
            self.problems.append(f"{name}={value!r} is not {kind}")
            return default
        if not minimum <= parsed <= maximum:  # type: ignore[operator]
            self.problems.append(f"{name}={value!r} must be between {minimum:g} and {maximum:g}")
            return default
        return parsed


def _finite_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def read_environment(
    environ: Mapping[str, str], *, env_file: Path | None = Path(".env")
) -> dict[str, str]:
    """Merge the optional ``.env`` file under the real environment (the environment wins)."""
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({key: value for key, value in dotenv_values(env_file).items() if value})
    values.update(environ)
    return values


def load_config(values: Mapping[str, str]) -> Config:
    """Validate every setting and build the frozen configuration, or raise one ConfigError."""
    reader = SettingsReader(values)

    port = reader.integer("SERVER_PORT", 3000, minimum=0, maximum=65535)
    backend_kind = reader.choice("SENDER_BACKEND", BackendKind, BackendKind.OUTBOX)
    api_key = reader.optional_text("API_KEY")
    if api_key is None and backend_kind is BackendKind.SES:
        reader.problems.append("API_KEY is required when SENDER_BACKEND=ses")
    configured_url = reader.url("SERVER_URL", None, schemes=("http", "https"))

    server = ServerConfig(
        host=reader.text("SERVER_HOST", "0.0.0.0"),
        port=port,
        public_url=configured_url or f"http://localhost:{port}",
        api_key_digest=api_key_sha256(api_key) if api_key is not None else b"",
        api_key_generated=api_key is None,
        max_request_bytes=reader.integer(
            "MAX_REQUEST_BYTES", 16 * 1024 * 1024, minimum=1024, maximum=1024**3
        ),
        max_recipients_per_request=reader.integer(
            "MAX_RECIPIENTS_PER_REQUEST", DEFAULT_MAX_RECIPIENTS, minimum=1, maximum=1_000_000
        ),
        shutdown_timeout=reader.number("SHUTDOWN_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=3600),
        keep_alive_timeout=reader.number(
            "HTTP_KEEP_ALIVE_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=3600
        ),
        read_timeout=reader.number("HTTP_READ_TIMEOUT_SECONDS", 30.0, minimum=0.1, maximum=3600),
        access_log=reader.boolean("ACCESS_LOG", False),
    )

    database_url = reader.optional_text("DATABASE_URL")
    if database_url is not None and not database_url.startswith(("postgresql://", "postgres://")):
        reader.problems.append(
            "DATABASE_URL must be a postgresql:// URL (for SQLite, set DATABASE_PATH instead)"
        )
    heartbeat = reader.number("INSTANCE_HEARTBEAT_SECONDS", 1.0, minimum=0.05, maximum=60)
    database = DatabaseConfig(
        path=Path(reader.text("DATABASE_PATH", "./sesender.db")),
        busy_timeout=reader.number("DATABASE_BUSY_TIMEOUT_SECONDS", 30.0, minimum=0.1, maximum=600),
        retention_days=reader.number("RETENTION_DAYS", 90.0, minimum=0, maximum=36_500),
        housekeeping_interval=reader.number(
            "HOUSEKEEPING_INTERVAL_SECONDS", 3600.0, minimum=0.01, maximum=7 * 86_400
        ),
        disk_free_warning_bytes=int(
            reader.number("DISK_FREE_WARNING_MB", 1024.0, minimum=0, maximum=1e9) * 1024 * 1024
        ),
        url=database_url,
        pool_size=reader.integer("DATABASE_POOL_SIZE", 8, minimum=2, maximum=200),
        instance_id=reader.text("INSTANCE_ID", "") or default_instance_id(),
        lease=reader.number("INSTANCE_LEASE_SECONDS", 10.0, minimum=heartbeat * 3, maximum=3600),
        heartbeat=heartbeat,
    )

    rate = reader.number("MAX_SEND_PER_SECOND", 24.0, minimum=0.01, maximum=100_000)
    pipeline = PipelineConfig(
        max_send_per_second=rate,
        burst=reader.number("SEND_BURST", max(1.0, rate / 10), minimum=1, maximum=1_000_000),
        send_channel_size=reader.integer("SEND_CHANNEL_SIZE", 10_000, minimum=1, maximum=1_000_000),
        post_channel_size=reader.integer("POST_CHANNEL_SIZE", 1_000, minimum=1, maximum=1_000_000),
        scheduler_interval=reader.number(
            "SCHEDULER_INTERVAL_SECONDS", 10.0, minimum=0.01, maximum=86_400
        ),
        schedule_timezone=reader.timezone("SCHEDULE_TIMEZONE", "UTC"),
        max_attempts=reader.integer("MAX_ATTEMPTS", 5, minimum=1, maximum=100),
        retry_base_delay=reader.number("RETRY_BASE_SECONDS", 1.0, minimum=0.001, maximum=3600),
        retry_max_delay=reader.number("RETRY_MAX_SECONDS", 300.0, minimum=0.001, maximum=86_400),
        pause_probe_interval=reader.number(
            "PAUSE_PROBE_SECONDS", 60.0, minimum=0.01, maximum=86_400
        ),
        flush_size=reader.integer("POST_FLUSH_SIZE", 100, minimum=1, maximum=100_000),
        flush_interval=reader.number("POST_FLUSH_SECONDS", 0.5, minimum=0.001, maximum=60),
        cap_to_account_rate=reader.boolean("CAP_TO_ACCOUNT_RATE", False),
        account_poll_interval=reader.number(
            "ACCOUNT_POLL_SECONDS", 300.0, minimum=0.01, maximum=86_400
        ),
    )
    guard = GuardConfig(
        enabled=reader.boolean("GUARD_ENABLED", True),
        bounce_rate=reader.number("GUARD_BOUNCE_RATE", 0.04, minimum=0.0001, maximum=1),
        complaint_rate=reader.number("GUARD_COMPLAINT_RATE", 0.0008, minimum=0.00001, maximum=1),
        min_sends=reader.integer("GUARD_MIN_SENDS", 1000, minimum=1, maximum=100_000_000),
        topic_min_sends=reader.integer(
            "GUARD_TOPIC_MIN_SENDS", 200, minimum=1, maximum=100_000_000
        ),
        window=reader.number("GUARD_WINDOW_SECONDS", 86_400.0, minimum=60, maximum=30 * 86_400),
        check_interval=reader.number("GUARD_CHECK_SECONDS", 30.0, minimum=0.1, maximum=3600),
    )

    region = reader.text("AWS_REGION", "us-east-1")
    from_email = reader.optional_text("AWS_SES_FROM_EMAIL")
    if from_email is None:
        if backend_kind is BackendKind.SES:
            reader.problems.append("AWS_SES_FROM_EMAIL is required when SENDER_BACKEND=ses")
        from_email = "sesender@localhost"
    aws = AwsConfig(
        region=region,
        from_email=from_email,
        configuration_set=reader.optional_text("AWS_SES_CONFIGURATION_SET"),
        endpoint_url=reader.url("AWS_ENDPOINT_URL_SESV2", None, schemes=("http", "https"))
        or reader.url("AWS_ENDPOINT_URL", None, schemes=("http", "https")),
        access_key_id=reader.optional_text("AWS_ACCESS_KEY_ID"),
        secret_access_key=reader.optional_text("AWS_SECRET_ACCESS_KEY"),
        session_token=reader.optional_text("AWS_SESSION_TOKEN"),
        connect_timeout=reader.number("AWS_CONNECT_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=300),
        read_timeout=reader.number("AWS_READ_TIMEOUT_SECONDS", 15.0, minimum=0.1, maximum=300),
        send_mode=reader.choice("SES_SEND_MODE", SesSendMode, SesSendMode.BULK),
        allowed_senders=_allowed_senders(reader, "ALLOWED_SENDERS"),
        client_process=reader.boolean("SES_CLIENT_PROCESS", True),
        client_process_nice=reader.integer("SES_CLIENT_PROCESS_NICE", 10, minimum=0, maximum=19),
    )
    backend = BackendConfig(
        kind=backend_kind,
        outbox_dir=Path(reader.text("OUTBOX_DIR", "./outbox")),
        memory_latency=reader.number("MEMORY_LATENCY_MS", 0.0, minimum=0, maximum=600_000) / 1000,
        memory_throttle_rate=reader.number("MEMORY_THROTTLE_RATE", 0.0, minimum=0, maximum=1),
        aws=aws,
    )

    tracking = TrackingConfig(
        secret=_tracking_secret(reader, "TRACKING_SECRET"),
        previous_secrets=_previous_tracking_secrets(reader, "TRACKING_SECRETS_PREVIOUS"),
        api_key_secret=derive_secret(api_key) if api_key is not None else None,
        accept_plain_ids=reader.boolean("TRACKING_ACCEPT_PLAIN_IDS", False),
        open_tracking_enabled=reader.boolean("OPEN_TRACKING_ENABLED", True),
        track_clicks=reader.boolean("TRACK_CLICKS", False),
    )

    topic_arns = reader.optional_text("SNS_TOPIC_ARNS")
    feedback = FeedbackConfig(
        cert_url_pattern=reader.regex("SNS_CERT_URL_PATTERN"),
        topic_arns=frozenset(arn.strip() for arn in topic_arns.split(",") if arn.strip())
        if topic_arns
        else None,
        max_age=reader.number("SNS_MAX_AGE_SECONDS", 3600.0, minimum=1, maximum=7 * 86_400),
        events_queue_url=reader.url("SES_EVENTS_QUEUE_URL", None, schemes=("http", "https")),
        queue_endpoint_url=reader.url("AWS_ENDPOINT_URL_SQS", None, schemes=("http", "https"))
        or reader.url("AWS_ENDPOINT_URL", None, schemes=("http", "https")),
        queue_wait_seconds=reader.integer("SQS_WAIT_SECONDS", 20, minimum=0, maximum=20),
        unsubscribe_enabled=reader.boolean("UNSUBSCRIBE_ENABLED", backend_kind is BackendKind.SES),
        suppress_after_transient_bounces=reader.integer(
            "SUPPRESS_AFTER_TRANSIENT_BOUNCES", 0, minimum=0, maximum=1000
        ),
    )

    log_level = reader.text("LOG_LEVEL", "info").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        reader.problems.append(
            f"LOG_LEVEL={log_level.lower()!r} is not one of: debug, info, warning, error, critical"
        )
        log_level = "INFO"
    observability = ObservabilityConfig(
        log_level=log_level,
        log_format=reader.choice("LOG_FORMAT", LogFormat, LogFormat.TEXT),
        sentry_dsn=reader.optional_text("SENTRY_DSN"),
        sentry_environment=reader.text("SENTRY_ENVIRONMENT", "production"),
        sentry_traces_sample_rate=reader.number(
            "SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0, maximum=1
        ),
        metrics_enabled=reader.boolean("METRICS_ENABLED", True),
    )

    webhooks = WebhookConfig(
        delivery_enabled=reader.boolean("WEBHOOK_DELIVERY_ENABLED", True),
        allow_private=reader.boolean("WEBHOOK_ALLOW_PRIVATE", False),
        concurrency=reader.integer("WEBHOOK_CONCURRENCY", 16, minimum=1, maximum=1000),
        timeout=reader.number("WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=300),
        poll_interval=reader.number("WEBHOOK_POLL_SECONDS", 1.0, minimum=0.01, maximum=3600),
        retry_schedule=_retry_schedule(reader, "WEBHOOK_RETRY_SCHEDULE"),
        disable_after_hours=reader.number(
            "WEBHOOK_DISABLE_AFTER_HOURS", 120.0, minimum=0.001, maximum=24 * 365
        ),
        retention_hours=reader.number(
            "WEBHOOK_RETENTION_HOURS", 72.0, minimum=0.001, maximum=24 * 365
        ),
    )

    server_url_unreadable = configured_url is None and reader.raw("SERVER_URL") is not None
    if (
        backend_kind is BackendKind.SES
        and (
            tracking.open_tracking_enabled or tracking.track_clicks or feedback.unsubscribe_enabled
        )
        and not server_url_unreadable  # already reported as not an absolute URL
    ):
        problem = public_url_problem(configured_url)
        if problem is not None:
            reader.problems.append(
                f"SERVER_URL {problem}; with SENDER_BACKEND=ses it must be this service's public"
                " URL, because every email's tracking pixel, tracked links and one-click"
                " unsubscribe link point there (set SERVER_URL, or turn off"
                " OPEN_TRACKING_ENABLED, TRACK_CLICKS and UNSUBSCRIBE_ENABLED)"
            )

    reader.raise_if_problems()
    return Config(
        server=server,
        database=database,
        pipeline=pipeline,
        backend=backend,
        tracking=tracking,
        feedback=feedback,
        observability=observability,
        guard=guard,
        webhooks=webhooks,
    )


#: The default WEBHOOK_RETRY_SCHEDULE: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 28 h).
DEFAULT_WEBHOOK_SCHEDULE = "5,300,1800,7200,18000,36000,36000"


def _retry_schedule(reader: SettingsReader, name: str) -> tuple[float, ...]:
    raw = reader.text(name, DEFAULT_WEBHOOK_SCHEDULE)
    try:
        delays = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        delays = ()
    if not delays or len(delays) > 50 or not all(0 <= d <= 7 * 86_400 for d in delays):
        reader.problems.append(
            f"{name} must be 1 to 50 comma-separated delays in seconds, each 0 to 604800"
        )
        return tuple(float(part) for part in DEFAULT_WEBHOOK_SCHEDULE.split(","))
    return delays


def default_instance_id() -> str:
    """``<host>-<pid>-<random>``: unique per process start, readable in ``instances``."""
    import os
    import secrets
    import socket

    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def api_key_sha256(api_key: str) -> bytes:
    """The digest an API key is checked against (keys are compared as digests, in constant time,
    so a generated key can be kept as its digest alone)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).digest()


def _secret_bytes(reader: SettingsReader, name: str, value: str) -> bytes | None:
    secret = value.encode("utf-8", "surrogateescape")
    if len(secret) < MIN_SECRET_BYTES:
        reader.problems.append(
            f"{name} must be at least {MIN_SECRET_BYTES} bytes long"
            " (for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
        return None
    return secret


def _allowed_senders(reader: SettingsReader, name: str) -> tuple[str, ...]:
    """``ALLOWED_SENDERS``: comma-separated addresses and domains, each checked."""
    from sesender.senders import parse_sender_entry

    found: list[str] = []
    for part in (reader.raw(name) or "").split(","):
        if not part.strip():
            continue
        entry = parse_sender_entry(part)
        if entry is None:
            reader.problems.append(
                f"{name}: {part.strip()!r} is not an address (news@example.com) or a domain"
                " (example.com)"
            )
        elif entry not in found:
            found.append(entry)
    return tuple(found)


def _tracking_secret(reader: SettingsReader, name: str) -> bytes | None:
    value = reader.raw(name)
    return None if value is None else _secret_bytes(reader, name, value)


def _previous_tracking_secrets(reader: SettingsReader, name: str) -> tuple[bytes, ...]:
    value = reader.raw(name) or ""
    found = (_secret_bytes(reader, name, part.strip()) for part in value.split(",") if part.strip())
    return tuple(secret for secret in found if secret is not None)


def public_url_problem(url: str | None) -> str | None:
    """Why ``url`` cannot be reached by a recipient's mail client, or ``None`` when it may be.

    Only what is certainly wrong is refused: no URL, or a host that is this machine for whoever
    resolves it (``localhost``, ``*.localhost``, 127.0.0.0/8, ``::1``, ``0.0.0.0``, ``::``).
    """
    if url is None:
        return "is not set"
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{url!r} names this machine (localhost)"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:
        return f"{url!r} is a loopback or unspecified address"
    return None
