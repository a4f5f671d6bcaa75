"""Drop-table-entry mutants: one per entry of every module- and class-level literal table, each
the module with exactly that entry missing."""

from __future__ import annotations

from typing import Any

from mutation_testing.tables import module_name, table_mutants

SOURCE = """
from types import MappingProxyType

__all__ = ["CODES"]
CODES = frozenset({"A", "B"})
ORDER: tuple[str, ...] = ("x", "y", "z")
NAMES = MappingProxyType({"1": "one", "2": "two"})
ONLY = {"solo"}
DERIVED = frozenset(sorted("ab"))
EMPTY = []

def f() -> list[int]:
    local = [1, 2]
    return local

class Kinds:
    KNOWN = {"k": 1}

    def m(self) -> dict[str, int]:
        return {"a": 1}
"""


def evaluated(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "mutant.py", "exec"), namespace)
    return namespace


def test_each_entry_of_each_table_is_one_mutant_with_only_that_entry_gone() -> None:
    original = evaluated(SOURCE)
    mutants = table_mutants("pkg/codes.py", SOURCE)
    dropped = {mutant.name: mutant.entry for mutant in mutants}
    assert dropped == {
        "pkg.codes.CODES__drop_1": '"A"',
        "pkg.codes.CODES__drop_2": '"B"',
        "pkg.codes.ORDER__drop_1": '"x"',
        "pkg.codes.ORDER__drop_2": '"y"',
        "pkg.codes.ORDER__drop_3": '"z"',
        "pkg.codes.NAMES__drop_1": '"1": "one"',
        "pkg.codes.NAMES__drop_2": '"2": "two"',
        "pkg.codes.ONLY__drop_1": '"solo"',
        "pkg.codes.Kinds.KNOWN__drop_1": '"k": 1',
    }
    for mutant in mutants:
        assert mutant.path == "pkg/codes.py"
        changed = {
            name: value
            for name, value in evaluated(mutant.source).items()
            if name != "__builtins__" and not callable(value) and value != original[name]
        }
        kinds = evaluated(mutant.source)["Kinds"].KNOWN
        if kinds != original["Kinds"].KNOWN:
            changed["Kinds.KNOWN"] = kinds
        table = mutant.name.removeprefix("pkg.codes.").partition("__drop_")[0]
        assert list(changed) == [table], mutant.name
        before = original[table] if table != "Kinds.KNOWN" else original["Kinds"].KNOWN
        assert len(changed[table]) == len(before) - 1
        assert type(changed[table]) is type(before), "a one-entry set stays a set"


def test_functions_dunder_names_and_computed_tables_are_left_alone() -> None:
    names = {mutant.name for mutant in table_mutants("pkg/codes.py", SOURCE)}
    assert not any(
        name.partition("__drop_")[0].endswith((".__all__", ".DERIVED", ".EMPTY", ".local"))
        for name in names
    )
    assert table_mutants("pkg/none.py", "def f():\n    return {1: 2}\n") == []


def test_module_names_are_spelt_as_mutmut_spells_them() -> None:
    assert module_name("sesender/backends/ses.py") == "sesender.backends.ses"
