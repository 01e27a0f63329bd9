"""A name picks code in exactly one place: its registry. Nowhere else in ``src/rlft`` is an
algorithm's, a task's or an environment's name compared with a string constant."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "rlft"
# Where names are defined, so comparing them there is the point.
REGISTRIES = {"algorithms/presets.py", "trainers/registry.py", "tasks/__init__.py", "envs/__init__.py"}
# An expression naming a configured thing: config.algorithm.name, algo.name, config.task.name,
# env.name, config.algorithm (the agent recipe's algorithm is a plain string), algo["name"].
OWNERS = {"algorithm", "algo", "task", "env"}


def _names_a_choice(node: ast.expr) -> bool:
    def owner(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return expr.id
        if isinstance(expr, ast.Attribute):
            return expr.attr
        return None

    if isinstance(node, ast.Attribute):
        return (node.attr == "name" and owner(node.value) in OWNERS) or node.attr == "algorithm"
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value == "name" and owner(node.value) in OWNERS
    return False


def _is_string_constant(node: ast.expr) -> bool:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_string_constant(e) for e in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def name_branches(source: str) -> list[int]:
    """Line numbers where a configured name is compared with a string (==, !=, in, match)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(map(_names_a_choice, operands)) and any(map(_is_string_constant, operands)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Match) and _names_a_choice(node.subject):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "snippet",
    [
        'if config.algorithm.name == "ppo": pass',
        'if config.algorithm in ("grpo", "ppo"): pass',
        'reuse = "ppo" == self.algorithm.name',
        'if algo["name"] != "dpo": pass',
        'if self.task.name == "reviews": pass',
        'if env.name in {"guess"}: pass',
        'match config.algorithm.name:\n    case "ppo": pass',
    ],
)
def test_the_scan_finds_a_name_branch(snippet):
    assert name_branches(snippet) == [1]


@pytest.mark.parametrize(
    "snippet",
    [
        "preset = ALGORITHM_PRESETS[config.algorithm.name]",
        'if config.rollout.backend == "vllm": pass',
        "if config.algorithm.name in OFFLINE_ALGORITHMS: pass",
        'raise ValueError(f"{config.algorithm.name!r} is unknown")',
    ],
)
def test_the_scan_leaves_registry_lookups_and_other_fields_alone(snippet):
    assert name_branches(snippet) == []


def _branches_in(files: list[Path]) -> dict[str, list[int]]:
    found = {}
    for path in files:
        lines = name_branches(path.read_text())
        if lines:
            found[path.relative_to(SRC).as_posix()] = lines
    return found


def test_no_name_branches_outside_the_registries():
    files = [p for p in sorted(SRC.rglob("*.py")) if p.relative_to(SRC).as_posix() not in REGISTRIES]
    assert _branches_in(files) == {}
