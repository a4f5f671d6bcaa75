"""The drop-table-entry runner on a project of its own: a mutant the tests notice is killed, one
they do not notice survives, and the worktree itself is never changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mutation_testing.table_runner import TableRunError, run_table_mutants
from mutation_testing.tables import table_mutants

TABLE = 'CODES = frozenset({"checked", "unchecked"})\n'
TESTS = """
from sesender.codes import CODES


def test_checked_is_known() -> None:
    assert "checked" in CODES
"""


def project(root: Path, tests: str = TESTS) -> Path:
    """A project shaped like this one: the packages, their tests, a pytest configuration."""
    for package in ("actors", "sesender", "tests"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "sesender" / "codes.py").write_text(TABLE)
    (root / "tests" / "test_codes.py").write_text(tests)
    (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    return root


def test_a_noticed_drop_is_killed_and_an_unnoticed_one_survives(tmp_path: Path) -> None:
    root = project(tmp_path / "project")
    mutants = table_mutants("sesender/codes.py", TABLE)
    reported: list[str] = []
    statuses = run_table_mutants(
        root,
        mutants,
        ["tests/test_codes.py"],
        workers=2,
        report=lambda mutant, status: reported.append(f"{mutant.entry} {status}"),
    )
    assert statuses == {
        "sesender.codes.CODES__drop_1": "killed",
        "sesender.codes.CODES__drop_2": "survived",
    }
    assert sorted(reported) == ['"checked" killed', '"unchecked" survived']
    assert (root / "sesender" / "codes.py").read_text() == TABLE


def test_a_copy_whose_clean_tests_fail_stops_the_run(tmp_path: Path) -> None:
    root = project(tmp_path / "project", tests="def test_fails() -> None:\n    assert False\n")
    with pytest.raises(TableRunError, match="clean tests"):
        run_table_mutants(root, table_mutants("sesender/codes.py", TABLE), ["tests/test_codes.py"])
