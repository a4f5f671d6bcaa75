"""actors/ stays generic: it imports trio, the standard library and itself, nothing else."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import actors

PACKAGE = Path(actors.__file__).parent
ALLOWED = {"trio", "actors"} | set(sys.stdlib_module_names)
MODULES = sorted(PACKAGE.glob("*.py"))


def imported_top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module.partition(".")[0])
    return names


def test_every_module_is_checked() -> None:
    assert {path.stem for path in MODULES} >= {
        "__init__",
        "channels",
        "ratelimit",
        "shutdown",
        "supervisor",
        "testing",
        "threads",
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_imports_only_trio_and_the_standard_library(path: Path) -> None:
    foreign = imported_top_level_names(path.read_text()) - ALLOWED
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


def test_the_checker_catches_sesender() -> None:
    source = (
        "import sesender\nfrom sesender.config import Config\nimport os.path\nfrom . import x\n"
    )
    assert imported_top_level_names(source) - ALLOWED == {"sesender"}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_public_names_are_exported_from_the_package(path: Path) -> None:
    if path.stem == "__init__":
        return
    module = importlib.import_module(f"actors.{path.stem}")
    assert set(module.__all__) <= set(actors.__all__)
    for name in module.__all__:
        assert getattr(actors, name) is getattr(module, name)
