"""sesender.links: which links are tracked, and the content rewritten once per content."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.backends.text import html_to_text
from sesender.links import CLICK_FIELD, LinkRewriter, find_links, link_urls, track_links
from sesender.pipeline.pixel import insert_pixel, pixel_image
from sesender.tracking import TokenSigner
from tests.unit.link_scanner_reference import reference_find_links, reference_track_links

SIGNER = TokenSigner(b"links-test-secret-of-enough-length")
PUBLIC = "https://sesender.example"


def test_only_http_links_without_opt_out_placeholders_or_own_url_are_tracked() -> None:
    html = (
        '<a href="https://a.example/x?y=1&amp;z=2#frag">a</a>'
        '<a href="mailto:me@example.com">m</a>'
        '<a href="tel:+100">t</a><a href="#top">top</a><a href="/relative">r</a>'
        '<a data-no-track href="https://private.example/">p</a>'
        '<a href="{{unsubscribe_url}}">u</a>'
        '<a href="https://a.example/{{ name }}">per recipient</a>'
        '<a href="https://sesender.example/v1/unsubscribe?token=x">own</a>'
        "<A HREF=http://b.example/plain>b</A>"
        "<a title='x' href='  https://c.example/\n'>c</a>"
        "<a title='x>y' href='https://cut.example/'>a tag ends at its first &gt;</a>"
        '<abbr href="https://not-a-link.example">n</abbr>'
        '<a href="https://d.example/&#10;x">newline removed</a>'
        '<a href="https://e.example/\x01x">control: not tracked</a>'
    )
    assert link_urls(html, own_url=PUBLIC) == (
        "https://a.example/x?y=1&z=2#frag",
        "http://b.example/plain",
        "https://c.example/",
        "https://d.example/x",
    )
    assert [link.position for link in find_links(html, own_url=PUBLIC)] == [0, 1, 2, 3]


def test_rewritten_links_point_here_with_the_token_and_a_signed_code() -> None:
    html = '<html><body><a href="https://a.example/?q=1&amp;r=2">A</a></body></html>'
    tracked = track_links(html, public_url=PUBLIC, signer=SIGNER)
    rendered = tracked.render("TOKEN")
    ((start, end),) = [(link.start, link.end) for link in find_links(rendered)]
    href = rendered[start + 1 : end - 1]
    prefix = f"{PUBLIC}/v1/events/click/TOKEN/"
    assert href.startswith(prefix)
    code = href[len(prefix) :]
    assert SIGNER.link_position(code) == 0
    assert SIGNER.verify_link_code(code, "https://a.example/?q=1&r=2")
    assert not SIGNER.verify_link_code(code, "https://a.example/?q=1&r=3")
    # Nothing else changed.
    assert rendered.replace(href, "https://a.example/?q=1&amp;r=2") == html
    assert tracked.template == tracked.render("{{" + CLICK_FIELD + "}}")


def test_the_pixel_goes_where_insert_pixel_puts_it() -> None:
    for html in (
        '<html><body><a href="https://a.example">x</a></body></html>',
        '<a href="https://a.example">x</a> no body',
        '<body></body><a href="https://a.example/</body>">late</a>',
        "<body>no links</body>",
    ):
        tracked = track_links(html, public_url=PUBLIC, signer=SIGNER)
        pixel = pixel_image("https://p.example/?t=1")
        expected = insert_pixel(tracked.render("TOK"), "https://p.example/?t=1", cached=False)
        assert tracked.render("TOK", pixel) == expected
        assert insert_pixel(tracked.template, "P", cached=False).replace(
            "{{" + CLICK_FIELD + "}}", "TOK"
        ) == insert_pixel(tracked.render("TOK"), "P", cached=False)


FRAGMENTS = [
    "<p>",
    "</p>",
    '<a href="https://a.example/x?y=1&amp;z=2#f">',
    "<a href='http://b.example'>",
    '<a data-no-track href="https://c.example">',
    '<a href="mailto:x@example.com">',
    '<a href="https://d.example/{{ name }}">',
    "</a>",
    "<body>",
    "</body>",
    "Hello &amp; ",
    "<br>",
    "\ue010",
]


@given(
    fragments=st.lists(st.sampled_from(FRAGMENTS), max_size=14),
    token=st.sampled_from(["Ab1-_", "Zz" * 12]),
)
@settings(max_examples=200, deadline=None)
def test_render_and_text_are_a_per_recipient_rewrite_of_the_same_links(
    fragments: list[str], token: str
) -> None:
    html = "".join(fragments)
    tracked = track_links(html, public_url=PUBLIC, signer=SIGNER)
    rendered = tracked.render(token)
    # The same links, in the same order, now all pointing here with this token.
    assert len(find_links(rendered, own_url=PUBLIC)) == 0
    assert rendered.count(f"/v1/events/click/{token}/") == len(tracked.urls)
    assert tracked.urls == link_urls(html, own_url=PUBLIC)
    # The text part made once per content is the text of this recipient's HTML.
    assert tracked.text(token, html_to_text) == html_to_text(rendered)


def test_the_rewriter_rewrites_a_content_once() -> None:
    calls = []

    def counting(text: str) -> str:
        calls.append(text)
        return html_to_text(text)

    rewriter = LinkRewriter(public_url=PUBLIC, signer=SIGNER, max_entries=2)
    html = '<p><a href="https://a.example">a</a></p>'
    first = rewriter.tracked(html)
    assert rewriter.tracked(html) is first
    first.text("t1", counting)
    first.text("t2", counting)
    assert len(calls) == 1
    rewriter.tracked("<p>other</p>")
    rewriter.tracked("<p>third</p>")
    assert rewriter.tracked(html) is not first  # evicted: bounded


# --- the one-pass scanner against the old tag-by-tag one ------------------------------------------

#: Pieces of HTML that exercise every branch of the scanner: case, quoting, a quote or a ">"
#: before the href, opt-outs in any case, entities, white space, placeholders, this service's
#: own URL, unterminated tags, "</body>" inside an href.
TRICKY_FRAGMENTS = [
    *FRAGMENTS,
    '<A HREF="HTTPS://UPPER.example/A?b=1&amp;c=2">',
    "<a\thref = https://bare.example/x?y=1&amp;z>",
    "<a href=https://bare.example/&lt;x&gt;>",
    "<a title='x>y' href='https://cut.example/'>",
    '<a title="a href=https://inside.example" href="https://real.example">',
    "<a class=x href='https://single.example/it&#39;s'>",
    '<a DATA-NO-TRACK href="https://opt.example">',
    '<a href="https://late-opt.example" Data-No-Track>',
    '<a href="  https://spaces.example/\n">',
    '<a href="https://tab.example/a\tb">',
    '<a href="https://ctl.example/\x01">',
    '<a href="https://e.example/&#10;x&amp;y&unknown;">',
    '<a href="https://sesender.example/v1/unsubscribe">',
    '<a href="https://SESENDER.example">',
    '<a href="https://sesender.example.org/">',
    '<a href="{{unsubscribe_url}}">',
    '<a href="https://x.example/{ notplaceholder }">',
    '<a href="https://x.example/{{bad-name}}">',
    '<a href="https://&amp;first.example/">',
    '<a href="https://\u00e9t\u00e9.example/\u00fc">',
    '<a href="http://">',
    '<a href="https:// space.example">',
    '<a href=">',
    "<a href='https://no-end.example",
    "<a href>",
    "<a/href='https://slash.example'>",
    "<a\nhref='https://newline.example'>",
    "<abbr href='https://abbr.example'>",
    "<a>",
    "<a ",
    "</BODY >",
    "</body\n>",
    '<a href="https://a.example/</body>">',
    "<a href='https://b.example/</BODY  >'>",
    "'",
    '"',
    ">",
    "&amp;",
]


@given(st.lists(st.sampled_from(TRICKY_FRAGMENTS), max_size=20))
@settings(max_examples=1500, deadline=None)
def test_the_one_pass_scanner_finds_what_the_tag_by_tag_scanner_found(
    fragments: list[str],
) -> None:
    html = "".join(fragments)
    assert find_links(html, own_url=PUBLIC) == reference_find_links(html, own_url=PUBLIC)
    assert find_links(html) == reference_find_links(html)


@given(st.text(alphabet="<>aAhrefHREF=\"' =/&amp;;#x{}\t\nbodyBODY-notrackhtps:.", max_size=120))
@settings(max_examples=1500, deadline=None)
def test_the_one_pass_scanner_agrees_on_arbitrary_markup(html: str) -> None:
    for prefix in ("", '<a href="https://p.example/?q=1&amp;r=2">', "<a href=http://p.example "):
        text = prefix + html
        assert find_links(text, own_url=PUBLIC) == reference_find_links(text, own_url=PUBLIC)


@given(st.lists(st.sampled_from(TRICKY_FRAGMENTS), max_size=20))
@settings(max_examples=500, deadline=None)
def test_the_rewrite_is_the_old_rewrite(fragments: list[str]) -> None:
    html = "".join(fragments)
    tracked = track_links(html, public_url=PUBLIC, signer=SIGNER)
    assert (tracked.pieces, tracked.slots, tracked.urls, tracked.template) == (
        reference_track_links(html, public_url=PUBLIC, signer=SIGNER)
    )


def test_the_pixel_place_is_found_far_from_the_end_and_never_inside_a_rewritten_href() -> None:
    filler = "<p>" + "x" * 10_000 + "</p>"
    for html in (
        "<body>" + filler + "</body>" + filler * 3,
        "<body>" + filler + "</body>" + filler + '<a href="https://a.example/</body>">x</a>',
        "<body></body  \n>" + filler * 2,
        filler * 3,
    ):
        tracked = track_links(html, public_url=PUBLIC, signer=SIGNER)
        assert (tracked.pieces, tracked.slots, tracked.urls, tracked.template) == (
            reference_track_links(html, public_url=PUBLIC, signer=SIGNER)
        )
