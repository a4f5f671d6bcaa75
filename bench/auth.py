"""What checking ``X-API-KEY`` and the route's scope costs per request, before and after named keys.

The end-to-end figures (``bench.api``: the POST of 10,000 and the pixel) are dominated by work
that did not change and, on a shared machine, by noise of tens of percent; so the part that did
change is measured here on its own, in CPU time of this thread (``time.thread_time``), in one run,
interleaved, median of ``--rounds``:

- **before**: the previous hook's work, ``PUBLIC_ENDPOINTS`` membership and
  ``check_api_key_digest`` (SHA-256, ``hmac.compare_digest``) of ``API_KEY``;
- **API_KEY**: the new hook's work for the configured key: ``access_for`` on the route table,
  ``KeyRing.authenticate`` (SHA-256, ``compare_digest``) and ``authorize``;
- **named key**: the same for a named ``send`` key among ``--keys`` valid keys, the ring's copy
  fresh (the once-a-second read from the store is not in it; the store read is timed apart:
  ``refresh``, one ``SELECT`` of the valid keys on a real SQLite database, per second);
- **pixel route**: the hook's work on the public pixel route (``access_for`` alone).

    python -m bench.auth
    python -m bench.auth --quick        # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from bench.common import add_output_arguments, format_table, write_result
from sesender.api_keys import KeyRing, generate_named_key
from sesender.config import api_key_sha256
from sesender.http.app import PUBLIC_ENDPOINTS
from sesender.http.auth import authorize, check_api_key_digest
from sesender.http.scopes import access_for
from sesender.models import NewApiKey, Scope
from sesender.store.sqlite import open_sqlite_store

NAME = "auth"
API_KEY = "bench-configured-key-0123456789abcdef"
SUBMIT = ("POST", "/v1/messages")
PIXEL = ("GET", "/v1/events/open")


async def per_call_us(
    call: Callable[[], Awaitable[None]], count: int, clock: Callable[[], float] = time.thread_time
) -> float:
    started = clock()
    for _ in range(count):
        await call()
    return (clock() - started) / count * 1e6


async def measure(arguments: argparse.Namespace) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as directory:
        async with open_sqlite_store(Path(directory) / "auth.db") as store:
            named = ""
            for index in range(arguments.keys):
                key, prefix, digest = generate_named_key()
                named = key
                await store.create_api_key(
                    NewApiKey(
                        name=f"key {index}",
                        scopes=frozenset({Scope.SEND}),
                        senders=None,
                        prefix=prefix,
                        digest=digest,
                        created_at_ms=0,
                    )
                )
            configured = api_key_sha256(API_KEY)
            ring = KeyRing(store, configured_digest=configured, now_ms=lambda: 0)
            await ring.authenticate(named)  # the copy is read once; then fresh for a second

            async def before() -> None:
                if "messages.submit_messages" not in PUBLIC_ENDPOINTS:
                    check_api_key_digest(API_KEY, configured)

            def after(presented: str) -> Callable[[], Awaitable[None]]:
                async def call() -> None:
                    access = access_for(*SUBMIT)
                    assert access is not None
                    authorize(await ring.authenticate(presented), access)

                return call

            async def pixel() -> None:
                access_for(*PIXEL)

            async def refresh() -> None:
                await store.api_keys(include_revoked=False)

            cases: dict[str, Callable[[], Awaitable[None]]] = {
                "before: API_KEY": before,
                "after: API_KEY": after(API_KEY),
                f"after: named key (of {arguments.keys})": after(named),
                "after: pixel route (public)": pixel,
            }
            samples: dict[str, list[float]] = {name: [] for name in cases}
            refreshes: list[float] = []
            for _ in range(arguments.rounds):
                for name, call in cases.items():
                    # The key ring's copy must stay fresh during a round: the trio clock moves
                    # on, so the round is short (a few thousand calls) and re-read between.
                    ring.invalidate()
                    await ring.authenticate(named)
                    samples[name].append(await per_call_us(call, arguments.calls))
                # The read runs in the store's reader thread: the process's CPU time, all threads.
                refreshes.append(
                    await per_call_us(refresh, max(1, arguments.calls // 100), time.process_time)
                )
    figures = {name: {"cpu_us_per_request": statistics.median(v)} for name, v in samples.items()}
    figures["refresh: read the valid keys (once a second)"] = {
        "cpu_us_per_request": statistics.median(refreshes)
    }
    return figures


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5_000, help="per case and round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keys", type=int, default=50, help="valid named keys")
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.calls, arguments.rounds, arguments.keys = 50, 1, 3
    figures = trio.run(measure, arguments)
    print(
        format_table(
            ["check", "CPU us per request (median of rounds)"],
            [[name, data["cpu_us_per_request"]] for name, data in figures.items()],
        )
    )
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
