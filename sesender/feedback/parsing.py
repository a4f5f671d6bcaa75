"""Strict JSON and timestamp parsing shared by the SNS envelope and SES event parsers.

Everything that arrives on the SNS webhook is hostile until its signature checks out, and the SES
event inside is parsed from that same untrusted text. These helpers turn every way the standard
library can fail on such input (bad UTF-8, bad JSON, duplicate keys, ``NaN``, nesting deep enough to
blow the recursion limit, integers too long to convert) into one :class:`SnsMalformed`, so callers
never have to know which library exception a hostile body can provoke.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

from sesender.errors import SnsMalformed

__all__ = ["load_json_object", "parse_timestamp"]

# ISO 8601 as AWS writes it ("2022-07-28T21:23:58.317Z"), plus an explicit offset. ASCII digits
# only: ``\d`` would also accept Arabic-Indic and other Unicode digits.
_TIMESTAMP = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?:(?P<zulu>Z)|(?P<sign>[+-])(?P<offset_hour>[0-9]{2}):(?P<offset_minute>[0-9]{2}))",
    re.ASCII,
)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """Refuse duplicate keys: two parsers reading one body differently is how forgeries slip in."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> object:
    """Refuse ``NaN`` / ``Infinity``: not JSON, and never sent by AWS."""
    raise ValueError(f"non-standard JSON constant {name}")


def load_json_object(data: str | bytes, *, what: str) -> dict[str, object]:
    """Parse ``data`` as one JSON object or raise :class:`SnsMalformed` naming ``what`` it was.

    Bytes must be UTF-8 (SNS always sends UTF-8). Duplicate keys and non-standard constants are
    refused; excessive nesting is reported as malformed instead of escaping as ``RecursionError``;
    strings holding lone surrogates (valid JSON, invalid Unicode) are refused.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value: object = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except UnicodeDecodeError as exc:
        raise SnsMalformed(f"{what} is not valid UTF-8") from exc
    except RecursionError as exc:
        raise SnsMalformed(f"{what} is nested too deeply") from exc
    except ValueError as exc:
        raise SnsMalformed(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise SnsMalformed(f"{what} is not a JSON object")
    try:
        # A ``\ud800`` escape decodes to a lone surrogate, which no UTF-8 encoder (the signature
        # check, SQLite) accepts later; find any now, wherever it is nested.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SnsMalformed(f"{what} contains a lone UTF-16 surrogate") from exc
    except RecursionError as exc:  # pragma: no cover - loads would have failed first
        raise SnsMalformed(f"{what} is nested too deeply") from exc
    return value


def parse_timestamp(value: object, *, what: str) -> datetime:
    """Parse an AWS ISO 8601 timestamp into an aware UTC datetime, or raise :class:`SnsMalformed`.

    Written out by hand rather than with ``datetime.fromisoformat`` because that also accepts
    dates without a time and times without a zone, which would give a naive datetime that cannot
    be compared with the clock. Fractions longer than microseconds are truncated.
    """
    if not isinstance(value, str):
        raise SnsMalformed(f"{what} must be a string")
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        raise SnsMalformed(f"{what} is not an ISO 8601 UTC timestamp")
    fraction = (match["fraction"] or "").ljust(6, "0")[:6]
    if match["zulu"]:
        zone: timezone = UTC
    else:
        offset = timedelta(hours=int(match["offset_hour"]), minutes=int(match["offset_minute"]))
        if offset >= timedelta(hours=24):
            raise SnsMalformed(f"{what} has an impossible UTC offset")
        zone = timezone(-offset if match["sign"] == "-" else offset)
    try:
        parsed = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(fraction),
            tzinfo=zone,
        )
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise SnsMalformed(f"{what} is not a valid date and time") from exc
