"""Merge fields: ``{{ name }}`` placeholders in a message's subject and HTML, filled per recipient.

A message is a template only when its submission says so (a message-level ``data`` object, or at
least one recipient given as ``{"email": ..., "data": ...}``); any other message is sent exactly as
given, braces included, as the original service did. docs/architecture.md ("Merge fields") has the
whole contract; this module holds its pure parts:

- **Placeholders** are ``{{name}}`` with optional spaces or tabs inside the braces; a name is
  ``[A-Za-z_][A-Za-z0-9_]*``. Anything else between double braces (``{{ first-name }}``, ``{{}}``)
  is not a placeholder and is sent as written.
- **Values** are strings, numbers or booleans. Numbers and booleans are written as JSON writes them
  (``42``, ``2.5``, ``true``), so a value looks the same whichever client produced it; ``null``,
  objects, arrays and non-finite numbers are refused. At most :data:`MAX_FIELDS` fields of at most
  :data:`MAX_VALUE_LENGTH` characters; no NUL character, no lone UTF-16 surrogate (neither can be
  stored or mailed).
- **Rendering** escapes values for HTML (``& < > " '``) in the HTML part, so a value cannot open a
  tag or leave an attribute; the subject gets the value as is (a value with CR or LF is refused for
  a subject that uses it: it would split the header). The text part is derived by the backends from
  the rendered HTML, which gives back the plain value.
- ``email`` and ``unsubscribe_url`` are provided by sesender (:data:`PROVIDED_FIELDS`): data may not
  set them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from html import escape

__all__ = [
    "EMAIL_FIELD",
    "MAX_FIELDS",
    "MAX_VALUE_LENGTH",
    "PLACEHOLDER",
    "PROVIDED_FIELDS",
    "UNSUBSCRIBE_FIELD",
    "DataError",
    "MergeFields",
    "field_names",
    "normalize_data",
    "render_html",
    "render_text",
    "value_text",
]

#: At most this many fields in one recipient's data (the message's defaults and its own, merged).
MAX_FIELDS = 50
#: At most this many characters in one value (as rendered: ``true`` is 4).
MAX_VALUE_LENGTH = 1000
#: At most this many characters in one field name.
MAX_NAME_LENGTH = 64
#: Fields whose values sesender provides for every recipient; data may not set them.
EMAIL_FIELD = "email"
UNSUBSCRIBE_FIELD = "unsubscribe_url"
PROVIDED_FIELDS = frozenset({EMAIL_FIELD, UNSUBSCRIBE_FIELD})

FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A placeholder; group 1 is the field's name.
PLACEHOLDER = re.compile(r"\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\}\}")


@dataclass(frozen=True, slots=True)
class MergeFields:
    """A templated email's parts before rendering, for a backend that renders them itself.

    ``subject`` and ``html`` are the message's template as submitted (the HTML before the tracking
    pixel), ``values`` this recipient's values as strings: the fields the template uses, from the
    recipient's data over the message's defaults, plus ``email`` and ``unsubscribe_url``.
    """

    subject: str
    html: str
    values: Mapping[str, str]


class DataError(ValueError):
    """A ``data`` object that cannot be used; the message says why, for the API's answer."""


@lru_cache(maxsize=256)
def field_names(template: str) -> frozenset[str]:
    """The names of the fields ``template`` uses (cached: one template serves many recipients)."""
    return frozenset(PLACEHOLDER.findall(template))


def value_text(name: str, value: object) -> str:
    """A data value as the text that goes into the email, or :class:`DataError`."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):  # before int: bool is an int
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"data.{name} must be a finite number")
        text = json.dumps(value)
    else:
        kind = "null" if value is None else type(value).__name__
        raise DataError(f"data.{name} must be a string, number or boolean, not {_json_kind(kind)}")
    if len(text) > MAX_VALUE_LENGTH:
        raise DataError(f"data.{name} is longer than {MAX_VALUE_LENGTH} characters")
    if "\x00" in text:
        raise DataError(f"data.{name} must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"data.{name} must not contain lone UTF-16 surrogates") from None
    return text


def _json_kind(python_kind: str) -> str:
    return {"dict": "an object", "list": "an array"}.get(python_kind, python_kind)


def normalize_data(data: object) -> dict[str, str]:
    """A ``data`` object checked and turned into text values, or :class:`DataError`.

    It runs for every recipient of a submission (10,000 in one request), so the common case, a
    short ASCII string under a name already seen, takes a fast path; the rest goes through
    :func:`value_text`, which has every rule.
    """
    if not isinstance(data, dict):
        raise DataError("data must be an object")
    if len(data) > MAX_FIELDS:
        raise DataError(f"data has {len(data)} fields (at most {MAX_FIELDS})")
    values: dict[str, str] = {}
    for name, value in data.items():
        problem = _name_problem(name)
        if problem is not None:
            raise DataError(problem)
        if (
            type(value) is str
            and len(value) <= MAX_VALUE_LENGTH
            and value.isascii()
            and "\x00" not in value
        ):
            values[name] = value
        elif type(value) is int and -(10**15) < value < 10**15:
            values[name] = str(value)
        else:
            values[name] = value_text(name, value)
    return values


@lru_cache(maxsize=4096)
def _name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a data field, or None (cached: the same names recur per recipient)."""
    if len(name) > MAX_NAME_LENGTH or not FIELD_NAME.fullmatch(name):
        return (
            f"data field name {name[:MAX_NAME_LENGTH]!r} is not a letter or underscore"
            f" followed by letters, digits or underscores (at most {MAX_NAME_LENGTH})"
        )
    if name in PROVIDED_FIELDS:
        return f"data.{name} is provided by sesender and cannot be set"
    return None


def render_text(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each placeholder replaced by its value as is (the subject).

    A placeholder without a value is left as written: submission refuses such recipients, so this
    only happens to content that was never checked, and leaving it shows the mistake.
    """
    return PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), template)


def render_html(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each placeholder replaced by its value, HTML-escaped (quotes included, so
    a value is safe inside an attribute as well as in text)."""

    def replace(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        return match.group(0) if value is None else escape(value, quote=True)

    return PLACEHOLDER.sub(replace, template)
