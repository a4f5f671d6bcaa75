"""scripts/mutation's score: equivalents excluded, and an equivalent the tests kill reported."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "mutation.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


def test_listed_equivalents_are_left_out_and_survivors_counted() -> None:
    score = load_script().Score()
    score.add(
        {"m_1": "killed", "m_2": "survived", "m_3": "survived", "m_4": "timeout"},
        {"m_3": "no test can tell"},
    )
    assert (score.mutants, score.killed, score.equivalent) == (4, 2, 1)
    assert score.survivors == ["m_2 (survived)"]
    assert score.stale == []
    assert round(score.percent, 1) == 66.7


def test_a_listed_equivalent_that_the_tests_kill_is_stale_and_counted_as_killed() -> None:
    score = load_script().Score()
    score.add({"m_1": "killed", "m_2": "survived"}, {"m_1": "renumbered since", "m_2": "same"})
    assert score.stale == ["m_1"]
    assert (score.killed, score.equivalent, score.survivors) == (1, 1, [])
    assert score.percent == 100.0
