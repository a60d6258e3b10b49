"""The package's shape, as rules: which package may import which (no cycles between packages), which
third-party libraries each package's modules may load when imported (each in a fresh interpreter), and
the sizes that keep a package walkable. design.md's layout table, checked."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import ROOT

from harness.sweepfile.schema import OPTIMIZERS, SCHEDULERS

PACKAGE = ROOT / "harness"
TOP_LEVEL = {"harness", "harness.__main__", "harness.cli", "harness.errors", "harness.compat"}

# The flow is one way: cli -> suite -> study -> trial -> tasks -> core -> sweepfile; results reads core,
# the tasks and the storage (through study's read-only helpers). Each package's allowed harness imports
# (lazy ones included: a lazy import is still a dependency).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "compat": set(),
    "sweepfile": {"errors"},
    "core": {"errors", "sweepfile"},
    "builtin": {"errors"},
    "tasks": {"errors", "sweepfile", "core", "builtin"},
    "trial": {"errors", "compat", "sweepfile", "core", "tasks", "builtin"},
    "study": {"errors", "compat", "sweepfile", "core", "tasks", "trial"},
    "results": {"errors", "compat", "sweepfile", "core", "tasks", "study"},
    "suite": {"errors", "compat", "sweepfile", "core", "tasks", "trial", "study", "results"},
    "cli": {"errors", "sweepfile", "core", "study", "results", "suite"},
    "__main__": {"cli"},
    "harness": {"errors", "sweepfile", "core", "study", "tasks"},  # __init__: the lazy public API
}

# What importing any module of a package may not load.
BANNED: dict[str, tuple[str, ...]] = {
    "sweepfile": ("optuna", "torch", "transformers", "pandas"),
    "core": ("optuna", "torch", "transformers", "pandas"),
    "study": ("torch", "transformers"),
    "trial": ("optuna",),
    "tasks": ("optuna",),
    "results": ("torch", "transformers"),
    "suite": ("torch", "transformers"),
    "cli": ("optuna", "torch", "transformers", "pandas"),  # `sweep --help` pays for none of them
    "errors": ("optuna", "torch", "transformers", "pandas"),
    "compat": ("optuna", "torch", "transformers", "pandas"),
    "harness": ("optuna", "torch", "transformers", "pandas"),
}

MAX_MODULES = 14
MAX_LINES = 400
# Modules allowed past MAX_LINES, each because one concern needs the room (say which).
LONG: dict[str, str] = {
    "harness/sweepfile/schema.py": "the sweep file's schema: every field with its docstring (the docs)",
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def package_of(module: str) -> str:
    """harness.study.run -> study; harness.cli -> cli; harness -> harness."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "harness"


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


def lazy_public_targets() -> set[str]:
    """The modules harness/__init__.py names in its lazy public API (strings, not imports)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("harness.")
    }


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


def package_graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mod, deps in import_graph().items():
        out.setdefault(package_of(mod), set()).update(package_of(d) for d in deps)
    for pkg in out:
        out[pkg].discard(pkg)
    return out


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_entry_points_sit_at_the_top():
    top = {m for m in _modules() if m.count(".") <= 1 and not (PACKAGE / m.split(".")[-1]).is_dir()}
    assert top == TOP_LEVEL
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == {"sweepfile", "core", "study", "trial", "tasks", "results", "suite", "builtin"}


def test_no_import_cycle_between_modules_or_packages():
    graph = import_graph()
    assert graph["harness.study.run"] and graph["harness.sweepfile.load"], "the walker must see the package"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"
    packages = package_graph()
    assert find_cycle(packages) is None, f"package cycle: {' -> '.join(find_cycle(packages) or [])}"


def test_each_package_imports_only_what_the_flow_allows():
    graph = import_graph()
    assert set(ALLOWED) >= {package_of(m) for m in graph}, "every package needs a rule"
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in graph.items()
        for dep in sorted(deps)
        if package_of(dep) != package_of(mod) and package_of(dep) not in ALLOWED[package_of(mod)]
    ]
    wrong += [
        f"harness/__init__.py names {t}"
        for t in sorted(lazy_public_targets())
        if package_of(t) not in ALLOWED["harness"]
    ]
    assert not wrong


def test_packages_and_modules_stay_walkable():
    counts: dict[str, int] = {}
    for p in PACKAGE.rglob("*.py"):
        counts[str(p.parent.relative_to(ROOT))] = counts.get(str(p.parent.relative_to(ROOT)), 0) + 1
    assert {d: n for d, n in counts.items() if n > MAX_MODULES} == {}
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(ROOT)) not in LONG
    }
    assert long == {}
    assert all((ROOT / path).exists() for path in LONG), "an exception for a module that is gone"


_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.argv[2:] if m in sys.modules)))
"""


def _loaded(module: str, libraries: tuple[str, ...]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *libraries], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, f"importing {module} failed:\n{out.stderr[-2000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_module_loads_only_what_its_package_may():
    """Each module in a fresh interpreter: the recipe side runs without Optuna, the study and the views
    without torch, the sweep file and the contract without either (or pandas)."""
    checks = [
        (mod, BANNED[package_of(mod)])
        for mod in sorted(_modules())
        if package_of(mod) in BANNED and mod != "harness.__main__"
    ]
    assert len(checks) > 40, "every module, not a sample"
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(zip((m for m, _ in checks), pool.map(lambda c: _loaded(*c), checks), strict=True))
    assert {m: libs for m, libs in found.items() if libs} == {}


def test_the_pytest_plugin_entry_point_loads_no_optuna_or_torch():
    """The plugin is a pytest11 entry point: every pytest run in the venv imports it."""
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="pytest11") if e.name == "harness"]
    assert _loaded(ep.value, ("optuna", "torch", "transformers", "pandas")) == []


@pytest.mark.parametrize("name", ["load_sweep", "run_sweep", "HarnessError", "TrialSpec", "TrialResult"])
def test_the_public_api_imports_from_harness(name):
    import harness

    assert name in harness.__all__ and getattr(harness, name) is not None


def test_accepted_optimizer_and_scheduler_names_are_transformers_names():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert set(OPTIMIZERS) <= {o.value for o in OptimizerNames}
    assert set(SCHEDULERS) <= {s.value for s in SchedulerType}
    assert {"adamw_torch", "paged_adamw_32bit", "paged_adamw_8bit", "adafactor", "sgd"} <= set(OPTIMIZERS)
