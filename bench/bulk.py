"""SES bulk calls: recipients/s and client CPU per recipient, ``SendBulkEmail`` vs ``SendEmail``.

Through the SES backend alone (no service, no store, no pipeline): ``SesBackend.send_batch``
with the client ``build_ses_client`` builds (no botocore retries, no parameter validation) and a
thread lane of ``--threads``, against ``bench.fake_ses`` in its own process on 127.0.0.1. The
emails are composed like the service composes them (pixel URL with a signed token,
``List-Unsubscribe`` headers, request id and topic tags, a ``--html-kb`` HTML body), all of one
content, and handed over ``--batch`` at a time. Three ways, interleaved, best of ``--repeats``:

- ``bulk``: ``SES_SEND_MODE=bulk``: groups of up to 50 in one ``SendBulkEmail``;
- ``single``: ``SES_SEND_MODE=single``: one ``SendEmail`` per email;
- ``boto3 bulk loop``: the baseline, a plain one-thread loop of ``send_bulk_email`` with the
  same requests built before the clock starts (what boto3 itself costs per recipient).

CPU is this process's (every thread: event loop, lane, boto3) per recipient; the fake's CPU is
reported next to it, since both share the machine.

    python -m bench.bulk                       # 20,000 emails per run, 3 repeats
    python -m bench.bulk --emails 50000 --repeats 5
    python -m bench.bulk --quick               # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from actors import ThreadLane
from bench.ceiling import FakeSes, Measurement, best, bulk_requests, run_fake_ses
from bench.common import add_output_arguments, format_table, write_result
from sesender.backends.base import OutgoingEmail
from sesender.backends.ses import SesBackend, build_ses_client
from sesender.config import SesSendMode
from sesender.feedback.ses_events import REQUEST_ID_TAG, TOPIC_TAG
from sesender.pipeline.pixel import insert_pixel
from sesender.tracking import TokenSigner

PUBLIC_URL = "https://sesender.example.com"
SENDER = "Bench <bench@example.com>"


def newsletter(kilobytes: int) -> str:
    paragraph = (
        '<p>Spring is here, and so is our sale: <a href="https://example.com/offer">see the '
        "offer</a> before it ends. Every item in the catalogue is reduced.</p>\n"
    )
    body = paragraph * max(1, kilobytes * 1024 // len(paragraph))
    return f"<html><body><h1>Spring sale</h1>\n{body}</body></html>"


def compose(count: int, kilobytes: int) -> list[OutgoingEmail]:
    """``count`` emails of one content, each with its own pixel, headers and tags."""
    signer = TokenSigner(b"bench-bulk-tracking-secret-0123456789")
    html = newsletter(kilobytes)
    emails = []
    for request_id in range(1, count + 1):
        pixel_url = f"{PUBLIC_URL}/v1/events/open?request_id={signer.sign('open', request_id)}"
        unsubscribe = f"{PUBLIC_URL}/v1/unsubscribe?token={signer.sign('unsubscribe', request_id)}"
        emails.append(
            OutgoingEmail(
                request_id=request_id,
                topic_id="bench-bulk",
                sender=SENDER,
                recipient=f"user{request_id}@example.org",
                subject="Spring sale",
                html=insert_pixel(html, pixel_url),
                headers=(
                    ("List-Unsubscribe", f"<{unsubscribe}>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ),
                tags=((REQUEST_ID_TAG, str(request_id)), (TOPIC_TAG, "bench-bulk")),
                configuration_set="bench",
                source_html=html,
                pixel_url=pixel_url,
            )
        )
    return emails


def client_for(fake: FakeSes, threads: int, *, bulk_body_by_json: bool = True) -> Any:
    return build_ses_client(
        region="us-east-1",
        pool_size=threads,
        connect_timeout=5,
        read_timeout=15,
        endpoint_url=fake.url,
        access_key_id="testing",
        secret_access_key="testing",
        bulk_body_by_json=bulk_body_by_json,
    )


def measure(fake: FakeSes, count: int, run: Callable[[], int]) -> Measurement:
    """Time ``run`` (which returns the calls it made) with this process's and the fake's CPU."""
    server_before = fake.cpu_seconds()
    cpu_before = time.process_time()
    started = time.perf_counter()
    calls = run()
    seconds = time.perf_counter() - started
    return Measurement(
        emails=count,
        seconds=seconds,
        client_cpu=time.process_time() - cpu_before,
        server_cpu=fake.cpu_seconds() - server_before,
        extra={"calls": calls},
    )


def measure_backend(
    fake: FakeSes, emails: Sequence[OutgoingEmail], mode: SesSendMode, threads: int, batch: int
) -> Measurement:
    client = client_for(fake, threads)
    backend = SesBackend(client=client, lane=ThreadLane("ses", threads), send_mode=mode)

    async def send_all() -> None:
        for start in range(0, len(emails), batch):
            results = await backend.send_batch(emails[start : start + batch])
            failed = [r for r in results if not isinstance(r, str)]
            if failed:
                raise RuntimeError(f"the fake refused a send: {failed[0]}")

    def run() -> int:
        trio.run(send_all)
        return backend.statistics().attempts

    try:
        return measure(fake, len(emails), run)
    finally:
        client.close()


def measure_boto3_bulk_loop(fake: FakeSes, emails: Sequence[OutgoingEmail]) -> Measurement:
    """The baseline: ``send_bulk_email`` in a plain loop, requests built before the clock."""
    requests = bulk_requests(emails)
    # Plain boto3: botocore serializes the body itself.
    client = client_for(fake, 1, bulk_body_by_json=False)

    def run() -> int:
        for request in requests:
            client.send_bulk_email(**request)
        return len(requests)

    try:
        return measure(fake, len(emails), run)
    finally:
        client.close()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__)
    parser.add_argument("--emails", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="the SES lane's threads")
    parser.add_argument("--batch", type=int, default=1_000, help="emails per send_batch")
    parser.add_argument("--html-kb", type=int, default=10)
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.emails, arguments.repeats, arguments.batch = 300, 1, 150
    return arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    arguments = parse_arguments(argv)
    emails = compose(arguments.emails, arguments.html_kb)
    runs: dict[str, list[Measurement]] = {"bulk": [], "single": [], "boto3 bulk loop": []}
    with run_fake_ses() as fake:
        for _ in range(arguments.repeats):
            runs["bulk"].append(
                measure_backend(fake, emails, SesSendMode.BULK, arguments.threads, arguments.batch)
            )
            runs["single"].append(
                measure_backend(
                    fake, emails, SesSendMode.SINGLE, arguments.threads, arguments.batch
                )
            )
            runs["boto3 bulk loop"].append(measure_boto3_bulk_loop(fake, emails))
    figures: dict[str, Any] = {}
    rows = []
    for name, measurements in runs.items():
        chosen = best(measurements)
        figures[name] = {
            **chosen.as_dict(),
            "client_cpu_ms_per_recipient": 1000 * chosen.client_cpu / chosen.emails,
            "recipients_per_call": chosen.emails / chosen.extra["calls"] if chosen.extra else 0,
        }
        rows.append(
            [
                name,
                chosen.rate,
                figures[name]["client_cpu_ms_per_recipient"],
                1000 * chosen.server_cpu / chosen.emails,
                figures[name]["recipients_per_call"],
            ]
        )
    figures["bulk_over_single_rate"] = figures["bulk"]["emails_per_second"] / max(
        figures["single"]["emails_per_second"], 1e-9
    )
    write_result("bulk", arguments.results_dir, arguments, figures)
    print(
        format_table(
            [
                "way",
                "recipients/s",
                "client CPU ms/recipient",
                "fake CPU ms/recipient",
                "recipients/call",
            ],
            rows,
        )
    )
    return figures


if __name__ == "__main__":
    main()
