"""Recipients for ``sesender send``: from ``--to`` or a ``.csv`` / ``.txt`` file, in batches.

Addresses are not validated here: the server does that, counts the invalid ones in ``errors`` and
lists them, so a bad line in a file is reported exactly like a bad address in the API. This module
only reads, drops blank values, removes exact repeats (so a split into several requests never sends
one address twice) and splits.

- ``.txt``: one address per line; blank lines and lines starting with ``#`` are ignored.
- ``.csv``: the column named ``email``, ``e-mail`` or ``address`` (case-insensitive; ``email
  address`` too) when the first row is such a header, else the first column and no header. The
  delimiter is ``,`` unless the first line has more ``;`` or tabs. A UTF-8 byte order mark is
  ignored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sesender.errors import InputFileError

#: Header names recognised as the address column (compared lowercased and stripped).
EMAIL_COLUMNS = frozenset(
    {"email", "e-mail", "address", "email address", "e-mail address", "email_address"}
)
DELIMITERS = (",", ";", "\t")
SUFFIXES = (".csv", ".txt")


@dataclass(frozen=True, slots=True)
class Recipients:
    """The addresses to submit, in file order, each once (``repeats`` were dropped)."""

    addresses: tuple[str, ...]
    repeats: int = 0

    @property
    def given(self) -> int:
        """How many addresses were given, repeats included."""
        return len(self.addresses) + self.repeats


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of ``path`` (a byte order mark dropped), or one clear ``InputFileError``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputFileError(f"{what} {path} is a directory, not a file") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{what} {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


def read_recipients_file(path: Path) -> Recipients:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputFileError(
            f"recipients file {path}: unknown type {suffix or '(no extension)'!r};"
            " use a .csv or .txt file"
        )
    text = read_text_file(path, "recipients file")
    addresses = parse_csv(text) if suffix == ".csv" else parse_txt(text)
    recipients = unique(addresses)
    if not recipients.addresses:
        raise InputFileError(f"recipients file {path} has no recipients")
    return recipients


def parse_txt(text: str) -> list[str]:
    addresses = []
    for line in text.splitlines():
        value = line.strip()
        if value and not value.startswith("#"):
            addresses.append(value)
    return addresses


def parse_csv(text: str) -> list[str]:
    text = text.removeprefix("\ufeff")
    first_line = text.split("\n", 1)[0]
    delimiter = max(DELIMITERS, key=first_line.count)  # "," on ties (and for one column)
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
    if not rows:
        return []
    column = 0
    header = [cell.strip().lower() for cell in rows[0]]
    for index, name in enumerate(header):
        if name in EMAIL_COLUMNS:
            column, rows = index, rows[1:]
            break
    addresses = []
    for row in rows:
        value = row[column].strip() if column < len(row) else ""
        if value:
            addresses.append(value)
    return addresses


def unique(addresses: Iterable[str]) -> Recipients:
    """Keep the first of addresses that differ only in case or surrounding white space."""
    seen: set[str] = set()
    kept: list[str] = []
    repeats = 0
    for address in addresses:
        value = address.strip()
        if not value:
            continue
        key = value.lower()
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        kept.append(value)
    return Recipients(addresses=tuple(kept), repeats=repeats)


def batches(addresses: Sequence[str], size: int) -> list[Sequence[str]]:
    """``addresses`` in consecutive slices of at most ``size`` (one request each)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    return [addresses[start : start + size] for start in range(0, len(addresses), size)]
