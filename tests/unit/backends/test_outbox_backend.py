"""OutboxBackend: the .eml files parse back, are written atomically and stay in their folder."""

from __future__ import annotations

import contextlib
import dataclasses
import email
import email.message
import errno
import os
import re
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from typing import Unpack

import pytest
import trio

from actors import ThreadLane
from sesender.backends import Backend, OutboxBackend
from sesender.backends.base import OutgoingEmail
from sesender.backends.outbox import write_atomically
from sesender.errors import AccountSendError, PermanentSendError
from tests.unit.backends.outgoing_changes import OutgoingChanges

FIXED_NOW = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
FILE_NAME = re.compile(r"^\d+-\d+-[0-9a-f]{32}\.eml$")
BASE = OutgoingEmail(
    request_id=42,
    topic_id="spring-sale",
    sender="Shop <news@example.com>",
    recipient="user@example.org",
    subject="Hello",
    html='<p>Hi there, see <a href="https://example.com/offer">our offer</a>.</p>',
    headers=(
        ("List-Unsubscribe", "<https://sesender.example/v1/unsubscribe?token=t0k3n>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ),
    attempt=3,
)


def outgoing(**changes: Unpack[OutgoingChanges]) -> OutgoingEmail:
    return dataclasses.replace(BASE, **changes)


@pytest.fixture
def outbox_dir(tmp_path: Path) -> Path:
    return tmp_path / "outbox"


@pytest.fixture
def backend(outbox_dir: Path) -> OutboxBackend:
    return OutboxBackend(directory=outbox_dir, lane=ThreadLane("outbox", 2), now=lambda: FIXED_NOW)


def only_file(directory: Path) -> Path:
    files = list(directory.iterdir())
    assert len(files) == 1, files
    return files[0]


def parse(path: Path) -> email.message.EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_satisfies_the_backend_protocol(backend: OutboxBackend) -> None:
    protocol_view: Backend = backend
    assert protocol_view.name == "outbox"


async def test_written_file_parses_back(backend: OutboxBackend, outbox_dir: Path) -> None:
    message_id = await backend.send(outgoing())

    path = only_file(outbox_dir)
    assert FILE_NAME.match(path.name)
    assert path.name.startswith("42-3-")
    message = parse(path)
    assert message["From"] == "Shop <news@example.com>"
    assert message["To"] == "user@example.org"
    assert message["Subject"] == "Hello"
    assert message["Date"].datetime == FIXED_NOW
    assert message["Message-ID"] == f"<{message_id}>"
    # The Message-ID's unique part names the file, so an id in the database finds its file.
    assert message_id.split("@")[0] in path.name
    assert message_id.endswith("@example.com")
    assert message["X-Sesender-Request-Id"] == "42"
    assert message["X-Sesender-Topic"] == "spring-sale"
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().strip() == "Hi there, see our offer (https://example.com/offer)."
    assert html.get_content().strip() == BASE.html
    assert message.defects == []


async def test_extra_headers_are_present(backend: OutboxBackend, outbox_dir: Path) -> None:
    await backend.send(outgoing())
    message = parse(only_file(outbox_dir))
    for name, value in BASE.headers:
        assert message.get_all(name) == [value]


async def test_utf8_round_trips(backend: OutboxBackend, outbox_dir: Path) -> None:
    subject = "Grüße aus Köln 🎉 — " + "lange Betreffzeile " * 8
    await backend.send(
        outgoing(
            subject=subject,
            sender="Bücherei Team <news@bücher.de>",
            recipient="kunde@bücher.de",
            topic_id="frühling",
            html="<p>Schöne Grüße, 東京</p>",
        )
    )
    raw = only_file(outbox_dir).read_bytes()
    assert raw.isascii()  # encoded-words and transfer encodings, as SMTP needs
    message = parse(only_file(outbox_dir))
    assert message["Subject"] == subject
    assert message["From"] == "Bücherei Team <news@xn--bcher-kva.de>"
    assert message["To"] == "kunde@xn--bcher-kva.de"
    assert message["X-Sesender-Topic"] == "frühling"
    plain = message.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().strip() == "Schöne Grüße, 東京"
    assert plain.get_content_charset() == "utf-8"


async def test_injected_clock_sets_the_date(outbox_dir: Path) -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    backend = OutboxBackend(directory=outbox_dir, lane=ThreadLane("outbox", 1), now=lambda: moment)
    await backend.send(outgoing())
    assert parse(only_file(outbox_dir))["Date"].datetime == moment


async def test_creates_a_missing_directory(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "er" / "outbox"
    backend = OutboxBackend(directory=directory, lane=ThreadLane("outbox", 1))
    assert (await backend.account_status()).can_send
    await backend.send(outgoing())
    assert FILE_NAME.match(only_file(directory).name)


async def test_leaves_no_temporary_files(backend: OutboxBackend, outbox_dir: Path) -> None:
    ids = {await backend.send(outgoing(request_id=n)) for n in range(20)}
    assert len(ids) == 20
    names = sorted(path.name for path in await trio.Path(outbox_dir).iterdir())
    assert len(names) == 20
    assert all(FILE_NAME.match(name) for name in names)
    stats = backend.statistics()
    assert (stats.written, stats.failed, stats.directory) == (20, 0, str(outbox_dir))


def test_a_failed_write_removes_its_temporary_file(tmp_path: Path) -> None:
    # A directory already holds the target name, so the final os.replace fails.
    (tmp_path / "taken.eml").mkdir()
    with pytest.raises(OSError):  # noqa: PT011 - which OSError depends on the platform
        write_atomically(tmp_path, "taken.eml", b"data")
    assert [path.name for path in tmp_path.iterdir()] == ["taken.eml"]


@pytest.mark.parametrize("name", ["../escape.eml", "sub/dir.eml", "/abs.eml"])
def test_write_atomically_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="unsafe outbox file name"):
        write_atomically(tmp_path / "box", name, b"data")
    assert not (tmp_path / "escape.eml").exists()


@pytest.mark.parametrize(
    "recipient",
    [
        "../../etc/passwd@x.com",
        "..\\..\\windows@x.com",
        "a/b/c@x.com",
        "/etc/passwd@x.com",
        "user@../../etc",
        "x" * 5000 + "@example.com",
        "user@" + "sub." * 60 + "example.com",
        "nul\x00byte@x.com",
        "*?<>|@x.com",
    ],
)
async def test_hostile_addresses_cannot_escape_the_directory(
    tmp_path: Path, recipient: str
) -> None:
    directory = tmp_path / "outbox"
    backend = OutboxBackend(directory=directory, lane=ThreadLane("outbox", 1))
    # Refusing the address is fine too; writing anywhere else is not.
    with contextlib.suppress(PermanentSendError):
        await backend.send(outgoing(recipient=recipient))
    everything = [path.relative_to(tmp_path) for path in await trio.Path(tmp_path).rglob("*")]
    assert all(path.parts[0] == "outbox" and len(path.parts) <= 2 for path in everything)
    assert all(FILE_NAME.match(path.name) for path in everything if len(path.parts) == 2)


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hi\r\nBcc: victim@example.com"},
        {"subject": "Hi\nBcc: victim@example.com"},
        {"subject": "Hi\rBcc: victim@example.com"},
        {"topic_id": "topic\r\nBcc: victim@example.com"},
        {"headers": (("X-Campaign", "spring\r\nBcc: victim@example.com"),)},
        {"headers": (("X-Campaign\r\nBcc", "victim@example.com"),)},
        {"recipient": "user@example.org\r\nBcc: victim@example.com"},
        {"sender": "news@example.com\nBcc: victim@example.com"},
    ],
)
async def test_header_injection_is_refused(
    backend: OutboxBackend, outbox_dir: Path, changes: OutgoingChanges
) -> None:
    with pytest.raises(PermanentSendError):
        await backend.send(outgoing(**changes))
    directory = trio.Path(outbox_dir)
    assert not await directory.exists() or await directory.iterdir() == []


async def test_headers_outside_ses_rules_are_refused(backend: OutboxBackend) -> None:
    with pytest.raises(PermanentSendError, match="cannot be set"):
        await backend.send(outgoing(headers=(("Bcc", "everyone@example.com"),)))


async def test_an_unwritable_outbox_pauses_instead_of_failing(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "outbox"
    not_a_directory.write_text("a file where the folder should be")
    backend = OutboxBackend(directory=not_a_directory, lane=ThreadLane("outbox", 1))

    with pytest.raises(AccountSendError) as caught:
        await backend.send(outgoing())
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.code  # the errno name, e.g. EEXIST
    status = await backend.account_status()
    assert not status.can_send
    assert "cannot create outbox directory" in status.reason
    assert backend.statistics().failed == 1


async def test_a_full_disk_keeps_the_pause_until_a_file_can_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writable-looking directory on a full disk: the probe writes a file, as a send would,
    so sending does not resume only to pause again; no probe file is left behind."""
    backend = OutboxBackend(directory=tmp_path / "outbox", lane=ThreadLane("outbox", 1))
    real_fsync = os.fsync

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(AccountSendError) as caught:
        await backend.send(outgoing())
    assert caught.value.code == "ENOSPC"
    status = await backend.account_status()
    assert not status.can_send
    assert "No space left on device" in status.reason
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (await backend.account_status()).can_send
    assert list((tmp_path / "outbox").iterdir()) == []


async def test_relative_directory_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = OutboxBackend(directory=Path("relative"), lane=ThreadLane("outbox", 1))
    assert backend.directory == tmp_path / "relative"


async def test_aclose_is_harmless(backend: OutboxBackend) -> None:
    await backend.aclose()


async def test_a_batch_writes_one_file_per_email_and_returns_each_result_in_order(
    backend: OutboxBackend, outbox_dir: Path
) -> None:
    batch = [
        outgoing(request_id=1),
        outgoing(request_id=2, recipient="not an address"),
        outgoing(request_id=3),
    ]
    results = await backend.send_batch(batch)
    assert isinstance(results[1], PermanentSendError)
    paths = await trio.to_thread.run_sync(lambda: list(outbox_dir.iterdir()))
    written = {parse(path)["Message-ID"].strip("<>"): path for path in paths}
    assert sorted(written) == sorted(r for r in results if isinstance(r, str))
    assert len(written) == 2
    assert {written[r].name.split("-")[0] for r in results if isinstance(r, str)} == {"1", "3"}
