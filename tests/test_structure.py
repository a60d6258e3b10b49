"""The package's shape: the two boundaries hold, no import cycles, no oversized modules, and the names
config.py accepts for optim/lr_scheduler_type are ones transformers knows."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from harness.sweepfile.schema import OPTIMIZERS, SCHEDULERS

PACKAGE = ROOT / "harness"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """harness module -> the harness modules it imports anywhere in its body (lazy imports included)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[mod] |= {t for t in targets if t in mods and t not in (mod, "harness")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_inside_harness():
    graph = import_graph()
    assert "harness.sweepfile.schema" in graph and graph["harness.sweepfile.load"], (
        "the walker must see the package"
    )
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_no_module_over_500_lines():
    big = {
        str(p.relative_to(ROOT)): n
        for p in _modules().values()
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not big


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("harness.trial.recipe", ["optuna"]),
        ("harness.study.objective", ["torch", "transformers"]),
        ("harness.study.run", ["torch", "transformers"]),
        ("harness.suite.plugin", ["torch", "transformers"]),
        ("harness.sweepfile.load", ["torch", "transformers"]),
    ],
)
def test_boundaries_hold_at_import(module, forbidden):
    """The recipe runs without a study (no Optuna); the study side is tested without torch."""
    code = f"import sys, {module}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", f"importing {module} imported {out.stdout.strip()}"


def test_accepted_optimizer_and_scheduler_names_are_transformers_names():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}
    assert set(SCHEDULERS) <= {s.value for s in SchedulerType}
    assert {"adamw_torch", "paged_adamw_32bit", "paged_adamw_8bit", "adafactor", "sgd"} <= set(OPTIMIZERS)
