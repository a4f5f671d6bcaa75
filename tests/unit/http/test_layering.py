"""The HTTP layer's seams: a blueprint module never imports another blueprint module; what they
share (the app type, ``app_context()``, responses, request checks) lives in modules below them."""

from __future__ import annotations

import ast
from pathlib import Path

import sesender.http

HTTP_PACKAGE = Path(sesender.http.__file__).parent


def defines_a_blueprint(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Blueprint"
        for node in ast.walk(tree)
    )


def imported_modules(tree: ast.Module) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def modules_of_the_http_package() -> dict[str, ast.Module]:
    return {
        f"sesender.http.{path.stem}": ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(HTTP_PACKAGE.glob("*.py"))
        if path.stem != "__init__"
    }


def test_no_blueprint_imports_another_blueprint() -> None:
    modules = modules_of_the_http_package()
    blueprints = {name for name, tree in modules.items() if defines_a_blueprint(tree)}
    assert len(blueprints) >= 10  # the check below looks at something
    for name in sorted(blueprints):
        others = imported_modules(modules[name]) & (blueprints - {name})
        assert not others, f"{name} imports the blueprint module(s) {sorted(others)}"


def test_only_the_app_module_imports_the_blueprints() -> None:
    modules = modules_of_the_http_package()
    blueprints = {name for name, tree in modules.items() if defines_a_blueprint(tree)}
    importers = {
        name
        for name, tree in modules.items()
        if name not in blueprints and imported_modules(tree) & blueprints
    }
    assert importers == {"sesender.http.app"}
