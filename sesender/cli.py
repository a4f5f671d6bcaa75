"""The ``sesender`` command: ``serve`` (the default) and ``init-db``; and the client commands
(``send``, ``stats``, ``cancel``, ``retry``, ``suppressions``, see ``sesender.client.commands``).

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
    add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.command in CLIENT_COMMANDS:
        # A client of a running server: never reads the server's configuration or .env file.
        return run_client_command(arguments, os.environ)
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
    return serve(config)


def init_db(config: Config) -> int:
    from sesender.store.sqlite import migrate

    try:
        applied = migrate(config.database.path, busy_timeout=config.database.busy_timeout)
    except Exception as exc:  # sqlite3 errors and OS errors alike: report, exit non-zero
        logger.error("could not migrate %s: %s", config.database.path, exc)
        return EXIT_CRASHED
    logger.info(
        "database ready",
        extra={"event": "init_db", "path": str(config.database.path), "applied": applied},
    )
    return EXIT_OK


def serve(config: Config) -> int:
    # Imported here so that the client commands start fast (no trio, no Sentry).
    import trio

    from actors import ActorCrashed
    from sesender.monitoring import flush, init_sentry
    from sesender.service import run_service

    sentry = init_sentry(config.observability)
    logger.info(
        "starting sesender %s",
        __version__,
        extra={"event": "start", "settings": config.public_settings(), "sentry": sentry},
    )
    if config.server.api_key_generated:
        # Printed once, on stdout, so the operator of a quick start can use the API.
        print(
            f"sesender: no API_KEY set; generated one for this run: {config.server.api_key}",
            flush=True,
        )
    try:
        trio.run(run_service, config)
    except ActorCrashed as exc:
        logger.critical("stopped: %s", exc, extra={"event": "crashed", "actor": exc.actor})
        flush()
        return EXIT_CRASHED
    except StoreError as exc:
        logger.critical("stopped: %s", exc, extra={"event": "store_failed"})
        flush()
        return EXIT_CRASHED
    except KeyboardInterrupt:
        return EXIT_OK
    logger.info("stopped", extra={"event": "stopped"})
    flush()
    return EXIT_OK
