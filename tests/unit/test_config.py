from __future__ import annotations

from pathlib import Path

import pytest

from sesender.config import BackendKind, LogFormat, load_config, read_environment
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
        load_config({"SENDER_BACKEND": "ses"})
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
            "TRACKING_SECRET": "tracking-secret",
        }
    )
    for secret in ("super-secret-key", "https://k@sentry/1", "tracking-secret"):
        assert secret not in repr(config)
        assert secret not in str(config.public_settings())


def test_tracking_secret_derived_from_api_key_is_not_the_key() -> None:
    config = load_config({"API_KEY": "k1"})
    assert config.tracking.secret != b"k1"
    assert load_config({"API_KEY": "k1"}).tracking.secret == config.tracking.secret
    assert load_config({"API_KEY": "k2"}).tracking.secret != config.tracking.secret


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
