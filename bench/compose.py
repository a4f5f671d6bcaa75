"""Request building: CPU per email to turn a claimed email into the SES request, by content size.

For every recipient the sender pool composes the email (pixel, tags, headers) and the SES backend
builds the ``SendEmail`` request, including the plain-text alternative derived from the HTML. This
measures the CPU time (``time.thread_time``) of ``MessageComposer.compose`` plus
``build_send_email_request`` per email, for a small message and for a 16 KB newsletter, two ways
in the same run, interleaved:

* **per recipient**: the text part converted from each email's HTML (``source_html=None``), which
  is what the service did before the text part was cached per content (the baseline);
* **per content**: the service's path, the text part converted once per content
  (``sesender.backends.text.text_part``).

A second table times ``MessageComposer.compose`` alone, two ways interleaved: the pixel's place
(the last ``</body>``) searched in every email's HTML (the position cache emptied before each
email: the composer before it kept the position per content, the baseline), and kept per
content (``sesender.pipeline.pixel.PIXEL_POSITIONS``, the service's path).

    python -m bench.compose            # 2,000 emails per size and way, 5 rounds
    python -m bench.compose --quick    # tiny, for the CI smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence

from bench.common import BODY, SUBJECT, add_output_arguments, format_table, write_result
from sesender.backends.ses import build_send_email_request
from sesender.models import ClaimedEmail, Content
from sesender.pipeline.compose import MessageComposer
from sesender.pipeline.pixel import PIXEL_POSITIONS
from sesender.tracking import TokenSigner

_BLOCK = (
    "<tr><td style='padding:10px'><h2>Headline {i}</h2><p>Some "
    "<a href='https://example.com/{i}'>linked text</a> and a paragraph of marketing copy that "
    "goes on for a while, with <b>bold</b> words.</p>"
    "<img src='https://cdn.example.com/{i}.png' alt='Product {i}'></td></tr>"
)
#: A 16 KB newsletter: a styled table of 60 stories with links and images.
NEWSLETTER = (
    "<html><head><style>td{color:#333}</style></head><body><table>"
    + "".join(_BLOCK.format(i=i) for i in range(60))
    + "</table></body></html>"
)
CONTENTS = {"small message": BODY, "16 KB newsletter": NEWSLETTER}


def per_email_ms(html: str, count: int, *, cached: bool) -> float:
    """CPU milliseconds per email to compose and build ``count`` requests of one content."""
    composer = MessageComposer(
        sender="News <news@example.com>",
        public_url="https://mail.example.com",
        signer=TokenSigner(b"bench-secret-bench-secret-bench!"),
        configuration_set="marketing",
        unsubscribe_enabled=True,
    )
    content = Content(SUBJECT, html)
    # A new string object per round, as a new claim returns: the cache must match by value.
    started = time.thread_time()
    for request_id in range(1, count + 1):
        claimed = ClaimedEmail(request_id, "bench", f"user{request_id}@example.org", content, 0)
        outgoing = composer.compose(claimed)
        if not cached:
            outgoing = dataclasses.replace(outgoing, source_html=None)
        build_send_email_request(outgoing)
    return (time.thread_time() - started) / count * 1000


def compose_us(html: str, count: int, *, cached: bool) -> float:
    """CPU microseconds per email of ``MessageComposer.compose`` alone, for one content.

    ``cached=False`` forgets the pixel's position before each email, so every email searches its
    HTML for ``</body>`` again: the composer as it was before the position was kept per content.
    """
    composer = MessageComposer(
        sender="News <news@example.com>",
        public_url="https://mail.example.com",
        signer=TokenSigner(b"bench-secret-bench-secret-bench!"),
        configuration_set="marketing",
        unsubscribe_enabled=True,
    )
    content = Content(SUBJECT, html)
    emails = [
        ClaimedEmail(request_id, "bench", f"user{request_id}@example.org", content, 0)
        for request_id in range(1, count + 1)
    ]
    PIXEL_POSITIONS.clear()
    started = time.thread_time()
    for email in emails:
        if not cached:
            PIXEL_POSITIONS.clear()
        composer.compose(email)
    return (time.thread_time() - started) / count * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emails", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=5)
    add_output_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.emails, arguments.rounds = 20, 1

    figures: dict[str, dict[str, float]] = {}
    rows = []
    for name, html in CONTENTS.items():
        baseline: list[float] = []
        cached: list[float] = []
        for _ in range(arguments.rounds):
            fresh = "".join(list(html))  # a distinct string object with the same value
            baseline.append(per_email_ms(fresh, arguments.emails, cached=False))
            cached.append(per_email_ms(fresh, arguments.emails, cached=True))
        base, ours = statistics.median(baseline), statistics.median(cached)
        figures[name] = {
            "bytes": len(html),
            "per_recipient_ms": base,
            "per_content_ms": ours,
            "speed_up": base / ours,
        }
        rows.append([name, len(html), base, ours, base / ours])
    print(
        format_table(
            [
                "content",
                "HTML bytes",
                "CPU ms/email, text per recipient",
                "CPU ms/email, text per content",
                "speed-up",
            ],
            rows,
        )
    )
    pixel_rows = []
    for name, html in CONTENTS.items():
        searched: list[float] = []
        kept: list[float] = []
        for _ in range(arguments.rounds):
            searched.append(compose_us(html, arguments.emails, cached=False))
            kept.append(compose_us(html, arguments.emails, cached=True))
        base, ours = statistics.median(searched), statistics.median(kept)
        figures[name]["compose_pixel_searched_us"] = base
        figures[name]["compose_pixel_kept_us"] = ours
        pixel_rows.append([name, len(html), base, ours, base / ours])
    print()
    print(
        format_table(
            [
                "content",
                "HTML bytes",
                "compose CPU us/email, </body> searched per email",
                "compose CPU us/email, position kept per content",
                "speed-up",
            ],
            pixel_rows,
        )
    )
    write_result("compose", arguments.results_dir, arguments, figures)


if __name__ == "__main__":
    main()
