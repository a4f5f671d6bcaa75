from __future__ import annotations

from pathlib import Path

import pytest

from sesender.config import (
    BackendKind,
    LogFormat,
    SesSendMode,
    api_key_sha256,
    load_config,
    read_environment,
)
from sesender.errors import ConfigError


def test_defaults_match_the_documented_table() -> None:
    config = load_config({})
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 3000
    assert config.server.public_url == "http://localhost:3000"
    assert config.server.api_key_generated
    assert config.database.path == Path("./sesender.db")
    assert config.backend.kind is BackendKind.OUTBOX
    assert config.backend.outbox_dir == Path("./outbox")
    assert config.pipeline.max_send_per_second == 24
    assert config.pipeline.send_channel_size == 10_000
    assert config.pipeline.post_channel_size == 1_000
    assert config.pipeline.scheduler_interval == 10
    assert str(config.pipeline.schedule_timezone) == "UTC"
    assert config.pipeline.max_attempts == 5
    assert config.server.shutdown_timeout == 10
    assert config.server.max_request_bytes == 16 * 1024 * 1024
    assert config.server.max_recipients_per_request == 10_000
    assert config.observability.log_level == "INFO"
    assert config.observability.log_format is LogFormat.TEXT
    assert config.observability.sentry_dsn is None
    assert config.feedback.unsubscribe_enabled is False  # only defaults on with SES


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            {
                "MAX_SEND_PER_SECOND": "abc",
                "SERVER_PORT": "99999",
                "SENDER_BACKEND": "carrier-pigeon",
                "SCHEDULE_TIMEZONE": "Mars/Olympus",
                "LOG_FORMAT": "xml",
                "UNSUBSCRIBE_ENABLED": "perhaps",
                "SNS_CERT_URL_PATTERN": "(",
                "SERVER_URL": "not a url",
            }
        )
    problems = caught.value.problems
    assert len(problems) == 8
    text = str(caught.value)
    for name in (
        "MAX_SEND_PER_SECOND",
        "SERVER_PORT",
        "SENDER_BACKEND",
        "SCHEDULE_TIMEZONE",
        "LOG_FORMAT",
        "UNSUBSCRIBE_ENABLED",
        "SNS_CERT_URL_PATTERN",
        "SERVER_URL",
    ):
        assert name in text


def test_ses_backend_requires_key_and_sender() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"SENDER_BACKEND": "ses", "SERVER_URL": "https://mail.example.com"})
    assert caught.value.problems == [
        "API_KEY is required when SENDER_BACKEND=ses",
        "AWS_SES_FROM_EMAIL is required when SENDER_BACKEND=ses",
    ]


def test_ses_settings_and_endpoint() -> None:
    config = load_config(
        {
            "SENDER_BACKEND": "SES",
            "API_KEY": "k",
            "AWS_SES_FROM_EMAIL": "news@example.com",
            "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL_SESV2": "http://127.0.0.1:5000/",
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret-value",
            "SERVER_URL": "https://mail.example.com",
        }
    )
    assert config.backend.kind is BackendKind.SES
    assert config.backend.aws.endpoint_url == "http://127.0.0.1:5000"
    assert config.feedback.unsubscribe_enabled is True
    assert "secret-value" not in repr(config)
    assert "secret-value" not in str(config.public_settings())
    assert "AKIDEXAMPLE" not in repr(config)


def test_secrets_never_in_repr_or_public_settings() -> None:
    config = load_config(
        {
            "API_KEY": "super-secret-key",
            "SENTRY_DSN": "https://k@sentry/1",
            "TRACKING_SECRET": "tracking-secret-value",
            "TRACKING_SECRETS_PREVIOUS": "previous-secret-value",
        }
    )
    for secret in (
        "super-secret-key",
        "https://k@sentry/1",
        "tracking-secret-value",
        "previous-secret-value",
    ):
        assert secret not in repr(config)
        assert secret not in str(config.public_settings())


def test_tracking_secret_derived_from_api_key_is_not_the_key() -> None:
    config = load_config({"API_KEY": "k1"})
    assert config.tracking.api_key_secret != b"k1"
    assert load_config({"API_KEY": "k1"}).tracking.api_key_secret == config.tracking.api_key_secret
    assert load_config({"API_KEY": "k2"}).tracking.api_key_secret != config.tracking.api_key_secret


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SERVER_PORT=4000\nMAX_SEND_PER_SECOND=50\n# comment\n")
    values = read_environment({"SERVER_PORT": "5000"}, env_file=env_file)
    config = load_config(values)
    assert config.server.port == 5000
    assert config.pipeline.max_send_per_second == 50


def test_missing_env_file_is_fine(tmp_path: Path) -> None:
    assert read_environment({"A": "b"}, env_file=tmp_path / "absent") == {"A": "b"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_SEND_PER_SECOND", "nan"),
        ("MAX_SEND_PER_SECOND", "inf"),
        ("MAX_SEND_PER_SECOND", "0"),
        ("SEND_CHANNEL_SIZE", "1.5"),
        ("MAX_ATTEMPTS", "0"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_out_of_range_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({name: value})


def test_topic_arn_allow_list() -> None:
    config = load_config({"SNS_TOPIC_ARNS": "arn:a, arn:b,,"})
    assert config.feedback.topic_arns == frozenset({"arn:a", "arn:b"})


SES = {
    "SENDER_BACKEND": "ses",
    "API_KEY": "k",
    "AWS_SES_FROM_EMAIL": "news@example.com",
}


@pytest.mark.parametrize(
    "url",
    [
        None,
        "http://localhost:3000",
        "https://LOCALHOST.",
        "http://mail.localhost",
        "http://127.0.0.1:8080",
        "http://127.1.2.3",
        "http://[::1]:3000",
        "http://[::ffff:127.0.0.1]",
        "http://0.0.0.0:3000",
        "http://[::]",
    ],
)
def test_ses_refuses_a_missing_or_loopback_server_url(url: str | None) -> None:
    values = dict(SES) if url is None else {**SES, "SERVER_URL": url}
    with pytest.raises(ConfigError) as caught:
        load_config(values)
    (problem,) = caught.value.problems
    assert problem.startswith("SERVER_URL ")
    assert "SENDER_BACKEND=ses" in problem
    assert "OPEN_TRACKING_ENABLED" in problem
    assert "TRACK_CLICKS" in problem
    assert "UNSUBSCRIBE_ENABLED" in problem


@pytest.mark.parametrize(
    "url",
    [
        "https://mail.example.com",
        "http://203.0.113.7:8080",
        "https://[2001:db8::1]",
        "https://localhost.example.com",  # a real domain that merely starts with localhost
        "http://10.0.0.5",  # private, yet reachable from a mail client on that network
    ],
)
def test_ses_accepts_a_public_server_url(url: str) -> None:
    config = load_config({**SES, "SERVER_URL": url})
    assert config.server.public_url == url


def test_ses_needs_no_server_url_with_tracking_and_unsubscribe_off() -> None:
    off = {"OPEN_TRACKING_ENABLED": "false", "UNSUBSCRIBE_ENABLED": "false"}
    config = load_config({**SES, **off})
    assert config.server.public_url == "http://localhost:3000"
    assert config.tracking.open_tracking_enabled is False
    assert config.tracking.track_clicks is False
    # Any one still on needs the public URL.
    for still_on in ("OPEN_TRACKING_ENABLED", "TRACK_CLICKS", "UNSUBSCRIBE_ENABLED"):
        with pytest.raises(ConfigError, match="SERVER_URL"):
            load_config({**SES, **off, still_on: "true"})


def test_other_backends_keep_the_localhost_default() -> None:
    for backend in ("outbox", "memory"):
        config = load_config({"SENDER_BACKEND": backend, "UNSUBSCRIBE_ENABLED": "true"})
        assert config.server.public_url == "http://localhost:3000"
        assert config.tracking.open_tracking_enabled is True


def test_click_tracking_is_off_by_default_and_checked() -> None:
    assert load_config({}).tracking.track_clicks is False
    assert load_config({"TRACK_CLICKS": "true"}).tracking.track_clicks is True
    assert load_config({"TRACK_CLICKS": "true"}).public_settings()["track_clicks"] is True
    with pytest.raises(ConfigError, match="TRACK_CLICKS"):
        load_config({"TRACK_CLICKS": "sometimes"})


def test_tracking_secrets() -> None:
    config = load_config({"API_KEY": "k1"})
    assert config.tracking.secret is None  # the generated one, kept in the database
    assert config.tracking.previous_secrets == ()
    assert config.tracking.api_key_secret is not None
    assert load_config({}).tracking.api_key_secret is None  # no API_KEY, no legacy secret

    config = load_config(
        {
            "TRACKING_SECRET": " current-secret-0123 ",
            "TRACKING_SECRETS_PREVIOUS": "previous-secret-0001, previous-secret-0002,,",
        }
    )
    assert config.tracking.secret == b"current-secret-0123"
    assert config.tracking.previous_secrets == (b"previous-secret-0001", b"previous-secret-0002")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRACKING_SECRET", "too-short"),
        ("TRACKING_SECRETS_PREVIOUS", "previous-secret-0001,short"),
    ],
)
def test_a_short_tracking_secret_is_a_configuration_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({name: value})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{name} must be at least 16 bytes")
    assert value not in problem


def test_api_key_is_kept_only_as_a_digest() -> None:
    config = load_config({"API_KEY": "the-key"})
    assert not config.server.api_key_generated
    assert config.server.api_key_digest == api_key_sha256("the-key")
    assert len(config.server.api_key_digest) == 32
    generated = load_config({})
    assert generated.server.api_key_generated
    assert generated.server.api_key_digest == b""  # matches nothing until the start fills it in


def test_an_unreadable_server_url_is_reported_once_with_ses() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**SES, "SERVER_URL": "mail.example.com"})
    (problem,) = caught.value.problems
    assert problem.startswith("SERVER_URL='mail.example.com' is not an absolute URL")


def test_ses_client_process_defaults_to_on() -> None:
    assert load_config({}).backend.aws.client_process is True
    assert load_config({}).public_settings()["ses_client_process"] is True
    assert load_config({"SES_CLIENT_PROCESS": "false"}).backend.aws.client_process is False
    with pytest.raises(ConfigError) as caught:
        load_config({"SES_CLIENT_PROCESS": "sometimes"})
    (problem,) = caught.value.problems
    assert "SES_CLIENT_PROCESS" in problem


def test_ses_client_process_nice_defaults_to_ten_and_stays_in_range() -> None:
    assert load_config({}).backend.aws.client_process_nice == 10
    assert load_config({}).public_settings()["ses_client_process_nice"] == 10
    for value in ("0", "19"):
        config = load_config({"SES_CLIENT_PROCESS_NICE": value})
        assert config.backend.aws.client_process_nice == int(value)
    for value in ("-1", "20", "5.5", "low"):
        with pytest.raises(ConfigError) as caught:
            load_config({"SES_CLIENT_PROCESS_NICE": value})
        (problem,) = caught.value.problems
        assert "SES_CLIENT_PROCESS_NICE" in problem, value


def test_ses_send_mode_defaults_to_bulk_and_refuses_unknown_modes() -> None:
    assert load_config({}).backend.aws.send_mode is SesSendMode.BULK
    assert load_config({}).public_settings()["ses_send_mode"] == "bulk"
    config = load_config({"SES_SEND_MODE": "single"})
    assert config.backend.aws.send_mode is SesSendMode.SINGLE
    with pytest.raises(ConfigError) as caught:
        load_config({"SES_SEND_MODE": "batch"})
    (problem,) = caught.value.problems
    assert "SES_SEND_MODE" in problem


def test_database_url_selects_postgresql_and_stays_out_of_logs() -> None:
    default = load_config({})
    assert default.database.url is None
    assert default.database.is_postgres is False
    assert default.database.instance_id  # generated, unique per start
    url = "postgresql://sesender:pg-password@db:5432/sesender"
    config = load_config(
        {"DATABASE_URL": url, "INSTANCE_ID": "web-1", "INSTANCE_LEASE_SECONDS": "5"}
    )
    assert config.database.is_postgres
    assert (config.database.instance_id, config.database.lease) == ("web-1", 5.0)
    assert (config.database.heartbeat, config.database.pool_size) == (1.0, 8)
    assert "pg-password" not in repr(config)
    assert "pg-password" not in str(config.public_settings())
    assert config.public_settings()["database"] == "postgresql"


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "sqlite:/tmp/x.db"}, "DATABASE_URL"),
        ({"INSTANCE_HEARTBEAT_SECONDS": "2", "INSTANCE_LEASE_SECONDS": "5"}, "INSTANCE_LEASE"),
        ({"DATABASE_POOL_SIZE": "1"}, "DATABASE_POOL_SIZE"),
    ],
)
def test_bad_database_settings_are_refused(values: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_config(values)


def test_webhook_settings() -> None:
    defaults = load_config({}).webhooks
    assert defaults.delivery_enabled is True
    assert defaults.allow_private is False
    assert defaults.concurrency == 16
    assert defaults.timeout == 10.0
    assert defaults.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert defaults.disable_after_hours == 120
    assert defaults.retention_hours == 72
    config = load_config(
        {
            "WEBHOOK_ALLOW_PRIVATE": "true",
            "WEBHOOK_DELIVERY_ENABLED": "false",
            "WEBHOOK_RETRY_SCHEDULE": "0.5, 2,10",
            "WEBHOOK_CONCURRENCY": "4",
        }
    ).webhooks
    assert config.allow_private is True
    assert config.delivery_enabled is False
    assert config.retry_schedule == (0.5, 2, 10)
    assert config.concurrency == 4
    for schedule in ("5,soon", "-1", "5,999999999", "nan", ","):
        with pytest.raises(ConfigError, match="WEBHOOK_RETRY_SCHEDULE"):
            load_config({"WEBHOOK_RETRY_SCHEDULE": schedule})
    with pytest.raises(ConfigError, match="WEBHOOK_CONCURRENCY"):
        load_config({"WEBHOOK_CONCURRENCY": "0"})
