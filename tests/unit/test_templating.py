"""Merge fields (sesender/templating.py): placeholders, values, rendering, and hostile values."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sesender.backends.text import html_to_text
from sesender.http.submission import is_unicode
from sesender.templating import (
    MAX_FIELDS,
    MAX_VALUE_LENGTH,
    DataError,
    field_names,
    normalize_data,
    render_html,
    render_text,
    value_text,
)

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True).filter(
    lambda name: name not in {"email", "unsubscribe_url"}
)
VALUES = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=200,
)


def test_placeholders_with_and_without_spaces_are_fields() -> None:
    template = "{{name}} {{ plan }} {{\tcity\t}} {{_x1}}"
    assert field_names(template) == {"name", "plan", "city", "_x1"}
    values = {"name": "Ada", "plan": "pro", "city": "Seoul", "_x1": "1"}
    assert render_text(template, values) == "Ada pro Seoul 1"


@pytest.mark.parametrize(
    "text",
    ["{{ first-name }}", "{{}}", "{{ 1st }}", "{ {name} }", "{{name}", "{{\nname}}", "{{a b}}"],
)
def test_anything_else_between_braces_is_left_as_written(text: str) -> None:
    assert field_names(text) == set()
    assert render_html(text, {"name": "X", "a": "X", "first": "X"}) == text
    assert render_text(text, {"name": "X", "a": "X", "first": "X"}) == text


def test_html_values_are_escaped_and_subject_values_are_not() -> None:
    values = {"name": "<b>\"Ada\" & 'Bob'</b>"}
    assert render_html("<p title='{{name}}'>{{ name }}</p>", values) == (
        "<p title='&lt;b&gt;&quot;Ada&quot; &amp; &#x27;Bob&#x27;&lt;/b&gt;'>"
        "&lt;b&gt;&quot;Ada&quot; &amp; &#x27;Bob&#x27;&lt;/b&gt;</p>"
    )
    assert render_text("Hi {{name}}", values) == "Hi <b>\"Ada\" & 'Bob'</b>"


def test_a_value_holding_a_placeholder_is_not_rendered_again() -> None:
    values = {"a": "{{b}}", "b": "secret"}
    assert render_text("{{a}}", values) == "{{b}}"
    assert render_html("{{a}}", values) == "{{b}}"


def test_a_missing_value_leaves_the_placeholder() -> None:
    assert render_html("Hi {{ name }}", {}) == "Hi {{ name }}"


@pytest.mark.parametrize(
    ("value", "text"),
    [("x", "x"), (True, "true"), (False, "false"), (42, "42"), (-7, "-7"), (2.5, "2.5"),
     (1e100, "1e+100"), ("", "")],
)  # fmt: skip
def test_values_are_written_as_json_writes_them(value: Any, text: str) -> None:
    assert value_text("f", value) == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "not null"),
        ({"a": 1}, "not an object"),
        ([1, 2], "not an array"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        ("x" * (MAX_VALUE_LENGTH + 1), "longer than 1000"),
        ("a\x00b", "NUL"),
        ("\ud800", "surrogate"),
    ],
)
def test_unusable_values_are_refused_with_the_reason(value: Any, reason: str) -> None:
    with pytest.raises(DataError, match=reason):
        value_text("f", value)


def test_a_value_of_exactly_the_limit_is_accepted() -> None:
    assert len(value_text("f", "x" * MAX_VALUE_LENGTH)) == MAX_VALUE_LENGTH


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([], "data must be an object"),
        ("x", "data must be an object"),
        ({f"f{n}": "v" for n in range(MAX_FIELDS + 1)}, "at most 50"),
        ({"first-name": "x"}, "first-name"),
        ({"1st": "x"}, "1st"),
        ({"": "x"}, "is not a letter"),
        ({"a" * 65: "x"}, "at most 64"),
        ({"email": "x@example.com"}, "provided by sesender"),
        ({"unsubscribe_url": "https://evil.example"}, "provided by sesender"),
        ({"ok": "x", "bad": {"nested": True}}, "data.bad must be"),
    ],
)
def test_unusable_data_objects_are_refused(data: Any, reason: str) -> None:
    with pytest.raises(DataError, match=reason):
        normalize_data(data)


def test_fifty_fields_are_accepted() -> None:
    data = {f"f{n}": n for n in range(MAX_FIELDS)}
    assert normalize_data(data) == {f"f{n}": str(n) for n in range(MAX_FIELDS)}


class _Collector(HTMLParser):
    """Records the tags and attributes a parser sees, to show a value added none."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector


TEMPLATE = '<p class="greeting" title="{{ name }}">Hello {{name}}</p><a href="/x?u={{name}}">go</a>'


@given(value=VALUES)
def test_no_value_adds_a_tag_or_an_attribute_and_attributes_read_back_the_value(
    value: str,
) -> None:
    html = render_html(TEMPLATE, {"name": value})
    tags = parsed(html).tags
    assert [tag for tag, _ in tags] == ["p", "a"]
    assert tags[0][1] == [("class", "greeting"), ("title", value)]
    assert tags[1][1] == [("href", f"/x?u={value}")]


@given(value=VALUES)
def test_the_text_a_reader_sees_is_the_value(value: str) -> None:
    html = render_html("<p>[{{v}}]</p>", {"v": value})
    assert "".join(parsed(html).text) == f"[{value}]"
    # The text part the backends derive collapses white space, as for any HTML text.
    expected = " ".join(f"[{value}]".split())
    assert html_to_text(html) == expected


@given(data=st.dictionaries(NAMES, VALUES, max_size=8), template_names=st.lists(NAMES, max_size=4))
def test_render_text_replaces_exactly_the_placeholders(
    data: dict[str, str], template_names: list[str]
) -> None:
    template = "|".join(f"{{{{{name}}}}}" for name in template_names)
    rendered = render_text(template, data)
    expected = "|".join(data.get(name, f"{{{{{name}}}}}") for name in template_names)
    assert rendered == expected


@given(
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=1100),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
)
def test_value_text_either_refuses_or_gives_bounded_clean_text(value: Any) -> None:
    refused = not isinstance(value, str | int | float) or (
        isinstance(value, float) and not math.isfinite(value)
    )
    if not refused and not isinstance(value, str):
        refused = len(json.dumps(value)) > MAX_VALUE_LENGTH
    if isinstance(value, str):
        refused = len(value) > MAX_VALUE_LENGTH or "\x00" in value or not is_unicode(value)
    if refused:
        with pytest.raises(DataError, match=r"^data\.f "):
            value_text("f", value)
        return
    text = value_text("f", value)
    assert isinstance(value, str | int | float)
    assert len(text) <= MAX_VALUE_LENGTH
    assert "\x00" not in text
    text.encode("utf-8")
