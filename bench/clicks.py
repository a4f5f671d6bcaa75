"""Click tracking benchmarks: the tracked-link redirect under load, and link rewriting.

1. **Redirect.** The real service runs as a process (the ``sesender`` console script, memory
   backend, JSON logs, a fixed ``TRACKING_SECRET``). ``--repeats`` x (``--warmup`` + ``--clicks``)
   emails with click tracking (a message with two links, ``track_clicks: true``, scheduled in
   2099 so nothing is sent while measuring: a click is recorded whatever the email's status) are
   stored, and one ``GET /v1/events/click/<token>/<code>`` is prepared per email, signed here
   with the same secret. The load generator runs in this process, apart from both servers (httpx
   on trio, ``--concurrency`` requests in flight, kept-alive connections on 127.0.0.1); every
   answer must be a 302 to the link's exact URL. The **baseline** is a bare quart-trio app served
   by hypercorn on trio in its own process, answering the same paths with a 302 to the same URL
   and the same headers, without verifying or recording anything. The emails are stored
   through the service being measured, so their redirect targets are in its memory
   (:mod:`sesender.store.click_targets`); ``--cold`` restarts it first, so that every target is
   read from the database, as for emails submitted before a restart or to another instance.
   The two alternate
   ``--repeats`` times (each sesender repeat clicks fresh emails, so every click is a new
   unique click: a new ``results`` row, a new per-email row and a counter update); the headline
   is the best rate of each and the ratio sesender / baseline (aim >= 0.7), and the ratio of
   the CPU time each server process spent per request, baseline / sesender (the lowest of each
   side; aim >= 0.7 too: the load generator shares the machine, so throughput alone can hide a
   route that costs twice the bare one). Both must pass. The redirect answers before the click is
   committed (the result writer group-commits behind it), so afterwards the topic's
   ``clicks.total`` must reach every click made, and its per-link counts must agree.
2. **Rewrite.** CPU time (``time.thread_time``) of rewriting the links of a ~100 KB newsletter
   (160 stories with a link and an image each: 160 tracked links), uncached
   (``sesender.links.track_links``, what happens once per content), median of ``--rewrites``
   runs; beside it, per recipient, the cost of putting a token into the rewritten content
   (``TrackedHtml.render``) and, for scale, of composing an email of the same content without
   click tracking (``MessageComposer.compose``, the pixel inserted). Aim: rewriting < 1 ms per
   content.

    python -m bench.clicks                 # both parts, default sizes
    python -m bench.clicks --part rewrite
    python -m bench.clicks --quick         # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.api import api_client, cpu_ratio, errors_logged, service_command, stop_all
from bench.common import add_output_arguments, format_table, verdict, write_result
from bench.webhook import Process, process_cpu_seconds, progress

NAME = "clicks"
PARTS = ("redirect", "rewrite")
REDIRECT_AIM = 0.7
REWRITE_AIM_MS = 1.0
TRACKING_SECRET = "bench-clicks-tracking-secret-0123456789"
TOPIC = "bench_clicks"
TARGET = "https://shop.example.com/sale?utm_source=mail&utm_campaign=spring%20sale#top"
SECOND = "https://blog.example.com/post/1"
CONTENT = (
    "<html><body><h1>Spring sale</h1>"
    '<p><a href="https://shop.example.com/sale?utm_source=mail&amp;utm_campaign=spring%20sale#top">'
    'Shop now</a> or <a href="https://blog.example.com/post/1">read the story</a>.</p>'
    "</body></html>"
)
FAR_FUTURE = "2099-01-01T00:00:00+00:00"
_STORY = (
    "<tr><td style='padding:10px;font-family:Arial,sans-serif;color:#333;line-height:1.5'>"
    "<h2 style='font-size:20px;margin:0 0 8px'>Story {i}: a headline that runs long</h2>"
    "<p>Some <a href='https://example.com/stories/{i}?utm_source=newsletter&amp;utm_medium=email'"
    " style='color:#06c'>linked text</a> and a paragraph of marketing copy that goes on for a"
    " while, with <b>bold</b> words, more words to fill it, a second sentence about the product"
    " and why it matters, and a third one that says it again in other words.</p>"
    "<img src='https://cdn.example.com/{i}.png' alt='Product {i}' width='600'"
    " style='display:block;border:0'></td></tr>"
)
#: A 100 KB newsletter with 160 tracked links (one per story).
NEWSLETTER = (
    "<html><head><style>td{color:#333}</style></head><body><table>"
    + "".join(_STORY.format(i=i) for i in range(160))
    + "</table></body></html>"
)


# --- 1. the redirect ---------------------------------------------------------------------------


def store_tracked_emails(service_url: str, total: int) -> list[int]:
    """Store ``total`` tracked emails (scheduled in 2099) in the topic; their request ids."""
    ids: list[int] = []
    with api_client(service_url) as client:
        for start in range(0, total, 10_000):
            count = min(10_000, total - start)
            message = {
                "topic_id": TOPIC,
                "emails": [f"c{start + n}@example.com" for n in range(count)],
                "subject": "Spring sale",
                "content": CONTENT,
                "track_clicks": True,
            }
            response = client.post(
                "/v1/messages", json={"messages": [message], "scheduled_at": FAR_FUTURE}
            )
            response.raise_for_status()
            first = response.json()["first_request_id"]
            ids.extend(range(first, first + count))
    return ids


def click_paths(ids: Sequence[int]) -> list[str]:
    from sesender.tracking import TokenSigner

    signer = TokenSigner(TRACKING_SECRET.encode())
    code = signer.link_code(0, TARGET)
    return [f"/v1/events/click/{signer.sign('click', request_id)}/{code}" for request_id in ids]


def generate_load(
    everything: Sequence[str],
    concurrency: int,
    warmup: int,
    targets: Sequence[tuple[str, str, int]],
) -> dict[str, Any]:
    """For each (side, URL, server pid) of ``targets`` in turn: GET every path from that server
    (not following redirects), ``concurrency`` at a time over kept-alive connections; the first
    ``warmup`` untimed. Every answer must be a 302 to :data:`TARGET`. A report by side, with
    the CPU time of this thread and of the server process per request over the timed part."""
    import trio

    warmup_paths, paths = everything[:warmup], everything[warmup:]

    async def fetch_all(url: str, server_pid: int) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        wrong_targets = 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=url, limits=limits, timeout=60, follow_redirects=False
        ) as client:

            async def warm(path: str) -> None:
                response = await client.get(path)
                if response.status_code != 302:
                    raise RuntimeError(f"warm-up {path}: {response.status_code}")

            async with trio.open_nursery() as nursery:
                for path in warmup_paths:
                    nursery.start_soon(warm, path)
            iterator = iter(paths)

            async def worker() -> None:
                nonlocal wrong_targets
                for path in iterator:
                    response = await client.get(path)
                    key = str(response.status_code)
                    statuses[key] = statuses.get(key, 0) + 1
                    if response.headers.get("location") != TARGET:
                        wrong_targets += 1

            server_cpu = process_cpu_seconds(server_pid)
            client_cpu = time.thread_time()
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            seconds = time.perf_counter() - started
            server_cpu = process_cpu_seconds(server_pid) - server_cpu
            client_cpu = time.thread_time() - client_cpu
        count = max(1, len(paths))
        return {
            "requests": len(paths),
            "seconds": seconds,
            "rate": len(paths) / seconds if seconds else 0.0,
            "server_cpu_ms_per_request": 1000 * server_cpu / count,
            "client_cpu_ms_per_request": 1000 * client_cpu / count,
            "statuses": statuses,
            "wrong_targets": wrong_targets,
        }

    async def main() -> dict[str, Any]:
        return {side: await fetch_all(url, pid) for side, url, pid in targets}

    return trio.run(main)


def wait_for_clicks(service_url: str, expected: int, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the topic until its total clicks reach ``expected``; what it showed, and when."""
    started = time.perf_counter()
    deadline = started + timeout
    with api_client(service_url) as client:
        while True:
            stats = client.get(f"/v1/topics/{TOPIC}").json()
            clicks = stats.get("clicks", {"unique": 0, "total": 0})
            if clicks["total"] >= expected or time.perf_counter() > deadline:
                links = client.get(f"/v1/topics/{TOPIC}/links").json()["links"]
                return {
                    "clicks": clicks,
                    "links": links,
                    "expected": expected,
                    "seconds_to_persist": time.perf_counter() - started,
                }
            time.sleep(0.05)


def measure_redirect(
    service: Process,
    service_url: str,
    bare: Process,
    baseline_url: str,
    ids: Sequence[int],
    arguments: argparse.Namespace,
) -> dict[str, Any]:
    per_repeat = arguments.warmup + arguments.clicks
    paths = click_paths(ids)
    runs: list[dict[str, Any]] = []
    for repeat in range(arguments.repeats):
        targets = [
            ("sesender", service_url, service.process.pid),
            ("baseline", baseline_url, bare.process.pid),
        ]
        if repeat % 2:
            targets.reverse()
        pair = generate_load(
            paths[repeat * per_repeat : (repeat + 1) * per_repeat],
            arguments.concurrency,
            arguments.warmup,
            targets,
        )
        for side, _, _ in targets:
            progress(f"redirect repeat {repeat + 1} {side}: {pair[side]['rate']:,.0f}/s")
        for side in ("sesender", "baseline"):
            report = pair[side]
            if report["statuses"] != {"302": arguments.clicks} or report["wrong_targets"]:
                raise RuntimeError(f"{side} did not redirect every click to the link: {report}")
        pair["ratio"] = pair["sesender"]["rate"] / pair["baseline"]["rate"]
        pair["cpu_ratio"] = cpu_ratio(
            pair["baseline"]["server_cpu_ms_per_request"],
            pair["sesender"]["server_cpu_ms_per_request"],
        )
        runs.append(pair)
    persisted = wait_for_clicks(service_url, len(ids))
    expected_links = [
        {"url": TARGET, "unique_clicks": len(ids), "total_clicks": len(ids)},
        {"url": SECOND, "unique_clicks": 0, "total_clicks": 0},
    ]
    all_persisted = (
        persisted["clicks"] == {"unique": len(ids), "total": len(ids)}
        and persisted["links"] == expected_links
    )
    best_service = max(pair["sesender"]["rate"] for pair in runs)
    best_baseline = max(pair["baseline"]["rate"] for pair in runs)
    ratio = best_service / best_baseline
    service_cpu = min(pair["sesender"]["server_cpu_ms_per_request"] for pair in runs)
    baseline_cpu = min(pair["baseline"]["server_cpu_ms_per_request"] for pair in runs)
    return {
        "targets_from": "database" if arguments.cold else "memory",
        "clicks_per_run": arguments.clicks,
        "warmup": arguments.warmup,
        "concurrency": arguments.concurrency,
        "repeats": arguments.repeats,
        "distinct_emails_clicked": len(ids),
        "runs": runs,
        "sesender_rate_best": best_service,
        "baseline_rate_best": best_baseline,
        "ratio": ratio,
        "ratio_median_of_pairs": statistics.median(pair["ratio"] for pair in runs),
        "sesender_server_cpu_ms_per_request_best": service_cpu,
        "baseline_server_cpu_ms_per_request_best": baseline_cpu,
        "cpu_ratio": cpu_ratio(baseline_cpu, service_cpu),
        "client_cpu_ms_per_request_median": statistics.median(
            pair[side]["client_cpu_ms_per_request"]
            for pair in runs
            for side in ("sesender", "baseline")
        ),
        "persisted": persisted,
        "all_persisted": all_persisted,
        "aim": REDIRECT_AIM,
        "throughput_passed": ratio >= REDIRECT_AIM,
        "cpu_passed": cpu_ratio(baseline_cpu, service_cpu) >= REDIRECT_AIM,
        "passed": ratio >= REDIRECT_AIM
        and cpu_ratio(baseline_cpu, service_cpu) >= REDIRECT_AIM
        and all_persisted,
    }


def baseline_app() -> Any:
    """The bare app: the click path answering a 302 to :data:`TARGET` with the same headers,
    verifying and recording nothing."""
    from quart import Response
    from quart_trio import QuartTrio

    app = QuartTrio("baseline")

    @app.get("/v1/events/click/<token>/<code>")
    async def click(token: str, code: str) -> Response:
        return Response(
            b"",
            status=302,
            headers={
                "Location": TARGET,
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )

    return app


def serve_baseline() -> None:
    """Serve :func:`baseline_app` with hypercorn on trio on a free port; print the URL."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(baseline_app(), config, task_status=task_status)
            )
            print(json.dumps({"baseline_url": binds[0]}), flush=True)

    trio.run(main)


# --- 2. rewriting -------------------------------------------------------------------------------


def cpu_ms(function: Any, repeat: int) -> list[float]:
    """CPU milliseconds of each of ``repeat`` calls of ``function``."""
    times = []
    for _ in range(repeat):
        started = time.thread_time()
        function()
        times.append(1000 * (time.thread_time() - started))
    return times


def measure_rewrite(arguments: argparse.Namespace) -> dict[str, Any]:
    from sesender.links import link_urls, track_links
    from sesender.models import ClaimedEmail, Content
    from sesender.pipeline.compose import MessageComposer
    from sesender.pipeline.pixel import PIXEL_POSITIONS, pixel_image
    from sesender.tracking import TokenSigner

    signer = TokenSigner(TRACKING_SECRET.encode())
    public_url = "https://mail.example.com"
    links = len(link_urls(NEWSLETTER, own_url=public_url))
    rewrite = cpu_ms(
        lambda: track_links(NEWSLETTER, public_url=public_url, signer=signer), arguments.rewrites
    )
    find = cpu_ms(lambda: link_urls(NEWSLETTER, own_url=public_url), arguments.rewrites)
    tracked = track_links(NEWSLETTER, public_url=public_url, signer=signer)
    pixel = pixel_image(f"{public_url}/v1/events/open?request_id=" + "x" * 25)
    tokens = [signer.sign("click", n) for n in range(1, arguments.recipients + 1)]

    def render_all() -> None:
        for token in tokens:
            tracked.render(token, pixel)

    composer = MessageComposer(
        sender="news@example.com",
        public_url=public_url,
        signer=signer,
        configuration_set=None,
        unsubscribe_enabled=True,
    )
    content = Content(subject="Newsletter", body=NEWSLETTER)
    PIXEL_POSITIONS.clear()

    def compose_all(track_clicks: bool) -> None:
        for n in range(1, arguments.recipients + 1):
            composer.compose(
                ClaimedEmail(
                    request_id=n,
                    topic_id="t",
                    email=f"r{n}@example.com",
                    content=content,
                    attempts=0,
                    track_opens=True,
                    track_clicks=track_clicks,
                )
            )

    render = cpu_ms(render_all, arguments.rounds)
    plain = []
    with_clicks = []
    for _ in range(arguments.rounds):  # interleaved
        plain.extend(cpu_ms(lambda: compose_all(False), 1))
        with_clicks.extend(cpu_ms(lambda: compose_all(True), 1))
    per = 1000 / arguments.recipients  # ms per round -> us per recipient
    rewrite_ms = statistics.median(rewrite)
    return {
        "content_bytes": len(NEWSLETTER.encode()),
        "tracked_links": links,
        "rewrites": arguments.rewrites,
        "rewrite_ms_median": rewrite_ms,
        "rewrite_ms_p90": sorted(rewrite)[int(0.9 * (len(rewrite) - 1))],
        "find_links_ms_median": statistics.median(find),
        "recipients_per_round": arguments.recipients,
        "render_us_per_recipient": statistics.median(render) * per,
        "compose_us_per_recipient_without_clicks": statistics.median(plain) * per,
        "compose_us_per_recipient_with_clicks": statistics.median(with_clicks) * per,
        "aim_ms": REWRITE_AIM_MS,
        "passed": rewrite_ms < REWRITE_AIM_MS,
    }


# --- the run ----------------------------------------------------------------------------------


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    parts = arguments.part or list(PARTS)
    figures: dict[str, Any] = {"parts": parts}
    if "redirect" in parts:
        directory = Path(tempfile.mkdtemp(prefix="bench-clicks-"))
        command, env = service_command(directory / "sesender.db", 10_000)
        env["TRACKING_SECRET"] = TRACKING_SECRET
        service = Process(command, env)
        bare = Process([sys.executable, "-m", "bench.clicks", "--serve-baseline"])
        try:
            service_url = service.wait_for_json("event", "listening")["urls"][0]
            baseline_url = bare.wait_for_json("baseline_url")["baseline_url"]
            progress(f"sesender at {service_url}, baseline at {baseline_url}")
            per_repeat = arguments.warmup + arguments.clicks
            ids = store_tracked_emails(service_url, per_repeat * arguments.repeats)
            progress(f"{len(ids):,} tracked emails stored")
            errors: list[str] = []
            if arguments.cold:
                # A new process on the same database: no redirect target is in memory.
                errors += errors_logged(service)
                stop_all([service])
                service = Process(command, env)
                service_url = service.wait_for_json("event", "listening")["urls"][0]
                progress(f"sesender restarted at {service_url}: targets from the database")
            figures["redirect"] = measure_redirect(
                service, service_url, bare, baseline_url, ids, arguments
            )
            figures["service_errors"] = errors + errors_logged(service)
        finally:
            stop_all([service, bare])
            shutil.rmtree(directory, ignore_errors=True)
    if "rewrite" in parts:
        figures["rewrite"] = measure_rewrite(arguments)
    figures["load_average_after"] = os.getloadavg()
    figures["passed"] = all(figures[part]["passed"] for part in parts) and not figures.get(
        "service_errors"
    )
    return figures


def report(figures: dict[str, Any]) -> str:
    sections = []
    if "redirect" in figures:
        redirect = figures["redirect"]
        rows = [
            (
                index + 1,
                f"{pair['sesender']['rate']:,.0f}",
                f"{pair['baseline']['rate']:,.0f}",
                f"{pair['ratio']:.2f}",
                f"{pair['sesender']['server_cpu_ms_per_request']:.3f}",
                f"{pair['baseline']['server_cpu_ms_per_request']:.3f}",
                f"{pair['cpu_ratio']:.2f}",
            )
            for index, pair in enumerate(redirect["runs"])
        ]
        sections.append(
            "Click redirect (requests/s; server CPU ms per request;"
            f" targets from {redirect['targets_from']})\n"
            + format_table(
                (
                    "repeat",
                    "sesender /s",
                    "bare redirect /s",
                    "ratio",
                    "sesender CPU ms",
                    "bare CPU ms",
                    "CPU ratio",
                ),
                rows,
            )
            + f"\nthroughput: best ratio {redirect['ratio']:.2f} (aim >= {redirect['aim']})"
            f" -> {verdict(redirect['throughput_passed'])}"
            f"\nserver CPU per redirect: bare / sesender {redirect['cpu_ratio']:.2f}"
            f" (aim >= {redirect['aim']}) -> {verdict(redirect['cpu_passed'])}"
            f"\nevery click persisted: {redirect['all_persisted']}"
            f"\nredirect -> {verdict(redirect['passed'])}"
        )
    if "rewrite" in figures:
        rewrite = figures["rewrite"]
        sections.append(
            f"Link rewriting of a {rewrite['content_bytes'] / 1000:.0f} KB newsletter"
            f" ({rewrite['tracked_links']} links)\n"
            + format_table(
                ("what", "CPU"),
                [
                    ("rewrite once per content, median", f"{rewrite['rewrite_ms_median']:.3f} ms"),
                    ("rewrite once per content, p90", f"{rewrite['rewrite_ms_p90']:.3f} ms"),
                    ("of which finding the links", f"{rewrite['find_links_ms_median']:.3f} ms"),
                    (
                        "token into the content, per recipient",
                        f"{rewrite['render_us_per_recipient']:.1f} us",
                    ),
                    (
                        "compose per recipient, no click tracking",
                        f"{rewrite['compose_us_per_recipient_without_clicks']:.1f} us",
                    ),
                    (
                        "compose per recipient, click tracking",
                        f"{rewrite['compose_us_per_recipient_with_clicks']:.1f} us",
                    ),
                ],
            )
            + f"\naim < {rewrite['aim_ms']} ms per content -> {verdict(rewrite['passed'])}"
        )
    return "\n\n".join(sections)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.clicks", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--part", action="append", choices=PARTS, help="run only this part (repeatable)"
    )
    parser.add_argument("--clicks", type=int, default=5_000, help="clicks per timed run")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="redirect runs of each side")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="restart the service after storing the emails: every redirect target is read from"
        " the database, as after a restart or on another instance",
    )
    parser.add_argument("--rewrites", type=int, default=200, help="rewrites of the newsletter")
    parser.add_argument("--recipients", type=int, default=1_000, help="per compose round")
    parser.add_argument("--rounds", type=int, default=5)
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.clicks = 40
        arguments.warmup = 8
        arguments.concurrency = 4
        arguments.repeats = 1
        arguments.rewrites = 5
        arguments.recipients = 20
        arguments.rounds = 1
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve-baseline"]:
        serve_baseline()
        return None
    arguments = parse_arguments(args)
    figures = run(arguments)
    print(report(figures))
    path = write_result(NAME, arguments.results_dir, arguments, figures)
    print(f"\nresults: {path}")
    return figures


if __name__ == "__main__":
    main()
