"""The client commands of the ``sesender`` script: ``send``, ``stats``, ``cancel``, ``retry``,
``resume``, ``suppressions list|add|remove`` and ``keys create|list|revoke``, talking to a
running server over HTTP.

They never load the server's configuration: the server is ``--url`` (else ``$SESENDER_URL``, else
``http://localhost:3000``) and the key ``--api-key`` (else ``$API_KEY``); ``cli.py`` passes the
environment in. Results go to stdout (rich displays on a terminal, plain lines otherwise); an
error is one line on stderr, ``sesender: ...``. Exit codes: 0 done, 1 the server failed or could
not be reached, 2 usage or input file errors, 130 interrupted.

``send`` derives its Idempotency-Keys from what it submits, so running it again resumes rather than
mails everyone twice (see :func:`idempotency_key`); ``--resend`` asks for a second mailing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn, TextIO

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sesender.client.api import (
    RejectedAddress,
    SesenderClient,
    SubmitResult,
    TopicStats,
)
from sesender.client.recipients import (
    Recipients,
    batches,
    read_recipients_file,
    read_text_file,
    unique,
)
from sesender.errors import ClientError, InputFileError, UsageError
from sesender.templating import field_names

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_URL = "http://localhost:3000"
DEFAULT_BATCH_SIZE = 10_000
#: Rejected addresses printed after a send (all are counted).
SHOWN_REJECTED = 10
#: Pauses before the 2nd and 3rd attempt of a submission whose outcome is unknown (timeout,
#: broken connection, 503). The repeat carries the same Idempotency-Key, so it stores nothing twice.
SUBMIT_RETRY_DELAYS = (1.0, 3.0)
#: The start of every Idempotency-Key ``sesender send`` derives (``v1``: the recipe below).
IDEMPOTENCY_KEY_PREFIX = "sesender-cli-v1-"
#: The server's idempotency window in hours (``sesender.http.submission.IDEMPOTENCY_WINDOW``):
#: a re-run resumes within it; later, the same keys would store everything again.
IDEMPOTENCY_WINDOW_HOURS = 24
#: The send rate shown while following is measured over this many seconds.
RATE_WINDOW_SECONDS = 5.0
ORIGINAL_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

CLIENT_COMMANDS = frozenset(
    {"send", "stats", "cancel", "retry", "resume", "suppressions", "keys", "webhooks"}
)
SCOPES = ("send", "read", "admin")


# -- parsing ---------------------------------------------------------------------------------------


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that, with ``one_line_errors=True``, reports a usage error as one line
    (``sesender: send: ... (see 'sesender send --help')``) and refuses unknown arguments itself.
    With the default ``False`` it behaves exactly like ``argparse.ArgumentParser``."""

    def __init__(self, *args: Any, one_line_errors: bool = False, **kwargs: Any) -> None:
        self.one_line_errors = one_line_errors
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.one_line_errors:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        if not self.one_line_errors:
            super().error(message)
        command = self.prog.removeprefix("sesender ")
        self.exit(EXIT_USAGE, f"sesender: {command}: {message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument(
        "--url", help=f"sesender base URL (default: $SESENDER_URL, else {DEFAULT_URL})"
    )
    group.add_argument("--api-key", help="the X-API-KEY secret (default: $API_KEY)")


def add_client_commands(commands: argparse._SubParsersAction[CommandParser]) -> None:
    """Register the client subcommands on the ``sesender`` parser's subcommands."""
    send = commands.add_parser(
        "send",
        help="submit an email to many recipients, then follow its sending",
        description="Submit one email (an HTML file) to recipients from --to or a .csv/.txt "
        "file, in requests of at most --batch-size, then follow the topic until nothing is "
        "pending. Each request's Idempotency-Key is derived from the topic, subject, HTML, --at, "
        "its recipients and its place in the list, so running the same command again (after a "
        "crash, "
        "a Ctrl-C or a failed request) resumes: requests an earlier run got accepted are answered "
        "from the server's record and not sent again. The server keeps that record for "
        f"{IDEMPOTENCY_WINDOW_HOURS} hours; a re-run must use the same file, --at and "
        "--batch-size. "
        "Use --resend to send the same email again on purpose.",
        one_line_errors=True,
    )
    send.add_argument("--topic", required=True, help="topic id (statistics, cancellation)")
    send.add_argument("--subject", required=True, help="subject line")
    send.add_argument("--html", required=True, type=Path, metavar="FILE", help="UTF-8 HTML body")
    to = send.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", nargs="+", action="extend", metavar="EMAIL", help="recipient addresses")
    to.add_argument(
        "--recipients",
        type=Path,
        metavar="FILE",
        help="a .csv (column email/e-mail/address, else the first) or .txt (one per line) file;"
        " a CSV's other columns (header row required) fill the {{ name }} merge fields the"
        " subject and HTML use",
    )
    send.add_argument(
        "--at",
        metavar="WHEN",
        help="schedule: 'YYYY-MM-DD HH:MM:SS' (the server's SCHEDULE_TIMEZONE) or ISO 8601",
    )
    send.add_argument(
        "--from",
        dest="sender",
        metavar="ADDRESS",
        help="the sender, e.g. 'News <news@example.com>' (default: the server's"
        " AWS_SES_FROM_EMAIL; must be on its ALLOWED_SENDERS)",
    )
    send.add_argument("--reply-to", metavar="ADDRESS", help="a Reply-To address")
    send.add_argument(
        "--no-follow", action="store_true", help="return after submitting; do not follow"
    )
    send.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"recipients per request (default {DEFAULT_BATCH_SIZE:,}, the server's limit)",
    )
    send.add_argument(
        "--resend",
        action="store_true",
        help="send again even if an earlier run already submitted this email to these"
        " recipients (fresh idempotency keys); without it a re-run resumes",
    )
    send.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often to poll the topic while following (default 1)",
    )
    add_connection_options(send)

    stats = commands.add_parser("stats", help="a topic's statistics", one_line_errors=True)
    stats.add_argument("topic", help="topic id")
    stats.add_argument("--json", action="store_true", help="print the raw JSON")
    add_connection_options(stats)

    cancel = commands.add_parser(
        "cancel", help="stop every email of a topic not yet sent", one_line_errors=True
    )
    cancel.add_argument("topic", help="topic id")
    add_connection_options(cancel)

    retry = commands.add_parser(
        "retry", help="requeue a topic's emails that failed transiently", one_line_errors=True
    )
    retry.add_argument("topic", help="topic id")
    add_connection_options(retry)

    resume = commands.add_parser(
        "resume",
        help="lift the reputation guard's hold: on all sending, or with --topic on one topic",
        one_line_errors=True,
    )
    resume.add_argument(
        "--topic", help='the held topic to resume, "" for the default one (held emails requeued)'
    )
    add_connection_options(resume)

    suppressions = commands.add_parser(
        "suppressions", help="list, add or remove suppressed addresses", one_line_errors=True
    )
    actions = suppressions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list suppressed addresses", one_line_errors=True)
    listing.add_argument("--email", metavar="SUBSTR", help="only addresses containing SUBSTR")
    listing.add_argument(
        "--limit", type=positive_int, metavar="N", help="at most N entries (default: all)"
    )
    add_connection_options(listing)
    add = actions.add_parser("add", help="suppress an address", one_line_errors=True)
    add.add_argument("email")
    add.add_argument("--reason", help="why (default: manual)")
    add_connection_options(add)
    remove = actions.add_parser("remove", help="unsuppress an address", one_line_errors=True)
    remove.add_argument("email")
    add_connection_options(remove)

    keys = commands.add_parser(
        "keys",
        help="create, list or revoke named API keys (needs an admin key)",
        description="Named API keys with scopes: send (POST messages, read its own), read"
        " (statistics, topics, messages, suppressions, the dashboard), admin (everything)."
        " Rotation: create the new key, move the clients, revoke the old one.",
        one_line_errors=True,
    )
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser(
        "create", help="create a key and print it (shown only once)", one_line_errors=True
    )
    create.add_argument("name", help="what the key is for (e.g. 'newsletter app')")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        choices=SCOPES,
        required=True,
        help="a scope (repeat for several)",
    )
    create.add_argument(
        "--sender",
        dest="senders",
        action="append",
        metavar="ADDRESS_OR_DOMAIN",
        help="limit the key to this sender (repeat for several; default: every allowed sender)",
    )
    add_connection_options(create)
    key_list = key_actions.add_parser("list", help="list the keys", one_line_errors=True)
    key_list.add_argument("--revoked", action="store_true", help="include revoked keys")
    add_connection_options(key_list)
    revoke = key_actions.add_parser("revoke", help="revoke a key", one_line_errors=True)
    revoke.add_argument("id", type=positive_int, help="the key's id (see 'keys list')")
    add_connection_options(revoke)
    webhooks = commands.add_parser(
        "webhooks", help="list, inspect and manage webhook endpoints", one_line_errors=True
    )
    hooks = webhooks.add_subparsers(dest="action", required=True)
    add_connection_options(
        hooks.add_parser(
            "list", help="every endpoint: status, pending, failed, last error", one_line_errors=True
        )
    )
    show = hooks.add_parser(
        "show", help="one endpoint and its latest attempts", one_line_errors=True
    )
    show.add_argument("id")
    show.add_argument("--attempts", type=positive_int, default=10, metavar="N")
    add_connection_options(show)
    create = hooks.add_parser(
        "create", help="add an endpoint (prints its secret, once)", one_line_errors=True
    )
    create.add_argument("endpoint_url", metavar="URL", help="where to POST the events")
    create.add_argument(
        "--events", nargs="+", action="extend", metavar="TYPE", help="event types (default: all)"
    )
    create.add_argument("--description")
    add_connection_options(create)
    for action, help_text in (
        ("enable", "resume delivery to an endpoint"),
        ("disable", "stop delivery to an endpoint"),
        ("delete", "delete an endpoint with its pending events"),
        ("test", "queue a webhook.test event for an endpoint"),
    ):
        command = hooks.add_parser(action, help=help_text, one_line_errors=True)
        command.add_argument("id")
        add_connection_options(command)


# -- running ---------------------------------------------------------------------------------------


@dataclass
class Runtime:
    """What a command needs besides its arguments; tests build one with fakes."""

    console: Console
    errors: TextIO = field(default_factory=lambda: sys.stderr)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    retry_delays: Sequence[float] = SUBMIT_RETRY_DELAYS


def run_client_command(
    arguments: argparse.Namespace,
    environ: Mapping[str, str],
    *,
    runtime: Runtime | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Run one parsed client command; returns the exit code. Never raises for expected errors."""
    runtime = runtime or Runtime(console=Console(highlight=False))
    try:
        url = (arguments.url or environ.get("SESENDER_URL") or DEFAULT_URL).strip()
        api_key = arguments.api_key if arguments.api_key is not None else environ.get("API_KEY")
        if not api_key or not api_key.strip():
            raise UsageError("no API key: pass --api-key or set API_KEY")
        try:
            client = SesenderClient(url, api_key, transport)
        except ClientError as exc:  # an invalid --url
            raise UsageError(str(exc)) from exc
        with client:
            return COMMANDS[arguments.command](client, arguments, runtime)
    except (UsageError, InputFileError) as exc:
        return report(runtime, str(exc), EXIT_USAGE)
    except ClientError as exc:
        return report(runtime, str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return report(runtime, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as other tools do
        silence(runtime.console.file)
        return EXIT_FAILED


def silence(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at /dev/null so the interpreter's final flush of a
    broken pipe does not print a traceback."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def report(runtime: Runtime, message: str, code: int) -> int:
    print(f"sesender: {' '.join(message.split())}", file=runtime.errors, flush=True)
    return code


def say(console: Console, text: str) -> None:
    """One plain line: what scripts and logs read. Off a terminal, written as is (rich would
    expand tabs); on one, through rich without markup or wrapping."""
    if console.is_terminal:
        console.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)
    else:
        console.file.write(text + "\n")
        console.file.flush()


def require_topic(topic: str) -> str:
    if not topic.strip():
        raise UsageError("the topic id must not be empty")
    return topic


# -- send ------------------------------------------------------------------------------------------


@dataclass
class SendTotals:
    """The sum of the submission responses (plus the repeats dropped before sending)."""

    given: int = 0
    total: int = 0
    success: int = 0
    errors: int = 0
    duplicates: int = 0
    requests: int = 0
    #: Requests an earlier run had already got accepted (answered Idempotent-Replayed).
    replayed: int = 0
    #: Whether the emails wait for a future time (not sent at once, so not followed).
    scheduled: bool = False
    rejected: list[RejectedAddress] = field(default_factory=list)

    def add(self, result: SubmitResult) -> None:
        self.requests += 1
        self.replayed += result.replayed
        self.total += result.total
        self.success += result.success
        self.errors += result.errors
        self.duplicates += result.duplicates
        self.scheduled = self.scheduled or result.waits(datetime.now(UTC))
        self.rejected.extend(result.rejected[: max(0, SHOWN_REJECTED - len(self.rejected))])


def check_when(value: str | None) -> str | None:
    """``--at``: validated in the API's formats, then passed through as given."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        datetime.strptime(text, ORIGINAL_TIME_FORMAT)
    except ValueError:
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(
                f"--at {value!r} is not 'YYYY-MM-DD HH:MM:SS' or ISO 8601"
                " (for example 2024-01-01T09:00:00+09:00)"
            ) from None
    return text


def read_html(path: Path) -> str:
    content = read_text_file(path, "HTML file")
    if not content.strip():
        raise InputFileError(f"HTML file {path} is empty")
    return content


def send_command(client: SesenderClient, arguments: argparse.Namespace, runtime: Runtime) -> int:
    topic = require_topic(arguments.topic)
    subject: str = arguments.subject
    if not subject.strip():
        raise UsageError("the subject must not be empty")
    content = read_html(arguments.html)
    if arguments.to:
        recipients = unique(arguments.to)
        if not recipients.addresses:
            raise UsageError("--to has no addresses")
    else:
        fields = field_names(subject) | field_names(content)
        recipients = read_recipients_file(arguments.recipients, fields)
    scheduled_at = check_when(arguments.at)

    try:
        totals = submit_all(
            client,
            runtime,
            topic=topic,
            subject=subject,
            content=content,
            recipients=recipients,
            scheduled_at=scheduled_at,
            batch_size=arguments.batch_size,
            resend=arguments.resend,
            sender=arguments.sender,
            reply_to=arguments.reply_to,
        )
    except KeyboardInterrupt:
        return report(
            runtime,
            f"interrupted while submitting topic {topic}; run the same command again to resume"
            " (what was already accepted is not sent twice)",
            EXIT_INTERRUPTED,
        )
    print_submission(runtime.console, topic, totals)
    if totals.success == 0:
        say(runtime.console, f"topic {topic}: no address was accepted; nothing to follow")
        return EXIT_OK
    if totals.scheduled:
        say(
            runtime.console,
            f"topic {topic}: scheduled for {scheduled_at};"
            f" follow it later with: sesender stats {shlex.quote(topic)}",
        )
        return EXIT_OK
    if arguments.no_follow:
        return EXIT_OK
    try:
        final = follow(client, runtime, topic=topic, interval=arguments.interval)
    except KeyboardInterrupt:
        return report(
            runtime,
            f"stopped following topic {topic}; its emails keep sending"
            f" (sesender stats {shlex.quote(topic)}, or sesender cancel {shlex.quote(topic)}"
            " to stop them)",
            EXIT_INTERRUPTED,
        )
    say(runtime.console, final_line(topic, final))
    return EXIT_OK


def submit_all(
    client: SesenderClient,
    runtime: Runtime,
    *,
    topic: str,
    subject: str,
    content: str,
    recipients: Recipients,
    scheduled_at: str | None,
    batch_size: int,
    resend: bool = False,
    sender: str | None = None,
    reply_to: str | None = None,
) -> SendTotals:
    """Submit ``recipients`` in requests of at most ``batch_size``, showing progress.

    The keys are those of any earlier run with the same inputs (see :func:`idempotency_key`), so
    the server answers the batches it already stored from its record instead of storing them
    again; ``resend`` mixes a random value into them to submit everything anew.
    """
    totals = SendTotals(given=recipients.given, duplicates=recipients.repeats)
    parts = batches(recipients.items(), batch_size)
    salt = uuid.uuid4().hex if resend else ""
    progress = Progress(
        TextColumn("submitting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("recipients"),
        TimeElapsedColumn(),
        console=runtime.console,
        disable=not runtime.console.is_terminal,
    )
    with progress:
        task = progress.add_task("submit", total=len(recipients.addresses))
        for index, part in enumerate(parts):
            try:
                result = submit_with_retries(
                    client,
                    runtime,
                    topic_id=topic,
                    subject=subject,
                    content=content,
                    emails=part,
                    scheduled_at=scheduled_at,
                    sender=sender,
                    reply_to=reply_to,
                    idempotency_key=idempotency_key(
                        topic=topic,
                        subject=subject,
                        content=content,
                        emails=part,
                        scheduled_at=scheduled_at,
                        index=index,
                        salt=salt,
                        sender=sender,
                        reply_to=reply_to,
                    ),
                )
            except ClientError as exc:
                if index == 0:
                    raise
                raise ClientError(
                    f"request {index + 1} of {len(parts)} failed; {totals.success} of"
                    f" {totals.given} recipients were already accepted for topic {topic}: {exc}",
                    status=exc.status,
                ) from exc
            totals.add(result)
            progress.advance(task, len(part))
    return totals


def idempotency_key(
    *,
    topic: str,
    subject: str,
    content: str,
    emails: Sequence[str | Mapping[str, Any]],
    scheduled_at: str | None,
    index: int,
    salt: str = "",
    sender: str | None = None,
    reply_to: str | None = None,
) -> str:
    """The Idempotency-Key of batch ``index``: a SHA-256 over everything its request body holds
    (topic, subject, HTML, schedule, recipients with their merge-field data) and its place in the
    list.

    The same inputs give the same key in every run: that is what lets a re-run resume. Different
    inputs give a different key, so the server never answers 409 (key reused with another body)
    to a changed command: changing the subject or the schedule is a new email. Each field is
    length-prefixed, so two different inputs never hash the same bytes. ``salt`` (random, for
    ``--resend``) makes new keys. The key is 80 characters, within the server's 255. ``--from``
    and ``--reply-to`` count only when given, so the keys of commands without them stay as they
    were.
    """
    digest = hashlib.sha256()
    recipients = (
        item if isinstance(item, str) else json.dumps(item, sort_keys=True, ensure_ascii=False)
        for item in emails
    )
    # Given only with --from / --reply-to, and first, behind a tag no salt can equal (a salt is
    # empty or 32 hex digits), so no input without them hashes the same fields.
    senders = () if sender is None and reply_to is None else ("from", sender or "", reply_to or "")
    for text in (
        *senders,
        salt,
        topic,
        subject,
        content,
        scheduled_at or "",
        str(index),
        *recipients,
    ):
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return IDEMPOTENCY_KEY_PREFIX + digest.hexdigest()


def submit_with_retries(client: SesenderClient, runtime: Runtime, **request: Any) -> SubmitResult:
    """One request, repeated (same Idempotency-Key) while its outcome is unknown."""
    delays = list(runtime.retry_delays)
    while True:
        try:
            return client.submit(**request)
        except ClientError as exc:
            if not exc.retryable or not delays:
                raise
            runtime.sleep(delays.pop(0))


def print_submission(console: Console, topic: str, totals: SendTotals) -> None:
    requests = "1 request" if totals.requests == 1 else f"{totals.requests} requests"
    plural = "" if totals.given == 1 else "s"
    say(
        console,
        f"topic {topic}: submitted {totals.given} recipient{plural} in {requests}:"
        f" {totals.success} accepted, {totals.errors} rejected, {totals.duplicates} duplicates",
    )
    if totals.replayed:
        fresh = totals.requests - totals.replayed
        say(
            console,
            f"topic {topic}: {totals.replayed} of {requests} had been accepted by an earlier run"
            f" (replayed, not sent again); {fresh} newly accepted",
        )
    if totals.errors:
        shown = len(totals.rejected)
        more = f" (first {shown} of {totals.errors})" if shown < totals.errors else ""
        say(console, f"rejected{more}:")
        for rejected in totals.rejected:
            say(console, f"  {rejected.email}: {rejected.reason}")


# -- follow ----------------------------------------------------------------------------------------


@dataclass
class RateMeter:
    """Emails sent per second over the last ``window`` seconds."""

    window: float = RATE_WINDOW_SECONDS
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, at: float, sent: int) -> float:
        self.samples.append((at, sent))
        while len(self.samples) > 2 and at - self.samples[1][0] >= self.window:
            self.samples.popleft()
        first_at, first_sent = self.samples[0]
        if at <= first_at:
            return 0.0
        return max(0, sent - first_sent) / (at - first_at)


def follow(client: SesenderClient, runtime: Runtime, *, topic: str, interval: float) -> TopicStats:
    """Poll the topic every ``interval`` seconds until nothing is pending; a live display on a
    terminal. Returns the last statistics."""
    console = runtime.console
    meter = RateMeter()
    started = runtime.clock()
    if not console.is_terminal:
        say(console, f"topic {topic}: following until every email is sent")
    live = Live(console=console, auto_refresh=False, transient=False)
    if console.is_terminal:
        live.start()
    try:
        while True:
            stats = client.topic_stats(topic)
            now = runtime.clock()
            rate = meter.add(now, stats.requests("Sent"))
            if console.is_terminal:
                live.update(follow_display(topic, stats, rate, now - started), refresh=True)
            if stats.pending == 0:
                return stats
            runtime.sleep(interval)
    finally:
        if live.is_started:
            live.stop()


def follow_display(topic: str, stats: TopicStats, rate: float, elapsed: float) -> RenderableType:
    done = stats.total - stats.pending
    head = Table.grid(padding=(0, 1))
    head.add_row(
        Text(f"topic {topic}", style="bold"),
        ProgressBar(total=max(stats.total, 1), completed=done, width=30),
        Text(f"{done:,}/{stats.total:,} done"),
        Text(f"{rate:,.0f}/s", style="cyan"),
        Text(f"{elapsed:,.0f} s", style="dim"),
    )
    return Group(head, Text(counts_text(stats)))


def counts_text(stats: TopicStats) -> str:
    held = stats.requests("Held")
    return (
        f"{stats.requests('Sent')} sent, {stats.requests('Failed')} failed,"
        f" {stats.requests('Stopped')} stopped, {stats.requests('Suppressed')} suppressed,"
        f" {stats.results('Bounce')} bounced, {stats.results('Complaint')} complaints"
    ) + (f"; {held} held by the reputation guard (sesender resume --topic ...)" if held else "")


def final_line(topic: str, stats: TopicStats) -> str:
    return f"topic {topic}: {counts_text(stats)}"


# -- stats, cancel, retry --------------------------------------------------------------------------


def stats_command(client: SesenderClient, arguments: argparse.Namespace, runtime: Runtime) -> int:
    topic = require_topic(arguments.topic)
    stats = client.topic_stats(topic)
    if arguments.json:
        say(runtime.console, json.dumps(stats.as_json(), indent=2, ensure_ascii=False))
        return EXIT_OK
    if not stats.request_counts and not stats.result_counts:
        say(runtime.console, f"topic {topic}: no emails")
        return EXIT_OK
    table = Table(title=f"topic {topic}", title_justify="left", show_header=True)
    table.add_column("requests")
    table.add_column("count", justify="right")
    table.add_column("results")
    table.add_column("count", justify="right")
    requests = list(stats.request_counts.items())
    results = list(stats.result_counts.items())
    for row in range(max(len(requests), len(results))):
        left = requests[row] if row < len(requests) else ("", None)
        right = results[row] if row < len(results) else ("", None)
        table.add_row(
            left[0],
            "" if left[1] is None else f"{left[1]:,}",
            right[0],
            "" if right[1] is None else f"{right[1]:,}",
        )
    runtime.console.print(table)
    say(runtime.console, f"total {stats.total:,}, pending {stats.pending:,}")
    return EXIT_OK


def cancel_command(client: SesenderClient, arguments: argparse.Namespace, runtime: Runtime) -> int:
    topic = require_topic(arguments.topic)
    stopped = client.cancel_topic(topic)
    say(runtime.console, f"topic {topic}: stopped {stopped}")
    return EXIT_OK


def retry_command(client: SesenderClient, arguments: argparse.Namespace, runtime: Runtime) -> int:
    topic = require_topic(arguments.topic)
    requeued = client.retry_failed(topic)
    say(runtime.console, f"topic {topic}: requeued {requeued}")
    return EXIT_OK


def resume_command(client: SesenderClient, arguments: argparse.Namespace, runtime: Runtime) -> int:
    """An operator's decision after the reputation guard held sending or a topic."""
    if arguments.topic is None:
        if client.resume_sending():
            say(runtime.console, "sending resumed")
        else:
            say(runtime.console, "sending was not held by the reputation guard")
        return EXIT_OK
    topic = arguments.topic  # any id, the empty one (the original's default topic) included
    requeued = client.resume_topic(topic)
    shown = topic or '""'
    if requeued is None:
        say(runtime.console, f"topic {shown}: not held")
    else:
        say(runtime.console, f"topic {shown}: resumed, {requeued} held emails requeued")
    return EXIT_OK


# -- suppressions ----------------------------------------------------------------------------------


def suppressions_command(
    client: SesenderClient, arguments: argparse.Namespace, runtime: Runtime
) -> int:
    console = runtime.console
    if arguments.action == "add":
        entry = client.add_suppression(arguments.email, reason=arguments.reason)
        say(console, f"suppressed {entry.email} (reason: {entry.reason})")
        return EXIT_OK
    if arguments.action == "remove":
        removed = client.remove_suppression(arguments.email)
        say(console, f"removed {removed} from the suppression list")
        return EXIT_OK
    entries = client.iter_suppressions(email=arguments.email, limit=arguments.limit)
    if not console.is_terminal:  # tab-separated lines, streamed page by page, for scripts
        for entry in entries:
            fields = (entry.email, entry.reason, entry.source, entry.created_at or "")
            say(console, "\t".join(" ".join(value.split()) for value in fields))
        return EXIT_OK
    table = Table("email", "reason", "source", "since", title_justify="left")
    count = 0
    for entry in entries:
        table.add_row(entry.email, entry.reason, entry.source, entry.created_at or "")
        count += 1
    if count:
        console.print(table)
    say(console, f"{count} suppressed address{'es' if count != 1 else ''}")
    return EXIT_OK


# -- API keys ----------------------------------------------------------------------------------


def keys_command(client: SesenderClient, arguments: argparse.Namespace, runtime: Runtime) -> int:
    console = runtime.console
    if arguments.action == "create":
        created = client.create_api_key(
            arguments.name, sorted(set(arguments.scopes)), senders=arguments.senders
        )
        say(console, f"created key {created.get('id')} ({created.get('name')}):")
        say(console, str(created.get("key")))
        say(console, "it is shown only now: keep it somewhere safe")
        return EXIT_OK
    if arguments.action == "revoke":
        revoked = client.revoke_api_key(arguments.id)
        say(console, f"revoked key {revoked.get('id')} ({revoked.get('name')})")
        return EXIT_OK
    for key in client.list_api_keys(revoked=arguments.revoked):
        senders = key.get("senders")
        fields = (
            str(key.get("id")),
            str(key.get("name")),
            ",".join(str(s) for s in key.get("scopes") or []),
            str(key.get("prefix")),
            ",".join(str(s) for s in senders) if isinstance(senders, list) else "any sender",
            str(key.get("created_at") or ""),
            "last used " + str(key.get("last_used_at") or "never"),
            "revoked " + str(key["revoked_at"]) if key.get("revoked_at") else "valid",
        )
        say(console, "\t".join(" ".join(value.split()) for value in fields))
    return EXIT_OK


def webhook_line(endpoint: Mapping[str, Any]) -> str:
    error = endpoint.get("last_error") or endpoint.get("disabled_reason") or ""
    fields = (
        str(endpoint.get("id", "")),
        str(endpoint.get("status", "")),
        str(endpoint.get("pending", "")),
        str(endpoint.get("failed", "")),
        str(endpoint.get("url", "")),
        str(error),
    )
    return "\t".join(" ".join(value.split()) for value in fields)


def webhooks_command(
    client: SesenderClient, arguments: argparse.Namespace, runtime: Runtime
) -> int:
    console = runtime.console
    action = arguments.action
    if action == "create":
        created = client.create_webhook(
            arguments.endpoint_url,
            event_types=arguments.events,
            description=arguments.description,
        )
        say(console, f"created {created.get('id')} for {created.get('url')}")
        say(console, f"secret (shown once, store it now): {created.get('secret')}")
        return EXIT_OK
    if action in ("enable", "disable"):
        changed = client.update_webhook(arguments.id, enabled=action == "enable")
        say(console, f"{changed.get('id')} is {changed.get('status')}")
        return EXIT_OK
    if action == "delete":
        client.delete_webhook(arguments.id)
        say(console, f"deleted {arguments.id}")
        return EXIT_OK
    if action == "test":
        say(console, f"queued test event {client.test_webhook(arguments.id)}")
        return EXIT_OK
    if action == "show":
        endpoint = client.webhook(arguments.id)
        for name in (
            "id",
            "url",
            "description",
            "event_types",
            "status",
            "disabled_reason",
            "failing_since",
            "last_error",
            "last_error_at",
            "last_success_at",
            "pending",
            "failed",
        ):
            value = endpoint.get(name)
            shown = ", ".join(value) if isinstance(value, list) else value
            say(console, f"{name}: {'' if shown is None else shown}")
        for attempt in client.webhook_attempts(arguments.id, limit=arguments.attempts):
            say(
                console,
                "\t".join(
                    str(attempt.get(key) if attempt.get(key) is not None else "")
                    for key in (
                        "attempted_at",
                        "event_type",
                        "attempt",
                        "outcome",
                        "status_code",
                        "error",
                    )
                ),
            )
        return EXIT_OK
    endpoints = client.list_webhooks()
    if not console.is_terminal:
        for endpoint in endpoints:
            say(console, webhook_line(endpoint))
        return EXIT_OK
    table = Table("id", "status", "pending", "failed", "url", "last error", title_justify="left")
    for endpoint in endpoints:
        table.add_row(*webhook_line(endpoint).split("\t"))
    if endpoints:
        console.print(table)
    say(console, f"{len(endpoints)} webhook endpoint{'s' if len(endpoints) != 1 else ''}")
    return EXIT_OK


Command = Callable[[SesenderClient, argparse.Namespace, Runtime], int]

COMMANDS: Mapping[str, Command] = {
    "send": send_command,
    "stats": stats_command,
    "cancel": cancel_command,
    "retry": retry_command,
    "resume": resume_command,
    "suppressions": suppressions_command,
    "keys": keys_command,
    "webhooks": webhooks_command,
}
