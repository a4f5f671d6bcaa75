"""Which API key and tracking secrets a start uses, against a real database file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sesender.config import Config, api_key_sha256, load_config
from sesender.startup_secrets import StartupSecrets, announce_api_key, load_startup_secrets
from sesender.store.service_secrets import API_KEY_SHA256, TRACKING_SECRET
from sesender.store.sqlite import open_sqlite_store
from sesender.tracking import TokenSigner, derive_secret

NOW = 1_768_471_200_000


async def start(path: Path, **settings: str) -> StartupSecrets:
    async with open_sqlite_store(path) as store:
        return await load_startup_secrets(load_config(settings), store, now_ms=NOW)


async def stored(path: Path, name: str) -> bytes | None:
    async with open_sqlite_store(path) as store:
        return await store.service_secret(name)


async def test_a_generated_api_key_is_created_once_and_kept_as_a_digest(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = await start(path)
    assert first.new_api_key is not None
    assert len(first.new_api_key) >= 40
    digest = api_key_sha256(first.new_api_key)
    assert first.config.server.api_key_digest == digest
    assert await stored(path, API_KEY_SHA256) == digest  # the digest, never the key

    second = await start(path)
    assert second.new_api_key is None  # not shown again, not replaced
    assert second.config.server.api_key_digest == digest


async def test_an_explicit_api_key_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    secrets = await start(path, API_KEY="explicit-key")
    assert secrets.new_api_key is None
    assert secrets.config.server.api_key_digest == api_key_sha256("explicit-key")
    assert await stored(path, API_KEY_SHA256) is None


async def test_the_generated_tracking_secret_survives_restarts(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    before = (await start(path)).signer
    token = before.sign("unsubscribe", 77)
    after = (await start(path)).signer
    assert after.verify("unsubscribe", token) == 77
    assert after.sign("unsubscribe", 77) == token  # still signing with the same secret
    kept = await stored(path, TRACKING_SECRET)
    assert kept is not None
    assert TokenSigner(kept).verify("unsubscribe", token) == 77


async def test_links_signed_with_the_api_key_stay_valid_after_the_upgrade(tmp_path: Path) -> None:
    """Earlier versions signed with a secret derived from API_KEY; their links keep working
    while API_KEY is unchanged, and new links no longer depend on API_KEY."""
    path = tmp_path / "s.db"
    sent_before_upgrade = TokenSigner(derive_secret("prod-key")).sign("unsubscribe", 5)
    signer = (await start(path, API_KEY="prod-key")).signer
    assert signer.verify("unsubscribe", sent_before_upgrade) == 5
    new_link = signer.sign("unsubscribe", 6)
    assert new_link != TokenSigner(derive_secret("prod-key")).sign("unsubscribe", 6)

    rotated = (await start(path, API_KEY="rotated-key")).signer
    assert rotated.verify("unsubscribe", new_link) == 6  # survives the API key rotation
    assert rotated.verify("unsubscribe", sent_before_upgrade) is None  # retired with the key


async def test_tracking_secret_rotation(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    generated = (await start(path)).signer
    generated_link = generated.sign("open", 1)

    configured = (await start(path, TRACKING_SECRET="first-secret-0123")).signer
    first_link = configured.sign("open", 2)
    assert first_link == TokenSigner(b"first-secret-0123").sign("open", 2)
    assert configured.verify("open", generated_link) == 1  # the stored one is still accepted

    rotated = (
        await start(
            path,
            TRACKING_SECRET="second-secret-0123",
            TRACKING_SECRETS_PREVIOUS="first-secret-0123",
        )
    ).signer
    assert rotated.sign("open", 3) == TokenSigner(b"second-secret-0123").sign("open", 3)
    assert rotated.verify("open", first_link) == 2
    assert rotated.verify("open", generated_link) == 1

    dropped = (await start(path, TRACKING_SECRET="second-secret-0123")).signer
    assert dropped.verify("open", first_link) is None  # no longer listed: no longer valid


def test_the_key_is_printed_once_then_only_where_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config: Config = load_config({"DATABASE_PATH": str(tmp_path / "k.db")})
    announce_api_key(config, "the-new-key")
    first = capsys.readouterr().out
    assert first.rstrip().endswith(": the-new-key")
    assert "printed only now" in first
    announce_api_key(config, None)
    later = capsys.readouterr().out
    assert "the-new-key" not in later
    assert "sesender reset-api-key" in later
    assert str(tmp_path / "k.db") in later
    announce_api_key(load_config({"API_KEY": "set"}), None)
    assert capsys.readouterr().out == ""
