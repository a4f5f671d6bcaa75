"""The pixel's insertion point is looked up once per content: the output must stay, to the byte,
what searching every email's HTML afresh gives."""

from __future__ import annotations

import re
from html import escape

from hypothesis import given
from hypothesis import strategies as st

from sesender.models import ClaimedEmail, Content
from sesender.pipeline.compose import MessageComposer
from sesender.pipeline.pixel import (
    PIXEL_POSITIONS,
    PixelPositions,
    find_pixel_position,
    insert_pixel,
)
from sesender.tracking import TokenSigner

SIGNER = TokenSigner(b"k" * 32)


def uncached_insert_pixel(html: str, pixel_url: str) -> str:
    """The insertion as it was before the cache: search this HTML, every time."""
    image = (
        f'<img src="{escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:none;border:0" />'
    )
    matches = list(re.finditer(r"</body\s*>", html, re.IGNORECASE))
    if not matches:
        return html + image
    position = matches[-1].start()
    return html[:position] + image + html[position:]


FRAGMENTS = st.sampled_from(
    [
        "<html>",
        "<body>",
        "</body>",
        "</BODY >",
        "</Body\n>",
        "</body",
        "</ body>",
        "<p>Hi</p>",
        "</html>",
        "&amp;",
        "{{ name }}",
        "é",
        " ",
        "\n",
    ]
)
HTML = st.lists(FRAGMENTS | st.text(max_size=8), max_size=12).map("".join)
URLS = st.sampled_from(
    [
        "https://mail.example.com/v1/events/open?request_id=abc",
        'https://x.test/o?a=1&b="2"<>',
    ]
)


@given(html=HTML, first=URLS, second=URLS)
def test_insert_pixel_is_what_searching_afresh_gives(html: str, first: str, second: str) -> None:
    # Twice for the same content: the second call answers from the cache.
    assert insert_pixel(html, first) == uncached_insert_pixel(html, first)
    assert insert_pixel(html, second) == uncached_insert_pixel(html, second)
    # An equal string that is another object (a content read again from the store) too.
    copy = "".join(list(html))
    assert insert_pixel(copy, first) == uncached_insert_pixel(copy, first)


@given(htmls=st.lists(HTML, min_size=1, max_size=40))
def test_many_contents_in_turn_never_get_another_contents_position(htmls: list[str]) -> None:
    # More contents than the cache holds, each composed twice in a row and again at the end.
    for html in htmls + htmls[::-1]:
        assert PIXEL_POSITIONS.position(html) == find_pixel_position(html)
        assert insert_pixel(html, "u") == uncached_insert_pixel(html, "u")


@given(
    body=HTML,
    data=st.none() | st.fixed_dictionaries({"name": st.text(max_size=10)}),
    request_ids=st.lists(st.integers(1, 10**9), min_size=1, max_size=5),
    # The composer escapes the URL up to the token once and appends each token: a public URL
    # with characters HTML escaping changes must come out as escaping the whole URL does.
    public_url=st.sampled_from(
        ["https://mail.example.com", "https://x.test/p?a=1&b='2'", 'https://x.test/"<q>&amp;']
    ),
)
def test_compose_gives_the_same_html_as_the_uncached_path(
    body: str, data: dict[str, str] | None, request_ids: list[int], public_url: str
) -> None:
    composer = MessageComposer(
        sender="news@example.com",
        public_url=public_url,
        signer=SIGNER,
        configuration_set=None,
        unsubscribe_enabled=True,
    )
    content = Content("s", body)
    for request_id in request_ids:
        claimed = ClaimedEmail(request_id, "t", "a@example.org", content, 0, data=data)
        outgoing = composer.compose(claimed)
        assert outgoing.pixel_url is not None
        assert outgoing.source_html is not None
        assert outgoing.html == uncached_insert_pixel(outgoing.source_html, outgoing.pixel_url)
        token = SIGNER.sign("open", request_id)
        assert outgoing.pixel_url == f"{public_url}/v1/events/open?request_id={token}"


def test_the_cache_is_bounded_in_entries_and_in_characters() -> None:
    cache = PixelPositions(max_entries=3, max_characters=100)
    htmls = [f"<body>{index}</body>" for index in range(5)]
    for html in htmls:
        assert cache.position(html) == html.rindex("</body>")
    assert len(cache) == 3  # the oldest two went out
    assert cache.characters == sum(len(html) for html in htmls[2:])
    big = "x" * 60 + "</body>"
    assert cache.position(big) == 60
    assert cache.characters <= 100  # room made for it: oldest out until it fits
    assert cache.position(big) == 60
    kept = (len(cache), cache.characters)
    too_big = "y" * 200 + "</BODY>"
    assert cache.position(too_big) == 200  # searched, answered, not kept
    assert (len(cache), cache.characters) == kept
    cache.clear()
    assert len(cache) == 0
    assert cache.characters == 0


def test_rendered_templates_leave_the_shared_contents_in_the_cache() -> None:
    """Each rendered template is new HTML: it is searched afresh, so a templated campaign does
    not push the contents many emails share out of the cache."""
    composer = MessageComposer(
        sender="news@example.com",
        public_url="https://mail.example.com",
        signer=SIGNER,
        configuration_set=None,
        unsubscribe_enabled=True,
    )
    PIXEL_POSITIONS.clear()
    shared = Content("s", "<html><body><p>for everyone</p></body></html>")
    composer.compose(ClaimedEmail(1, "t", "a@example.org", shared, 0))
    assert len(PIXEL_POSITIONS) == 1
    template = Content("s", "<html><body><p>Dear {{name}}</p></body></html>")
    for n in range(2 * PIXEL_POSITIONS.max_entries):
        claimed = ClaimedEmail(n + 2, "t", "b@example.org", template, 0, data={"name": str(n)})
        outgoing = composer.compose(claimed)
        assert outgoing.source_html is not None
        assert outgoing.pixel_url is not None
        assert outgoing.html == uncached_insert_pixel(outgoing.source_html, outgoing.pixel_url)
    assert len(PIXEL_POSITIONS) == 1
    assert PIXEL_POSITIONS.position(shared.body) == shared.body.index("</body>")
