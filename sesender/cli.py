"""The ``sesender`` command: ``serve`` (the default), ``init-db``, ``reset-api-key``, ``backup``,
``migrate-store`` and ``deliver-webhooks`` (the webhook deliverer alone, beside a service that does
not deliver); and the client commands (``send``, ``stats``, ``cancel``, ``retry``, ``resume``,
``suppressions``, ``keys``, ``webhooks``, see ``sesender.client.commands``).

Configuration is read here, once, from the environment and an optional ``.env`` file, and passed
explicitly to everything else. Exit codes: 0 after a clean shutdown, 1 when an actor crashed,
2 for invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sesender import __version__
from sesender.client.commands import (
    CLIENT_COMMANDS,
    CommandParser,
    add_client_commands,
    run_client_command,
)
from sesender.config import Config, load_config, read_environment
from sesender.errors import ConfigError, StoreError
from sesender.logs import configure_logging

logger = logging.getLogger("sesender")

EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sesender", description="Self-hosted bulk email service for AWS SES."
    )
    parser.add_argument("--version", action="version", version=f"sesender {__version__}")
    parser.add_argument(
        "--env-file", type=Path, default=Path(".env"), help="optional .env file (default ./.env)"
    )
    commands = parser.add_subparsers(dest="command", parser_class=CommandParser)
    commands.add_parser("serve", help="run the service (the default)")
    commands.add_parser("init-db", help="create or migrate the database, then exit")
    commands.add_parser(
        "reset-api-key",
        help="without API_KEY: generate a new API key, keep it in the database, print it",
    )
    backup = commands.add_parser(
        "backup",
        help="write a consistent, verified copy of the (running) service's database to PATH",
    )
    backup.add_argument("path", type=Path, metavar="PATH", help="the new file (must not exist)")
    migrate = commands.add_parser(
        "migrate-store",
        help="copy a SQLite database (service stopped) into an empty PostgreSQL database",
    )
    migrate.add_argument("--from", dest="source", required=True, help="sqlite:PATH")
    migrate.add_argument("--to", dest="target", required=True, help="postgresql://...")
    commands.add_parser(
        "deliver-webhooks",
        help="run only the webhook deliverer (beside a service with"
        " WEBHOOK_DELIVERY_ENABLED=false)",
    )
    add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command in CLIENT_COMMANDS:
        # A client of a running server: never reads the server's configuration or .env file.
        return run_client_command(arguments, os.environ)
    if arguments.command == "migrate-store":
        return migrate_store(arguments.source, arguments.target)
    try:
        config = load_config(read_environment(os.environ, env_file=arguments.env_file))
    except ConfigError as exc:
        print(f"sesender: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(
        config.observability.log_level, config.observability.log_format.value == "json"
    )
    if arguments.command == "init-db":
        return init_db(config)
    if arguments.command == "reset-api-key":
        return reset_api_key(config)
    if arguments.command == "backup":
        return backup(config, arguments.path)
    if arguments.command == "deliver-webhooks":
        return serve(config, webhooks_only=True)
    return serve(config)


def init_db(config: Config) -> int:
    from sesender.store import postgres
    from sesender.store.sqlite import migrate

    where = "PostgreSQL" if config.database.url else str(config.database.path)
    try:
        if config.database.url is not None:
            applied = postgres.migrate(config.database.url)
        else:
            applied = migrate(config.database.path, busy_timeout=config.database.busy_timeout)
    except Exception as exc:  # database errors and OS errors alike: report, exit non-zero
        logger.error("could not migrate %s: %s", where, exc)
        return EXIT_CRASHED
    logger.info(
        "database ready",
        extra={"event": "init_db", "path": where, "applied": applied},
    )
    return EXIT_OK


def migrate_store(source: str, target: str) -> int:
    """``sesender migrate-store --from sqlite:PATH --to postgresql://...`` (no configuration:
    both databases are named on the command line)."""
    from sesender.store.migrate_store import MigrateStoreError, migrate_store, parse_source

    configure_logging("INFO", False)
    try:
        report = migrate_store(parse_source(source), target)
    except MigrateStoreError as exc:
        print(f"sesender: {exc}", file=sys.stderr)
        return EXIT_CRASHED
    except Exception as exc:  # database errors: report, exit non-zero (nothing was written)
        print(f"sesender: could not copy the database: {exc}", file=sys.stderr)
        return EXIT_CRASHED
    copied = ", ".join(f"{table} {count}" for table, count in report.rows.items())
    print(f"sesender: copied {copied}", flush=True)
    return EXIT_OK


def reset_api_key(config: Config) -> int:
    """Replace the generated API key kept in the database (its digest) and print the new one.

    The only way to see a generated key again after its first start, since only its digest is
    kept. A running service keeps the key it read at start until it is restarted.
    """
    import time

    from sesender.config import api_key_sha256
    from sesender.startup_secrets import generate_api_key
    from sesender.store.service_secrets import API_KEY_SHA256
    from sesender.store.sqlite import replace_service_secret_now

    if not config.server.api_key_generated:
        print(
            "sesender: API_KEY is set, so no generated key is used; change API_KEY instead",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    key = generate_api_key()
    try:
        if config.database.url is not None:
            from sesender.store import postgres

            postgres.replace_service_secret_now(
                config.database.url,
                API_KEY_SHA256,
                api_key_sha256(key),
                now_ms=time.time_ns() // 1_000_000,
            )
        else:
            replace_service_secret_now(
                config.database.path,
                API_KEY_SHA256,
                api_key_sha256(key),
                now_ms=time.time_ns() // 1_000_000,
                busy_timeout=config.database.busy_timeout,
            )
    except Exception as exc:  # sqlite3 errors and OS errors alike: report, exit non-zero
        logger.error("could not store a new API key in %s: %s", config.database.path, exc)
        return EXIT_CRASHED
    print(
        f"sesender: new API key kept in {config.database.path} (a running service uses it once"
        f" restarted): {key}",
        flush=True,
    )
    return EXIT_OK


def backup(config: Config, path: Path) -> int:
    """``sesender backup PATH``: see :mod:`sesender.store.sqlite_backup`. Prints the size."""
    import time

    from sesender.store.sqlite_backup import BackupError, backup_database

    if config.database.is_postgres:
        print(
            "sesender: backup copies a SQLite database; with DATABASE_URL use the database's"
            " own tools (pg_dump, point-in-time recovery: docs/operations.md, section 5)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        report = backup_database(
            config.database.path,
            path,
            busy_timeout=config.database.busy_timeout,
            now_ms=time.time_ns() // 1_000_000,
        )
    except (BackupError, OSError) as exc:
        print(f"sesender: backup failed: {exc}", file=sys.stderr)
        return EXIT_CRASHED
    print(
        f"sesender: backup written to {report.path}: {report.size_bytes} bytes"
        f" ({report.size_bytes / 1_048_576:.1f} MiB), {report.emails} emails (highest request id"
        f" {report.max_request_id}), schema version {report.schema_version}, verified,"
        f" in {report.seconds:.2f} s",
        flush=True,
    )
    return EXIT_OK


def serve(config: Config, *, webhooks_only: bool = False) -> int:
    # Imported here so that the client commands start fast (no trio, no Sentry).
    import trio

    from actors import ActorCrashed
    from sesender.monitoring import flush, init_sentry
    from sesender.service import run_service, run_webhook_deliverer

    sentry = init_sentry(config.observability)
    logger.info(
        "starting sesender %s",
        __version__,
        extra={"event": "start", "settings": config.public_settings(), "sentry": sentry},
    )
    try:
        trio.run(run_webhook_deliverer if webhooks_only else run_service, config)
    except ActorCrashed as exc:
        logger.critical("stopped: %s", exc, extra={"event": "crashed", "actor": exc.actor})
        flush()
        return EXIT_CRASHED
    except StoreError as exc:
        logger.critical("stopped: %s", exc, extra={"event": "store_failed"})
        flush()
        return EXIT_CRASHED
    except ConfigError as exc:  # found at start, against the other instances (PostgreSQL)
        logger.critical("not started: %s", exc, extra={"event": "config_error"})
        print(f"sesender: {exc}", file=sys.stderr)
        flush()
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    logger.info("stopped", extra={"event": "stopped"})
    flush()
    return EXIT_OK
