from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sesender.store.sqlite import SqliteStore, open_sqlite_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(tmp_path / "test.db") as opened:
        yield opened
