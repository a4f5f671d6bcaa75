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

Merge fields: when the subject or HTML uses ``{{ name }}`` fields and the CSV has a header row,
its other columns become each recipient's data, under their header names (the server fills the
fields per recipient; see docs/architecture.md, "Merge fields"). Only the columns the subject or
HTML use are sent. A field with no column of its name, a column named ``unsubscribe_url``
(sesender provides that one) or several columns without a header are usage errors, found before
anything is submitted. An email that uses no field, a ``.txt`` file, ``--to`` and a one-column CSV
without a header send plain addresses, so their content goes out as given, braces included.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sesender.errors import InputFileError, UsageError
from sesender.templating import PROVIDED_FIELDS, UNSUBSCRIBE_FIELD

T = TypeVar("T")

#: Header names recognised as the address column (compared lowercased and stripped).
EMAIL_COLUMNS = frozenset(
    {"email", "e-mail", "address", "email address", "e-mail address", "email_address"}
)
DELIMITERS = (",", ";", "\t")
SUFFIXES = (".csv", ".txt")


@dataclass(frozen=True, slots=True)
class Recipients:
    """The addresses to submit, in file order, each once (``repeats`` were dropped), with each
    one's merge-field values when the email uses fields from a CSV's columns."""

    addresses: tuple[str, ...]
    repeats: int = 0
    data: tuple[Mapping[str, str], ...] | None = None

    @property
    def given(self) -> int:
        """How many addresses were given, repeats included."""
        return len(self.addresses) + self.repeats

    def items(self) -> list[str | dict[str, Any]]:
        """The ``emails`` of a request: addresses, or ``{"email", "data"}`` objects."""
        if self.data is None:
            return [*self.addresses]
        return [
            {"email": address, "data": dict(data)}
            for address, data in zip(self.addresses, self.data, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class CsvTable:
    """A CSV file's rows; ``header`` holds the first row when it names the address column."""

    rows: list[list[str]]
    column: int
    header: list[str] | None


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


def read_recipients_file(path: Path, fields: Iterable[str] = ()) -> Recipients:
    """The recipients in ``path``; ``fields`` are the merge fields the subject and HTML use."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputFileError(
            f"recipients file {path}: unknown type {suffix or '(no extension)'!r};"
            " use a .csv or .txt file"
        )
    text = read_text_file(path, "recipients file")
    if suffix == ".csv":
        recipients = csv_recipients(read_csv(text), frozenset(fields), path)
    else:
        recipients = unique(parse_txt(text))
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


def read_csv(text: str) -> CsvTable:
    text = text.removeprefix("\ufeff")
    first_line = text.split("\n", 1)[0]
    delimiter = max(DELIMITERS, key=first_line.count)  # "," on ties (and for one column)
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]
    if not rows:
        return CsvTable(rows=[], column=0, header=None)
    header = [cell.strip().lower() for cell in rows[0]]
    for index, name in enumerate(header):
        if name in EMAIL_COLUMNS:
            return CsvTable(rows=rows[1:], column=index, header=[c.strip() for c in rows[0]])
    return CsvTable(rows=rows, column=0, header=None)


def parse_csv(text: str) -> list[str]:
    """The addresses of a CSV file, blank values dropped."""
    return [address for address, _ in addresses_and_rows(read_csv(text))]


def addresses_and_rows(table: CsvTable) -> list[tuple[str, list[str]]]:
    found = []
    for row in table.rows:
        value = row[table.column].strip() if table.column < len(row) else ""
        if value:
            found.append((value, row))
    return found


def csv_recipients(table: CsvTable, fields: frozenset[str], path: Path) -> Recipients:
    """The CSV's recipients, with the columns the email's merge fields name as their data."""
    if not fields:
        return unique(address for address, _ in addresses_and_rows(table))
    if table.header is None:  # one column and no header: nothing to fill fields from
        if any(len(row) > 1 for row in table.rows):
            raise UsageError(
                f"recipients file {path} has several columns but no header row, and the subject"
                f" or HTML uses merge fields ({_braced(fields)}): add a first row naming the"
                " columns (email, then the field names) so each column can fill its field"
            )
        return unique(address for address, _ in addresses_and_rows(table))
    columns = {
        name: index for index, name in enumerate(table.header) if index != table.column and name
    }
    if UNSUBSCRIBE_FIELD in columns and UNSUBSCRIBE_FIELD in fields:
        raise UsageError(
            f"recipients file {path} has a column {UNSUBSCRIBE_FIELD}, but sesender provides"
            f" {{{{{UNSUBSCRIBE_FIELD}}}}} itself: rename the column"
        )
    needed = sorted(fields - PROVIDED_FIELDS)
    missing = [name for name in needed if name not in columns]
    if missing:
        raise UsageError(
            f"the subject or HTML uses {_braced(missing)}, but recipients file {path} has no"
            f" column of that name (its columns: {', '.join(table.header)})"
        )
    pairs = []
    for address, row in addresses_and_rows(table):
        data = {name: row[columns[name]] for name in needed if columns[name] < len(row)}
        pairs.append((address, data))
    return unique_with_data(pairs)


def _braced(names: Iterable[str]) -> str:
    return ", ".join(f"{{{{{name}}}}}" for name in sorted(names))


def unique_with_data(pairs: Iterable[tuple[str, Mapping[str, str]]]) -> Recipients:
    """Like :func:`unique`, each kept address with its data."""
    seen: set[str] = set()
    kept: list[str] = []
    values: list[Mapping[str, str]] = []
    repeats = 0
    for address, data in pairs:
        value = address.strip()
        key = value.lower()
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        kept.append(value)
        values.append(data)
    return Recipients(addresses=tuple(kept), repeats=repeats, data=tuple(values))


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


def batches(addresses: Sequence[T], size: int) -> list[Sequence[T]]:
    """``addresses`` in consecutive slices of at most ``size`` (one request each)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    return [addresses[start : start + size] for start in range(0, len(addresses), size)]
