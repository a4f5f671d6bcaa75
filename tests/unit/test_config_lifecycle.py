"""The data lifecycle settings: RETENTION_DAYS, HOUSEKEEPING_INTERVAL_SECONDS,
DISK_FREE_WARNING_MB."""

from __future__ import annotations

import pytest

from sesender.config import load_config
from sesender.errors import ConfigError


def test_defaults_keep_90_days_prune_hourly_and_warn_below_a_gigabyte() -> None:
    database = load_config({}).database
    assert database.retention_days == 90
    assert database.housekeeping_interval == 3600
    assert database.disk_free_warning_bytes == 1024 * 1024 * 1024
    settings = load_config({}).public_settings()
    assert settings["retention_days"] == 90
    assert settings["disk_free_warning_mb"] == 1024


def test_fractions_of_a_day_and_zero_are_accepted() -> None:
    config = load_config(
        {
            "RETENTION_DAYS": "0.0000116",
            "HOUSEKEEPING_INTERVAL_SECONDS": "0.5",
            "DISK_FREE_WARNING_MB": "0",
        }
    )
    assert config.database.retention_days == pytest.approx(0.0000116)
    assert config.database.housekeeping_interval == 0.5
    assert config.database.disk_free_warning_bytes == 0
    assert load_config({"RETENTION_DAYS": "0"}).database.retention_days == 0


def test_bad_values_are_all_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            {
                "RETENTION_DAYS": "-1",
                "HOUSEKEEPING_INTERVAL_SECONDS": "often",
                "DISK_FREE_WARNING_MB": "nan",
            }
        )
    message = str(caught.value)
    assert "RETENTION_DAYS='-1' must be between 0 and" in message
    assert "HOUSEKEEPING_INTERVAL_SECONDS='often' is not a number" in message
    assert "DISK_FREE_WARNING_MB='nan' is not a number" in message
