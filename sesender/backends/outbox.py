"""OutboxBackend: writes each email as an RFC 5322 ``.eml`` file instead of sending it.

This is the default backend, so the quick start works without an AWS account, and the files open
in any mail client to show what SES would have been asked to send: the same sender and recipient
normalisation (punycode), the same custom-header rules, the same generated text part
(:mod:`sesender.backends.text`).

File names are built only from numbers and a random UUID (``<request_id>-<attempt>-<uuid>.eml``),
never from an address, so no recipient can choose where a file lands. The UUID is also the local
part of the ``Message-ID`` header, and the id returned by ``send`` is that ``Message-ID`` without
its angle brackets, so a message id found in the database leads straight to its file.

Each file is written atomically: a temporary file (a dot-file ending in ``.tmp``) in the same
directory, flushed and fsynced, then ``os.replace``-d into place, then the directory is fsynced. A
reader never sees half a message, and a crash leaves at worst a temporary file, never a torn
``.eml``. File I/O runs in the injected ``ThreadLane``.

An ``OSError`` (directory not writable, disk full) is raised as ``AccountSendError``: no email can
be written until an operator acts, which is exactly "pause everything, fail nothing".
``account_status()`` checks that the directory can be created and written, to end such a pause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import MessageError
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from pathlib import Path

import trio

from actors import ThreadLane
from sesender.backends.addresses import ascii_address
from sesender.backends.base import AccountStatus, OutgoingEmail, SendResult
from sesender.backends.headers import require_single_line
from sesender.backends.one_by_one import send_one_by_one
from sesender.backends.sendable import check_sendable
from sesender.backends.text import text_part
from sesender.errors import AccountSendError, PermanentSendError

__all__ = ["OutboxBackend", "OutboxStatistics", "build_message", "message_id_of"]

# A Message-ID domain must be a plain hostname; anything else falls back to this one.
FALLBACK_MESSAGE_ID_DOMAIN = "sesender.invalid"
HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
# CRLF line ends (RFC 5322) and 7-bit bodies: non-ASCII text goes quoted-printable or base64, so
# the file is valid for any reader or relay, not only those that speak 8BITMIME.
OUTBOX_POLICY = policy.compat32.clone(linesep="\r\n")


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    """A snapshot: the directory written to, files written, writes that failed."""

    directory: str
    written: int
    failed: int


def message_id_domain(sender: str) -> str:
    """The domain for generated Message-IDs: the sender's, when it is a plain ASCII hostname."""
    domain = sender.rstrip(">").rpartition("@")[2]
    return domain if HOSTNAME.match(domain) else FALLBACK_MESSAGE_ID_DOMAIN


def build_message(email: OutgoingEmail, *, unique: str, date: datetime) -> MIMEMultipart:
    """Build the RFC 5322 message for ``email`` (pure: no I/O, no clock, no randomness).

    ``unique`` becomes the local part of the Message-ID. Raises :class:`PermanentSendError` for
    addresses SES could not send to, for header injection attempts and for headers outside SES's
    rules.

    Built with the ``compat32`` MIME classes rather than ``EmailMessage``: the modern header
    machinery costs about 7 ms per message, which capped the outbox near 100 emails/s and held
    the GIL away from the event loop; this costs under 1 ms for the same bytes on the wire
    (UTF-8 encoded-words in headers, quoted-printable or base64 bodies).
    """
    sender, recipient = check_sendable(email)
    require_single_line("topic id", email.topic_id)  # it goes into X-Sesender-Topic

    message = MIMEMultipart("alternative")
    try:
        message["From"] = sender
        message["To"] = recipient
        message["Subject"] = header_value("Subject", email.subject)
        if email.reply_to is not None:
            message["Reply-To"] = ascii_address(email.reply_to, field="reply-to")
        message["Date"] = format_datetime(date)
        message["Message-ID"] = f"<{unique}@{message_id_domain(sender)}>"
        message["X-Sesender-Request-Id"] = str(email.request_id)
        message["X-Sesender-Topic"] = header_value("X-Sesender-Topic", email.topic_id)
        for name, value in email.headers:
            message[name] = value
        message.attach(MIMEText(text_part(email), "plain", "utf-8"))
        message.attach(MIMEText(email.html, "html", "utf-8"))
    except (ValueError, MessageError) as exc:
        # The email package refuses what it cannot represent; that is this message's fault.
        raise PermanentSendError(f"cannot build the message: {exc}", code="InvalidMessage") from exc
    return message


def header_value(name: str, value: str) -> str:
    """ASCII as is; anything else as UTF-8 encoded-words (RFC 2047), folded after ``name``."""
    return value if value.isascii() else Header(value, "utf-8", header_name=name).encode()


def serialise(message: MIMEMultipart) -> bytes:
    try:
        return message.as_bytes(policy=OUTBOX_POLICY)
    except (ValueError, MessageError) as exc:
        raise PermanentSendError(
            f"cannot serialise the message: {exc}", code="InvalidMessage"
        ) from exc


def message_id_of(message: MIMEMultipart) -> str:
    """The Message-ID header without its angle brackets (what ``send`` returns)."""
    return str(message["Message-ID"]).strip().removeprefix("<").removesuffix(">")


def write_atomically(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``directory/name`` so that the file appears whole or not at all."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    # The name is built from numbers and a UUID; this guards the invariant, not user input.
    if target.parent != directory or target.name != name:
        raise ValueError(f"unsafe outbox file name {name!r}")
    temporary = directory / f".{name}.{uuid.uuid4().hex}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    fsync_directory(directory)
    return target


def fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); platforms that cannot open a directory skip it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as exc:
        # Some file systems refuse fsync on a directory; the file itself is already synced.
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(descriptor)


def check_writable(directory: Path) -> str:
    """Return "" when ``directory`` exists (created if needed) and takes a new file, else a reason.

    A permission check is not enough: a full disk (or a file-size limit) passes it and refuses
    every ``.eml`` anyway, and the account monitor would resume sending only to pause again. So
    this writes, syncs and removes a small probe file, as a send would.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create outbox directory {directory}: {exc}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"outbox directory {directory} is not writable"
    try:
        descriptor, probe = tempfile.mkstemp(dir=directory, prefix=".probe-", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(b"sesender outbox probe\n")
                file.flush()
                os.fsync(file.fileno())
        finally:
            os.unlink(probe)
    except OSError as exc:
        return f"cannot write to outbox directory {directory}: {exc}"
    return ""


class OutboxBackend:
    """Writes one ``.eml`` file per email into ``directory`` (see the module docstring)."""

    name = "outbox"

    def __init__(
        self,
        *,
        directory: Path,
        lane: ThreadLane,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # Absolute once, so the containment check and the statistics never depend on the cwd.
        self.directory = Path(os.path.abspath(directory))
        self.lane = lane
        self.now = now
        self._written = 0
        self._failed = 0

    async def send(self, email: OutgoingEmail) -> str:
        """Write ``email`` to a new ``.eml`` file and return its Message-ID (without ``<>``)."""
        unique = uuid.uuid4().hex
        date = self.now()
        name = f"{int(email.request_id)}-{int(email.attempt)}-{unique}.eml"

        def write() -> str:
            # Building, serialising and writing all happen in the lane: none of it is the
            # event loop's work (a refused message raises PermanentSendError from here).
            message = build_message(email, unique=unique, date=date)
            write_atomically(self.directory, name, serialise(message))
            return message_id_of(message)

        try:
            message_id = await self.lane.run(write)
        except OSError as exc:
            self._failed += 1
            raise AccountSendError(
                f"cannot write to outbox {self.directory}: {exc}",
                code=errno.errorcode.get(exc.errno or 0, "OSError"),
            ) from exc
        self._written += 1
        return message_id

    async def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        """One file per email, written concurrently in the lane; one result per email, in order."""
        return await send_one_by_one(self.send, emails, concurrently=True)

    async def account_status(self) -> AccountStatus:
        """``can_send`` is whether the directory exists (or can be created) and is writable."""
        reason = await self.lane.run(check_writable, self.directory)
        return AccountStatus(can_send=not reason, reason=reason)

    async def aclose(self) -> None:
        """Nothing stays open between sends."""
        await trio.lowlevel.checkpoint()

    def statistics(self) -> OutboxStatistics:
        """Return a frozen snapshot of the counters."""
        return OutboxStatistics(
            directory=str(self.directory), written=self._written, failed=self._failed
        )
