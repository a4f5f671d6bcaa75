from __future__ import annotations

from typing import Any

import pytest

from sesender.config import Config, load_config
from sesender.http.app import SesenderApp, create_app

API_KEY = "unit-test-key"


class ConfigOnlyContext:
    """Stands in for AppContext: the configuration, and ``None`` for every other component (the
    optional ones, like metrics, are then off; a handler reaching the store fails loudly)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __getattr__(self, name: str) -> Any:
        return None


def build_app(**settings: str) -> SesenderApp:
    """The real app with a context holding only the configuration.

    Good for everything answered before a handler touches the store or the pipeline: routing,
    authentication, and the validation that runs first (415, 413, 400 on the query string).
    """
    config = load_config({"API_KEY": API_KEY, **settings})
    context: Any = ConfigOnlyContext(config)
    return create_app(context)


@pytest.fixture
def app() -> SesenderApp:
    return build_app()
