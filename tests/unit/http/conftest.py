from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

from sesender.api_keys import KeyRing
from sesender.config import Config, load_config
from sesender.http.app import SesenderApp, create_app
from sesender.models import ApiKey
from sesender.store.base import ApiKeyStore

API_KEY = "unit-test-key"


class NoNamedKeys:
    """An ApiKeyStore with no named keys: only API_KEY authenticates."""

    async def api_keys(self, *, include_revoked: bool) -> list[ApiKey]:
        return []

    async def touch_api_keys(self, used: Sequence[tuple[int, int]]) -> None:
        raise AssertionError("no named key can have been used")


class ConfigOnlyContext:
    """Stands in for AppContext: the configuration and a key ring knowing only ``API_KEY``, and
    ``None`` for every other component (the optional ones, like metrics, are then off; a handler
    reaching the store fails loudly)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.keys = KeyRing(
            cast(ApiKeyStore, NoNamedKeys()),
            configured_digest=config.server.api_key_digest,
            now_ms=lambda: 0,
        )

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
