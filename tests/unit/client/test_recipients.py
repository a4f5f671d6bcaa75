"""Reading recipients from ``--to``, ``.csv`` and ``.txt`` files, and splitting them in requests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sesender.client.recipients import (
    batches,
    parse_csv,
    parse_txt,
    read_recipients_file,
    unique,
)
from sesender.errors import InputFileError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize("name", ["email", "Email", " E-Mail ", "ADDRESS", "Email Address"])
def test_csv_header_names_the_address_column(name: str) -> None:
    text = f"name,{name},city\nAda,ada@example.com,London\nBob,bob@example.com,Paris\n"
    assert parse_csv(text) == ["ada@example.com", "bob@example.com"]


def test_csv_without_header_uses_the_first_column_and_keeps_the_first_row() -> None:
    text = "ada@example.com,Ada\nbob@example.com,Bob\n"
    assert parse_csv(text) == ["ada@example.com", "bob@example.com"]


def test_csv_with_an_unknown_header_keeps_it_as_a_row_for_the_server_to_reject() -> None:
    assert parse_csv("mail,name\nada@example.com,Ada\n") == ["mail", "ada@example.com"]


def test_csv_byte_order_mark_quotes_and_extra_columns() -> None:
    text = '\ufeffEmail,Name\n"ada@example.com","Lovelace, Ada"\r\nbob@example.com,Bob,extra,more\n'
    assert parse_csv(text) == ["ada@example.com", "bob@example.com"]


def test_csv_semicolon_and_tab_delimiters() -> None:
    assert parse_csv("name;email\nAda;ada@example.com\n") == ["ada@example.com"]
    assert parse_csv("email\tname\nada@example.com\tAda\n") == ["ada@example.com"]


def test_csv_invalid_addresses_are_kept_blank_values_dropped() -> None:
    text = "email,name\nnot-an-email,X\n,Empty\n\n   ,Blank\nshort\nada@example.com\n"
    assert parse_csv(text) == ["not-an-email", "short", "ada@example.com"]


def test_csv_rows_without_the_address_column_are_dropped() -> None:
    assert parse_csv("name,email\nAda\nBob,bob@example.com\n") == ["bob@example.com"]


def test_csv_header_only_or_empty() -> None:
    assert parse_csv("email\n") == []
    assert parse_csv("") == []


def test_txt_skips_comments_and_blank_lines_and_strips() -> None:
    text = (
        "# newsletter list\n\n  ada@example.com  \r\nnot an address\n   # indented comment\nb@x.io"
    )
    assert parse_txt(text) == ["ada@example.com", "not an address", "b@x.io"]


def test_unique_drops_repeats_ignoring_case_and_counts_them() -> None:
    recipients = unique(["a@example.com", "B@example.com", "A@EXAMPLE.COM ", " ", "b@example.com"])
    assert recipients.addresses == ("a@example.com", "B@example.com")
    assert recipients.repeats == 2
    assert recipients.given == 4


def test_read_csv_and_txt_files(tmp_path: Path) -> None:
    csv_file = write(tmp_path / "list.CSV", "\ufeffemail\nada@example.com\nada@example.com\n")
    assert read_recipients_file(csv_file).addresses == ("ada@example.com",)
    assert read_recipients_file(csv_file).repeats == 1
    txt_file = write(tmp_path / "list.txt", "# one\nbob@example.com\n")
    assert read_recipients_file(txt_file).addresses == ("bob@example.com",)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "recipients file {path} does not exist"),
        ("list.xlsx", "a@b.c", "unknown type '.xlsx'; use a .csv or .txt file"),
        ("list", "a@b.c", "unknown type '(no extension)'"),
        ("empty.txt", "", "recipients file {path} has no recipients"),
        ("comments.txt", "# only\n\n", "has no recipients"),
        ("header.csv", "email\n", "has no recipients"),
    ],
)
def test_file_errors_are_one_clear_line(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        write(path, content)
    with pytest.raises(InputFileError) as caught:
        read_recipients_file(path)
    assert message.format(path=path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_directory_and_non_utf8_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputFileError, match="is a directory"):
        read_recipients_file(tmp_path / "dir.csv")
    latin = write(tmp_path / "latin.txt", "josé@example.com\n", encoding="latin-1")
    with pytest.raises(InputFileError, match=r"is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_recipients_file(latin)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "secret.txt", "a@example.com\n")
    path.chmod(0)
    with pytest.raises(InputFileError, match=r"cannot read recipients file .*: Permission denied"):
        read_recipients_file(path)


def test_batches_split_25001_into_three_requests() -> None:
    addresses = [f"user{i}@example.com" for i in range(25_001)]
    parts = batches(addresses, 10_000)
    assert [len(part) for part in parts] == [10_000, 10_000, 5_001]
    assert [address for part in parts for address in part] == addresses


def test_batches_edges() -> None:
    assert [len(part) for part in batches(["a"] * 20_000, 10_000)] == [10_000, 10_000]
    assert batches([], 10) == []
    assert batches(["a", "b", "c"], 1) == [["a"], ["b"], ["c"]]
    with pytest.raises(ValueError, match="at least 1"):
        batches(["a"], 0)
