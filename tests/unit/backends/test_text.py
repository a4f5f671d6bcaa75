"""html_to_text: what readers of the text/plain part see."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sesender.backends.base import OutgoingEmail
from sesender.backends.text import _cached_text, html_to_text, text_part
from sesender.models import ClaimedEmail, Content
from sesender.pipeline.compose import MessageComposer
from sesender.tracking import TokenSigner


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("", ""),
        ("plain words", "plain words"),
        ("<p>Hello <b>world</b></p>", "Hello world"),
        ("<p>one</p><p>two</p>", "one\n\ntwo"),
        ("line<br>break<br/>again", "line\nbreak\nagain"),
        ("para<br><br>graph", "para\n\ngraph"),
        ("<div>block</div><br>after", "block\n\nafter"),
        ("end<br><div>next</div>", "end\nnext"),
        ("end<br><br><div>next</div>", "end\n\nnext"),
        ("<div><div>nested</div></div><div>sibling</div>", "nested\nsibling"),
        ("<noscript>shown</noscript>", "shown"),
        ("  lots \n\n of\t\twhite   space  ", "lots of white space"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("<ul><li>first</li><li>second</li></ul>", "- first\n- second"),
        ('<a href="https://example.com/x">Read more</a>', "Read more (https://example.com/x)"),
        ('<a href="https://example.com/">https://example.com/</a>', "https://example.com/"),
        ('<a href="mailto:help@example.com">help@example.com</a>', "help@example.com"),
        ('<a href="https://example.com/u"></a>', "https://example.com/u"),
        ('<a href="#top">Top</a>', "Top"),
        ('<a href="javascript:void(0)">Click</a>', "Click"),
        ('<a href="https://e.com/"><img src="logo.png" alt="Logo"></a>', "Logo (https://e.com/)"),
        ('<img src="https://t.example.com/open.gif" width="1" height="1" alt="">', ""),
        ("<style>p { color: red }</style><p>shown</p>", "shown"),
        ("<script>alert('x')</script>visible", "visible"),
        ("<html><head><title>T</title></head><body>body</body></html>", "body"),
        ("Fish &amp; chips &lt;3 &eacute;t&eacute;", "Fish & chips <3 été"),
        ("<h1>Title</h1>text", "Title\n\ntext"),
        ("<p>a</p>\n\n\n<p></p><p></p><p>b</p>", "a\n\nb"),
        ("<table><tr><td>x</td><td>y</td></tr><tr><td>z</td></tr></table>", "x y\nz"),
        ("unclosed <b>bold <i>italic", "unclosed bold italic"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_nested_links_keep_their_own_targets() -> None:
    html = '<p>See <a href="https://a.example/">A</a> and <a href="https://b.example/">B</a>.</p>'
    assert html_to_text(html) == "See A (https://a.example/) and B (https://b.example/)."


@settings(deadline=None)  # timing on a loaded CI machine is not what is tested here
@given(st.text())
def test_any_input_gives_tidy_text(html: str) -> None:
    text = html_to_text(html)
    assert text == text.strip()
    assert "\n\n\n" not in text
    assert "\r" not in text
    assert all(line == line.strip() for line in text.split("\n"))


# -- the text part comes from the content as submitted, once per content --------------------------

FRAGMENTS = st.lists(
    st.sampled_from(
        [
            "<html>",
            "<body>",
            "</body>",
            "</BODY >",
            "</html>",
            "<p>",
            "</p>",
            "<br>",
            "<img src='x.png' alt='Logo'>",
            '<a href="https://example.com/a">link</a>',
            "<table><tr><td>cell</td></tr></table>",
            "<style>p{}</style>",
            "<pre>a\n b</pre>",
            "text",
            " ",
            "\n",
            "é",
            "&amp;",
            "<!-- comment -->",
        ]
    ),
    max_size=25,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(html=FRAGMENTS)
def test_the_pixel_never_changes_the_text(html: str) -> None:
    """Why the text may come from the HTML before the pixel went in (``source_html``)."""
    composer = MessageComposer(
        sender="from@example.com",
        public_url="https://t.example.com",
        signer=TokenSigner(b"k" * 32),
        configuration_set=None,
        unsubscribe_enabled=False,
    )
    claimed = ClaimedEmail(7, "topic", "to@example.org", Content("Subject", html), 0)
    outgoing = composer.compose(claimed)
    assert outgoing.source_html == html
    assert outgoing.html != html  # the pixel is in
    assert text_part(outgoing) == html_to_text(outgoing.html) == html_to_text(html)


def test_the_text_is_converted_once_per_content() -> None:
    html = "<p>Once per content, <b>not</b> per recipient</p>"
    first = OutgoingEmail(1, "t", "a@example.com", "b@example.org", "s", html + "<img>")
    calls_before = _cached_text.cache_info()
    emails = [dataclasses.replace(first, request_id=n, source_html=html) for n in range(50)]
    texts = {text_part(email) for email in emails}
    assert texts == {"Once per content, not per recipient"}
    info = _cached_text.cache_info()
    assert info.misses - calls_before.misses == 1
    assert info.hits - calls_before.hits == 49
    # Without a source (a backend called directly), the HTML itself is converted.
    assert text_part(first) == html_to_text(first.html)
