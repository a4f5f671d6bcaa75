"""The bulk path's check that an email's HTML is its content with the composed pixel, made
without building that HTML (``pixel_inserted``), agrees with building it (``insert_pixel``)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.backends.ses_bulk import MAX_KEPT_HALVES, pixel_halves, pixel_inserted
from sesender.pipeline.pixel import insert_pixel, pixel_image

URL = "https://sesender.example/v1/events/open?request_id=tok"
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


def test_long_contents_are_cut_for_every_email_not_kept() -> None:
    source = "<p>" + "x" * MAX_KEPT_HALVES + "</p></body></html>"
    head, tail = pixel_halves(source)
    assert (head + "|" + tail).endswith("|</body></html>")
    assert pixel_inserted(insert_pixel(source, URL), source, URL)
    assert not pixel_inserted(insert_pixel(source, URL) + "x", source, URL)
