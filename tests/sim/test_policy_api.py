"""How policies are put together: hooks instead of private fields, a registry that is a leaf."""

from __future__ import annotations

import ast
from pathlib import Path

import batchsim.policies

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
