"""How policies are put together: hooks instead of private fields, a registry that is a leaf."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import batchsim.policies
from batchsim.cli import build_parser
from batchsim.policies.registry import available

POLICIES = Path(batchsim.policies.__file__).parent


def _private_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(underscore names a module defines, underscore attributes it reads or writes)."""
    defined: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name.startswith("_"):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            used.add(node.attr)
            if isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            defined.add(node.value)  # names listed in __slots__
    return defined, used


def test_policies_touch_only_private_names_they_define():
    """No policy module reads or writes another class's underscore fields or methods: a
    variant of Continuous (hybrid, shortest_prompt) goes through its public hooks."""
    for path in sorted(POLICIES.glob("*.py")):
        defined, used = _private_names(ast.parse(path.read_text()))
        assert used <= defined, f"{path.name} uses private names of another module: " \
                                f"{sorted(used - defined)}"


def _imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_registry_is_a_leaf():
    """registry.py imports no policy, only the contract (base) and the user-error leaf."""
    imported = _imported_modules(ast.parse((POLICIES / "registry.py").read_text()))
    ours = {m for m in imported if m.startswith("batchsim")}
    assert ours <= {"batchsim.policies.base", "batchsim.policies.base.Policy",
                    "batchsim.sim.errors", "batchsim.sim.errors.UsageError"}, ours


def test_every_policy_module_is_registered_by_the_package():
    """Each module with an @register(...) is imported by policies/__init__.py, and the
    registry holds exactly the names those modules register."""
    registering, names = set(), set()
    for path in sorted(POLICIES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "register" \
                    and node.args and isinstance(node.args[0], ast.Constant):
                registering.add(path.stem)
                names.add(node.args[0].value)
    package = _imported_modules(ast.parse((POLICIES / "__init__.py").read_text()))
    assert {f"batchsim.policies.{m}" for m in registering} <= package
    assert set(available()) == names


@pytest.mark.parametrize("command", ["simulate", "validate", "sweep"])
def test_the_cli_offers_every_registered_policy(command, capsys):
    """--policy's choices come from the registry: an unknown name lists all of them."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--policy", "nope"] if command != "sweep" else
                                  [command, "--help"])
    assert exc.value.code in (0, 2)
    printed = capsys.readouterr()
    text = " ".join((printed.err + printed.out).split())
    for name in available():
        assert name in text, (command, name)
