"""Extra mutmut operators: delete a statement, negate a condition.

Each operator takes a libcst node and yields its mutated replacements, the shape mutmut's own
operators have (``mutmut.mutation.mutators.mutation_operators``: pairs of node type and
function), so :func:`install` can add them to the list mutmut generates mutants from.

Left out on purpose, because the mutant would be equivalent or a duplicate of mutmut's own:

- a docstring or ``...`` statement (deleting it changes nothing a test can run);
- an annotation without a value (``x: int`` does nothing at run time);
- a condition that is already ``not c``: mutmut's ``operator_remove_unary_ops`` turns it into
  ``c``, which is what negating it would mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import libcst as cst

__all__ = ["EXTRA_OPERATORS", "install", "operator_delete_statement", "operator_negate_condition"]

#: The condition-holding nodes negated, and the attribute that holds the condition.
CONDITION_ATTRIBUTES: dict[type[cst.CSTNode], str] = {
    cst.If: "test",
    cst.While: "test",
    cst.IfExp: "test",
    cst.Assert: "test",
    cst.CompIf: "test",
}

DeletableStatement = cst.Assign | cst.AnnAssign | cst.AugAssign | cst.Expr


def operator_delete_statement(node: DeletableStatement) -> Iterable[cst.BaseSmallStatement]:
    """``x = f()``, ``x += 1``, ``f(x)``, ``await f()`` -> ``pass``: the statement's effect is
    gone, and nothing else changes (a block never becomes empty)."""
    if isinstance(node, cst.AnnAssign) and node.value is None:
        return
    if isinstance(node, cst.Expr) and isinstance(
        node.value, cst.SimpleString | cst.ConcatenatedString | cst.Ellipsis
    ):
        return
    yield cst.Pass(semicolon=node.semicolon)


def operator_negate_condition(node: cst.CSTNode) -> Iterable[cst.CSTNode]:
    """``if c:`` -> ``if not (c):``; likewise ``elif``, ``while``, ``assert``, a ternary's and a
    comprehension's ``if``."""
    attribute = CONDITION_ATTRIBUTES.get(type(node))
    if attribute is None:
        return
    condition = getattr(node, attribute)
    assert isinstance(condition, cst.BaseExpression)
    if isinstance(condition, cst.UnaryOperation) and isinstance(condition.operator, cst.Not):
        return
    negated = cst.UnaryOperation(
        operator=cst.Not(),
        expression=condition.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()]),
    )
    yield node.with_changes(**{attribute: negated})


#: In the shape of ``mutmut.mutation.mutators.mutation_operators``.
EXTRA_OPERATORS: list[tuple[type, Callable[[Any], Iterable[cst.CSTNode]]]] = [
    (cst.Assign, operator_delete_statement),
    (cst.AnnAssign, operator_delete_statement),
    (cst.AugAssign, operator_delete_statement),
    (cst.Expr, operator_delete_statement),
    *((node_type, operator_negate_condition) for node_type in CONDITION_ATTRIBUTES),
]


def install() -> None:
    """Make mutmut generate the extra mutants too, in this process and the worker processes it
    forks to generate mutants. Call before mutmut's entry point; idempotent."""
    from mutmut.mutation import file_mutation

    # mutmut's create_mutations reads the list through file_mutation's own global of that name
    # (imported from mutmut.mutation.mutators, not re-exported: hence the ignores).
    current = list(file_mutation.mutation_operators)  # type: ignore[attr-defined]
    missing = [pair for pair in EXTRA_OPERATORS if pair not in current]
    file_mutation.mutation_operators = [*current, *missing]  # type: ignore[attr-defined]
