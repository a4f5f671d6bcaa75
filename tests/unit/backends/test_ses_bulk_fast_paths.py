"""The bulk path's per-email shortcuts give what the long way gives: the check that an email's
HTML is its content with the composed pixel, made without building that HTML
(``pixel_split_inserted``), agrees with building it (``insert_pixel``); the pixel URL's split
from the last prefix (``split_pixel_url``) is ``split_value``'s; a plain content's emails share
one key object, equal to the one built field by field."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.backends import ses_bulk
from sesender.backends.base import OutgoingEmail
from sesender.backends.ses_bulk import (
    KEYS,
    MAX_KEPT_HALVES,
    MAX_KEPT_KEYS,
    BulkKey,
    bulk_key,
    pixel_halves,
    pixel_split_inserted,
    split_pixel_url,
    split_value,
)
from sesender.pipeline.pixel import insert_pixel, pixel_image

URL = "https://sesender.example/v1/events/open?request_id=tok"


def pixel_inserted(html: str, source: str, url: str) -> bool:
    """The check ``bulk_key`` makes of an email's pixel URL: split, then compared in place."""
    return pixel_split_inserted(html, source, *split_pixel_url(url))


pieces = st.sampled_from(["<p>hi</p>", "</body>", "</BODY >", "<body>", "x", " ", "&amp;", "é"])
contents = st.lists(pieces, max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(source=contents, token=st.sampled_from(["a", "b", "a_1", ""]), other=contents)
def test_pixel_inserted_is_equality_with_the_built_html(
    source: str, token: str, other: str
) -> None:
    url = URL + token
    built = insert_pixel(source, url)
    assert pixel_inserted(built, source, url)
    candidates = [
        insert_pixel(source, URL + "z"),  # another email's pixel
        source,  # no pixel
        source + pixel_image(url),  # appended although the content has a </body>
        pixel_image(url) + source,
        insert_pixel(other, url),  # another content
        built + " ",
    ]
    for html in candidates:
        assert pixel_inserted(html, source, url) == (html == built), html


@settings(max_examples=300, deadline=None)
@given(
    source=contents,
    url=st.lists(
        st.sampled_from([*"aZ09_-.~/?:%", "=", "&", "&amp;", " ", "\t", '"', "'", "<", ">"]),
        max_size=10,
    ).map("".join),
    other=st.sampled_from(["", "x", "&", '"']),
)
def test_pixel_inserted_checks_the_escaped_url_whatever_it_holds(
    source: str, url: str, other: str
) -> None:
    """The image's head is escaped once per URL prefix, the tail compared as it is: for URLs
    whose prefix holds characters escaping changes, the check still equals building it."""
    built = insert_pixel(source, url)
    assert pixel_inserted(built, source, url)
    for candidate in (insert_pixel(source, url + other), insert_pixel(source, other + url)):
        assert pixel_inserted(candidate, source, url) == (candidate == built)
    assert pixel_inserted(built, source, url + other) == (not other)


def test_long_contents_are_cut_for_every_email_not_kept() -> None:
    source = "<p>" + "x" * MAX_KEPT_HALVES + "</p></body></html>"
    head, tail = pixel_halves(source)
    assert (head + "|" + tail).endswith("|</body></html>")
    assert pixel_inserted(insert_pixel(source, URL), source, URL)
    assert not pixel_inserted(insert_pixel(source, URL) + "x", source, URL)


url_characters = st.sampled_from([*"aZ09_-.~/?:%", "=", "&", " ", "  ", "\t", '"', "}", "\\"])
urls = st.lists(url_characters, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(first=urls, others=st.lists(urls, max_size=6))
def test_split_pixel_url_is_split_value(first: str, others: list[str]) -> None:
    ses_bulk.LAST_PIXEL_PREFIX[0] = ""
    for url in [first, *others, *(first + other for other in others)]:
        assert split_pixel_url(url) == split_value(url), url


def plain(request_id: int, *, sender: str = "news@example.com") -> OutgoingEmail:
    source = "<html><body><p>Hi</p></body></html>"
    pixel = f"https://sesender.example/v1/events/open?request_id=t{request_id}"
    return OutgoingEmail(
        request_id=request_id,
        topic_id="topic",
        sender=sender,
        recipient=f"user{request_id}@example.org",
        subject="Hi",
        html=insert_pixel(source, pixel),
        headers=(("List-Unsubscribe", f"<https://sesender.example/u/{request_id}>"),),
        tags=(("request_id", str(request_id)), ("topic", "topic")),
        source_html=source,
        pixel_url=pixel,
    )


def test_emails_of_one_content_share_one_key_equal_to_the_built_one() -> None:
    shaped = [bulk_key(plain(index)) for index in range(3)]
    keys = [item[0] for item in shaped if item is not None]
    assert len(keys) == 3
    assert keys[0] is keys[1] is keys[2]
    assert keys[0] == BulkKey(
        sender="news@example.com",
        configuration_set=None,
        subject="Hi",
        html="<html><body><p>Hi</p></body></html>",
        pixel_url="https://sesender.example/v1/events/open?request_id={{sesender_pixel_token}}",
        header_names=("List-Unsubscribe",),
        tag_names=("request_id", "topic"),
    )
    assert [item[1] for item in shaped if item is not None] == [
        {"sesender_pixel_token": f"t{index}"} for index in range(3)
    ]
    other = bulk_key(plain(4, sender="other@example.com"))
    assert other is not None
    assert other[0] != keys[0]


def test_kept_keys_are_bounded() -> None:
    for index in range(3 * MAX_KEPT_KEYS):
        bulk_key(plain(index, sender=f"sender{index}@example.com"))
        assert len(KEYS) <= MAX_KEPT_KEYS
