"""Drop-table-entry mutants: a module's or class's tables with one entry left out.

mutmut mutates code inside functions only; a table assigned at module or class level (the SES
error-code sets, a status map) is evaluated once at import, outside every function, so mutmut
never changes it. This module makes those mutants itself: one per entry of every literal table
(a dict, set, list or tuple display, also inside ``frozenset(...)``, ``tuple(...)`` and the like),
each the whole module's source with that one entry left out. :mod:`.table_runner` runs the unit
tests against each.

Not mutated: dunder names (``__all__`` lists what a star import gets, no behaviour) and tables
built by calls on something other than a literal (``frozenset(get_args(...))``: nothing to drop).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import libcst as cst

__all__ = ["TableMutant", "module_name", "table_mutants"]

#: Calls whose single argument is read as the table: ``frozenset({...})`` is a table too.
WRAPPERS = frozenset({"frozenset", "set", "tuple", "list", "dict", "MappingProxyType"})

Table = cst.Dict | cst.Set | cst.List | cst.Tuple


@dataclass(frozen=True, slots=True)
class TableMutant:
    """One entry of one table left out."""

    #: ``<module>.<Class.>TABLE__drop_<n>``, n counting the table's entries from 1.
    name: str
    #: The module's file, relative to the project root (posix).
    path: str
    #: The dropped entry's source text, for the report.
    entry: str
    #: The module's whole source with that entry left out.
    source: str


def module_name(path: str) -> str:
    """``sesender/backends/ses.py`` -> ``sesender.backends.ses`` (as mutmut names modules)."""
    return ".".join(PurePosixPath(path).with_suffix("").parts)


def table_mutants(path: str, source: str) -> list[TableMutant]:
    """Every drop-one-entry mutant of the tables in ``source`` (the module at ``path``)."""
    module = cst.parse_module(source)
    prefix = module_name(path)
    mutants: list[TableMutant] = []
    for qualified, table in _tables(module):
        for index, entry in enumerate(table.elements):
            mutated = module.deep_replace(table, _without(table, index))
            assert isinstance(mutated, cst.Module)
            mutants.append(
                TableMutant(
                    name=f"{prefix}.{qualified}__drop_{index + 1}",
                    path=path,
                    entry=_entry_text(module, entry),
                    source=mutated.code,
                )
            )
    return mutants


def _tables(module: cst.Module) -> Iterator[tuple[str, Table]]:
    """(qualified name, literal) of each table assigned at module level or in a class body."""
    for statement in module.body:
        if isinstance(statement, cst.ClassDef) and isinstance(statement.body, cst.IndentedBlock):
            for inner in statement.body.body:
                for name, table in _assigned_table(inner):
                    yield f"{statement.name.value}.{name}", table
        else:
            yield from _assigned_table(statement)


def _assigned_table(statement: cst.CSTNode) -> Iterator[tuple[str, Table]]:
    if not isinstance(statement, cst.SimpleStatementLine):
        return
    for small in statement.body:
        if isinstance(small, cst.Assign) and len(small.targets) == 1:
            target: cst.BaseExpression = small.targets[0].target
            value: cst.BaseExpression | None = small.value
        elif isinstance(small, cst.AnnAssign):
            target, value = small.target, small.value
        else:
            continue
        if not isinstance(target, cst.Name) or target.value.startswith("__") or value is None:
            continue
        table = _literal(value)
        if table is not None and table.elements:
            yield target.value, table


def _literal(value: cst.BaseExpression) -> Table | None:
    """The table literal ``value`` is, or wraps in one call such as ``frozenset(...)``."""
    if isinstance(value, Table):
        return value
    if (
        isinstance(value, cst.Call)
        and isinstance(value.func, cst.Name)
        and value.func.value in WRAPPERS
        and len(value.args) == 1
        and isinstance(value.args[0].value, Table)
    ):
        return value.args[0].value
    return None


def _without(table: Table, index: int) -> cst.BaseExpression:
    """``table`` with its entry at ``index`` left out."""
    elements = [element for position, element in enumerate(table.elements) if position != index]
    if not elements and isinstance(table, cst.Set):
        return cst.parse_expression("set()")  # ``{}`` would be a dict
    if not elements and isinstance(table, cst.Tuple) and not table.lpar:
        return cst.parse_expression("()")  # ``x = a,`` without its one entry
    return table.with_changes(elements=elements)


def _entry_text(module: cst.Module, entry: cst.CSTNode) -> str:
    """The entry as written, without its comma and on one line."""
    if isinstance(entry, cst.DictElement):
        text = f"{module.code_for_node(entry.key)}: {module.code_for_node(entry.value)}"
    elif isinstance(entry, cst.BaseElement):
        text = module.code_for_node(entry.value)
    else:
        text = module.code_for_node(entry)
    return " ".join(text.split())
