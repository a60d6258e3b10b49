"""Fuzzing the sweep file (issue 26, item 4): hypothesis mutates the shipped sweep files (sweeps/*.yaml),
their search spaces (search_spaces/*.yaml) and the dotted overrides, and runs the loader and
`sweep run FILE --collect-only` on each. What must hold for every input: a config, or a HarnessError /
exit 2 whose message is under 20 kB; never another exception, never a traceback, nothing written.

The mutations are a user's: delete a key, change a value's type, push a number out of range (huge,
negative, NaN, inf), insert an unknown key, nest deeper, replace a string with a long, unicode or
path-like one. Seeded (derandomize) and bounded (max_examples): `make test` runs the same examples every
time, in well under a minute on one core (`pytest --hypothesis-show-statistics` prints them).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from helpers import ROOT
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from harness import tasks
from harness.cli import main
from harness.errors import HarnessError
from harness.sweepfile.load import load_sweep
from harness.sweepfile.schema import TUNABLE, ParamSpec, SweepConfig

MAX_MESSAGE = 20_000
SWEEPS = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "sweeps").glob("*.yaml"))}
SPACES = {p.name: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "search_spaces").glob("*.yaml"))}
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------------------------------------------
# What a user puts where a value was

LONG = {
    "<10**400>": 10**400,
    "<300 a>": "a" * 300,
    "<200 é>": "é" * 200,
    "<80 emoji>": "🙂" * 80,
}
"""Values too long to show in the statistics: drawn by name, then replaced."""


def long(name: str) -> Any:
    return LONG.get(name, name)


NUMBERS = st.one_of(
    st.sampled_from([0, -1, 1, 2, -(2**31), 2**31 - 1, 2**32, 2**63, 10**30, -(10**30), "<10**400>"]).map(
        long
    ),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.5, 1e-12]),
    st.integers(),
    st.floats(),
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "..",
        "../../etc/passwd",
        "/tmp/elsewhere",
        "~/x",
        "C:\\Users\\x",
        "<300 a>",
        "<200 é>",
        "<80 emoji>",
        "a?b%41#c",
        "a\x00b",
        "tab\there\nnewline",
        "{prompt}{0}%s",
        "x:y",
        "../evil:score",
        "/abs/evil:score",
        "..evil:score",
        "builtin:nothing",
        "sqlite:///elsewhere.db",
        "journal:x.log",
        "null",
        "true",
        "1e400",
        "-",
        "-k",
        "< nan",
        "> inf",
        "<= 1e400",
        "< baseline.nothing",
        "<< 2",
        "between 1 and 2",
        "os.path:join",
        "int_uniform",
        "log_uniform",
        "q_uniform",
        "grid",
        "grpo",
        "dpo",
        "text",
    ]
).map(long)
STRINGS = st.one_of(TEXT, ODD_STRINGS)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(TEXT, ODD_STRINGS), inner, max_size=3)
    ),
    max_leaves=6,
)


def schema_keys(model: type[BaseModel] = SweepConfig) -> set[str]:
    """Every key the schema knows, at any depth: an inserted key is as often a real one in a wrong place."""
    out = set()
    for name, f in model.model_fields.items():
        out.add(name)
        for arg in (f.annotation, *getattr(f.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out |= schema_keys(arg)
    return out


KEYS = st.one_of(
    TEXT,
    st.sampled_from(sorted(schema_keys() | schema_keys(ParamSpec) | set(TUNABLE) | {"nme", "budgett"})),
)


def paths(data: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in the loaded YAML: a key of a mapping or an index of a list."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield (*here, k)
            yield from paths(v, (*here, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield (*here, i)
            yield from paths(v, (*here, i))


def at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def retype(value: Any) -> Any:
    """The same content in another YAML type."""
    if isinstance(value, dict):
        return list(value.items()) and [list(kv) for kv in value.items()]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return [value]
    return {}


@st.composite
def mutated(draw: st.DrawFn, original: Any) -> Any:
    """One to three user mistakes in a copy of `original` (a loaded YAML mapping)."""
    data = yaml.safe_load(yaml.safe_dump(original))
    for _ in range(draw(st.integers(1, 3))):
        places = list(paths(data))
        op = draw(st.sampled_from(["delete", "value", "number", "string", "retype", "unknown", "nest"]))
        if not places or op == "unknown":
            parents = [p for p in [(), *places] if isinstance(at(data, p), dict)]
            parent = at(data, draw(st.sampled_from(parents))) if parents else data
            if isinstance(parent, dict):
                parent[draw(KEYS)] = draw(VALUES)
            continue
        path = draw(st.sampled_from(places))
        parent, key = at(data, path[:-1]), path[-1]
        if op == "delete":
            del parent[key]
        elif op == "value":
            parent[key] = draw(VALUES)
        elif op == "number":
            parent[key] = draw(NUMBERS)
        elif op == "string":
            parent[key] = draw(STRINGS)
        elif op == "retype":
            parent[key] = retype(parent[key])
        else:  # nest deeper: one level, or far past what a sweep file needs
            depth = draw(st.sampled_from([1, 2, 40]))
            value = parent[key]
            for _ in range(depth):
                value = draw(st.sampled_from([{"x": value}, [value]]))
            parent[key] = value
    return data


# ----------------------------------------------------------------------------------------------------
# What must hold


def write_project(root: Path, sweep: Any, space_name: str | None = None, space: Any = None) -> Path:
    """sweeps/ and search_spaces/ as shipped (relative `search_space:` paths keep working), one of them
    replaced by its mutation."""
    shutil.copytree(ROOT / "search_spaces", root / "search_spaces")
    (root / "sweeps").mkdir()
    if space_name is not None:
        (root / "search_spaces" / space_name).write_text(dump(space))
    path = root / "sweeps" / "fuzzed.yaml"
    path.write_text(dump(sweep) if not isinstance(sweep, str) else sweep)
    return path


def dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def check_outcomes(path: Path, overrides: list[str] = ()) -> None:
    """load_sweep: a config or a HarnessError; `sweep run --collect-only`: exit 0 or 2, no traceback, the
    same verdict; both: messages under 20 kB, nothing written."""
    root = path.parent.parent
    before = snapshot(root)
    with contextlib.chdir(root):
        try:
            cfg = load_sweep(path, list(overrides), checks=tasks.check)
            loaded = True
            first_trial(cfg)
        except HarnessError as e:
            loaded = False
            assert len(str(e).encode()) < MAX_MESSAGE, f"a {len(str(e).encode())}-byte message"
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["run", str(path), "--collect-only", *overrides])
    shown = out.getvalue() + err.getvalue()
    event("loaded" if loaded else "refused: " + _first_problem(err.getvalue()))
    assert code in (0, 2), shown
    assert (code == 0) == loaded, shown
    assert "Traceback" not in shown
    assert len(shown.encode()) < MAX_MESSAGE
    assert snapshot(root) == before, "collecting must write nothing"


def first_trial(cfg: SweepConfig) -> None:
    """A config that loads goes on to run: its sampler and pruner are made, and a first trial sampled
    from its space is a valid TrialSpec (in memory: nothing is written)."""
    import optuna

    from harness.core.spec import TrialSpec
    from harness.study import sampler, space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=sampler.make_sampler(cfg),
        pruner=sampler.make_pruner(cfg),
        directions=[m.goal for m in cfg.objectives],
    )
    trial = study.ask()
    TrialSpec.build(cfg, space.suggest(trial, cfg.parameters), trial.number, Path("unused"))


SECTIONS = set(SweepConfig.model_fields) | {"parameters"}


def _first_problem(err: str) -> str:
    """Which part of the file a message refuses (for the statistics): the section of its first key."""
    text = " ".join(err.split())
    for key in re.findall(r"([A-Za-z_][\w.]*)\s*:", text):
        if key.split(".")[0] in SECTIONS:
            return key.split(".")[0]
    if "override" in text:
        return "override"
    return "yaml" if "YAML" in text or "nested" in text or "expands" in text else "other"


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(SWEEPS)))
def test_mutated_sweep_files_load_or_fail_with_a_message(data: st.DataObject, name: str) -> None:
    sweep = data.draw(mutated(SWEEPS[name]), label="sweep file")
    with tempfile.TemporaryDirectory() as tmp:
        check_outcomes(write_project(Path(tmp), sweep))


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(SPACES)))
def test_mutated_search_spaces_load_or_fail_with_a_message(data: st.DataObject, name: str) -> None:
    space = data.draw(mutated(SPACES[name]), label="search space")
    users = [s for s in SWEEPS.values() if str(s.get("search_space", "")).endswith(name)]
    sweep = {**(users[0] if users else SWEEPS["pricer.yaml"]), "search_space": f"../search_spaces/{name}"}
    with tempfile.TemporaryDirectory() as tmp:
        check_outcomes(write_project(Path(tmp), sweep, name, space))


FIELDS = sorted(
    {".".join(map(str, p)) for s in SWEEPS.values() for p in paths(s) if all(isinstance(x, str) for x in p)}
)


@FUZZ
@given(
    name=st.sampled_from(sorted(SWEEPS)),
    overrides=st.lists(
        st.tuples(st.one_of(st.sampled_from(FIELDS), TEXT), st.one_of(VALUES, TEXT)), min_size=1, max_size=3
    ),
)
def test_mutated_overrides_load_or_fail_with_a_message(name: str, overrides: list[tuple[str, Any]]) -> None:
    items = [f"{k}={v if isinstance(v, str) else dump(v).strip()}" for k, v in overrides]
    items = [i for i in items if not i.startswith("-")]  # `-x...` would be an option, not an override
    with tempfile.TemporaryDirectory() as tmp:
        check_outcomes(write_project(Path(tmp), SWEEPS[name]), items)


def test_the_shipped_files_load_unchanged() -> None:
    """The fuzzers start from files that load: every failure they see is a mutation's."""
    for sweep in SWEEPS.values():
        with tempfile.TemporaryDirectory() as tmp:
            path = write_project(Path(tmp), sweep)
            with contextlib.chdir(path.parent.parent):
                assert load_sweep(path, checks=tasks.check).name == sweep["name"]
    assert os.path.isdir(ROOT / "search_spaces")
