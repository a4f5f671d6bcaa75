"""Merge fields: what a templated email was rendered from (the full renderer lands with merge
fields; the SES backend needs only this description of an email's template and values)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MergeFields"]


@dataclass(frozen=True, slots=True)
class MergeFields:
    """The unrendered template of one email and this recipient's values.

    ``subject`` and ``html`` are the template's subject and HTML (the HTML before the pixel);
    ``values`` are this recipient's values as strings (the message's defaults, the recipient's
    data, ``email`` and ``unsubscribe_url``).
    """

    subject: str
    html: str
    values: Mapping[str, str]
