"""The extra mutmut operators of scripts/mutation: what each mutant is, and that mutmut makes
them once installed."""

from __future__ import annotations

import libcst as cst
import pytest
from mutmut.mutation import file_mutation

from mutation_testing.operators import (
    EXTRA_OPERATORS,
    install,
    operator_delete_statement,
    operator_negate_condition,
)


def mutants(source: str, node_type: type[cst.CSTNode]) -> list[str]:
    """The source of every extra-operator mutant of the ``node_type`` nodes of ``source``."""
    module = cst.parse_module(source)
    found: list[cst.CSTNode] = []

    class Collect(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, node_type):
                found.append(node)
            return True

    module.visit(Collect())
    results: list[str] = []
    for node in found:
        for kind, operator in EXTRA_OPERATORS:
            if isinstance(node, kind):
                for mutated in operator(node):
                    changed = module.deep_replace(node, mutated)
                    assert isinstance(changed, cst.Module)
                    results.append(changed.code)
    return results


@pytest.mark.parametrize(
    ("statement", "node_type"),
    [
        ("x = f()", cst.Assign),
        ("x: int = f()", cst.AnnAssign),
        ("x += 1", cst.AugAssign),
        ("f(x)", cst.Expr),
        ("await f()", cst.Expr),
    ],
)
def test_a_statement_is_replaced_by_pass(statement: str, node_type: type[cst.CSTNode]) -> None:
    source = f"async def g():\n    {statement}\n    return x\n"
    assert mutants(source, node_type) == ["async def g():\n    pass\n    return x\n"]


def test_deleting_one_of_two_statements_on_a_line_keeps_the_other() -> None:
    assert mutants("def g():\n    a = 1; b = 2\n", cst.Assign) == [
        "def g():\n    pass; b = 2\n",
        "def g():\n    a = 1; pass\n",
    ]


@pytest.mark.parametrize(
    "statement", ['"""A docstring."""', "...", "x: int"], ids=["docstring", "ellipsis", "bare"]
)
def test_statements_without_effect_are_not_deleted(statement: str) -> None:
    source = f"def g():\n    {statement}\n"
    node = cst.parse_module(source).body[0]
    assert isinstance(node, cst.FunctionDef)
    line = node.body.body[0]
    assert isinstance(line, cst.SimpleStatementLine)
    small = line.body[0]
    assert isinstance(small, cst.Expr | cst.AnnAssign)
    assert list(operator_delete_statement(small)) == []


@pytest.mark.parametrize(
    ("source", "node_type", "expected"),
    [
        ("if a and b:\n    f()\n", cst.If, "if not (a and b):\n    f()\n"),
        (
            "if a:\n    f()\nelif b:\n    g()\n",
            cst.If,
            "if not (a):\n    f()\nelif b:\n    g()\n|if a:\n    f()\nelif not (b):\n    g()\n",
        ),
        ("while a < b:\n    f()\n", cst.While, "while not (a < b):\n    f()\n"),
        ("assert a, 'why'\n", cst.Assert, "assert not (a), 'why'\n"),
        ("x = a if b else c\n", cst.IfExp, "x = a if not (b) else c\n"),
        ("x = [a for a in b if a > 1]\n", cst.CompIf, "x = [a for a in b if not (a > 1)]\n"),
    ],
    ids=["if", "elif", "while", "assert", "ternary", "comprehension"],
)
def test_a_condition_is_negated(source: str, node_type: type[cst.CSTNode], expected: str) -> None:
    assert "|".join(mutants(source, node_type)) == expected


def test_a_negated_condition_is_left_to_mutmut_which_removes_the_not() -> None:
    node = cst.parse_module("if not a:\n    f()\n").body[0]
    assert list(operator_negate_condition(node)) == []


def test_installed_operators_reach_mutmuts_mutant_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = list(file_mutation.mutation_operators)  # type: ignore[attr-defined]
    monkeypatch.setattr(file_mutation, "mutation_operators", original)
    source = "def g(a):\n    if a:\n        a = f(a)\n    return a\n"

    def generated() -> list[str]:
        _, mutations, _, _ = file_mutation.create_mutations("g.py", source)
        module = cst.parse_module("")
        return [module.code_for_node(mutation.mutated_node) for mutation in mutations]

    before = generated()
    install()
    install()  # idempotent: no operator twice
    after = generated()
    assert "pass" not in before
    assert not any(code.startswith("if not (a)") for code in before)
    assert after.count("pass") == 1
    assert sum(code.startswith("if not (a)") for code in after) == 1
    extra = {"pass", "if not (a):\n    a = f(a)\n"}
    assert [code for code in after if code not in extra] == before  # mutmut's own, all kept
