"""Collection and selection for `sweep run PATH` (a file or a folder) and the pytest plugin.

pytest-style rules:
- Discovery: `sweep run DIR` runs every `*.yaml` / `*.yml` below DIR, sorted by path, skipping hidden
  folders and files (`.name`). Search-space files (a mapping with only `parameters:` and optionally
  `description:`) are not sweeps and are skipped; anything else that fails to validate is reported as an
  error for that file, and the other files still run. `sweep run FILE` runs that file, as it always did.
- `-k EXPR` selects by keywords, like pytest: words are case-insensitive substrings matched against the
  file name and stem, the folders between DIR and the file, the study `name:` and the file's `tags:`;
  combine with `and`, `or`, `not` and parentheses.
- `-x` stops after the first failed or erroring sweep; the sweeps not run are reported as skipped.
- `--collect-only` lists what would run (validating each file) and runs and writes nothing.
- `--smoke` (and the pytest plugin by default): 1 trial, `max_steps=4`, `eval_steps=2`,
  `max_eval_rows=16`, `evaluation.samples=4` (each only ever lowered), tracking off, and the study goes to
  `<results_dir>/.smoke/<name>/` with the default SQLite storage (never `storage:`/`--storage`), so a smoke
  run never adds a trial to a real study. That folder is wiped before each smoke run: a smoke test must
  train, not resume a finished study.

Verdicts (harness.suite.verdicts): *passed* (every expectation held), *failed* (an expectation failed, no
trial completed, or the
sweep stopped after `max_failures` failures in a row), *error* (a user error: invalid file, data, storage;
reported per file), *skipped* (not run because of `-x`). The run ends with one line
`N passed, N failed[, N skipped][, N errors]`; exit code 2 if any error, else 1 if any failure, else 0.

Session fixtures (base model, tokenizer, splits; see harness.trial.cache) live for the whole process, so every
collected sweep with the same model and data reuses what the first one loaded.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError, HarnessError
from harness.suite.keywords import KeywordExpr, keywords_for
from harness.sweepfile.load import load_sweep, read_yaml
from harness.sweepfile.schema import SweepConfig

if TYPE_CHECKING:
    pass


SUFFIXES = (".yaml", ".yml")
SMOKE_DIR = ".smoke"
SMOKE = {"n_trials": 1, "max_steps": 4, "eval_steps": 2, "max_eval_rows": 16, "samples": 4}
SEARCH_SPACE_KEYS = {"parameters", "description"}
"""A file with only these top-level keys is a search-space file (referenced by `search_space:`)."""


def is_search_space_file(data: Any) -> bool:
    return isinstance(data, dict) and "parameters" in data and set(data) <= SEARCH_SPACE_KEYS


def find_sweep_files(root: Path) -> list[Path]:
    """Every sweep file below `root`, sorted; hidden folders/files and search-space files are skipped."""
    if not root.exists():
        raise ConfigError(f"no such file or folder: {root}")
    if root.is_file():
        return [root]
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() not in SUFFIXES or not path.is_file():
            continue
        if _is_search_space(path):
            continue
        found.append(path)
    return found


def _is_search_space(path: Path) -> bool:
    try:
        return is_search_space_file(read_yaml(path))
    except HarnessError:
        return False  # unreadable: keep it, so the user sees the error for that file


def looks_like_sweep(path: Path) -> bool:
    """Outside a `sweeps` folder (pytest plugin): a YAML mapping with `search_space:`, or with
    `parameters:` next to a key only sweep files have (so search-space files and other YAML don't match).
    A W&B sweep file for W&B's agent (`program:` or `command:`) is not one: it names its script's settings
    (`sweep convert` makes a harness sweep of it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    # Cheap pre-check: most YAML in a repo (CI, compose files) never gets parsed.
    if not re.search(r"^(search_space|parameters)\s*:", text, re.MULTILINE):
        return False
    try:
        data = read_yaml(path)
    except HarnessError:
        return False
    if not isinstance(data, dict) or {"program", "command"} & set(data):
        return False
    sweep_only = set(SweepConfig.model_fields) - SEARCH_SPACE_KEYS - {"source_path", "expectations", "notes"}
    return "search_space" in data or ("parameters" in data and bool(set(data) & sweep_only))


def smoke_config(cfg: SweepConfig) -> SweepConfig:
    """The same sweep, tiny, in its own study folder (see the module docstring)."""
    b, d, e = cfg.budget, cfg.dataset, cfg.evaluation
    return cfg.model_copy(
        update={
            "budget": b.model_copy(
                update={
                    "n_trials": SMOKE["n_trials"],
                    # A smoke run is a few steps whatever the budget's unit (steps or epochs).
                    "max_steps": min(b.max_steps or SMOKE["max_steps"], SMOKE["max_steps"]),
                    "epochs": None,
                    "eval_steps": SMOKE["eval_steps"]
                    if isinstance(b.eval_steps, float)
                    else min(b.eval_steps, SMOKE["eval_steps"]),
                    "timeout_minutes": None,
                    "device_hours": None,
                    "max_failures": 1,
                }
            ),
            "dataset": d.model_copy(update={"max_eval_rows": min(d.max_eval_rows, SMOKE["max_eval_rows"])}),
            "evaluation": e.model_copy(update={"samples": min(e.samples, SMOKE["samples"])}),
            "tracking": cfg.tracking.model_copy(update={"backend": "none"}),
            "storage": None,
            "results_dir": str(Path(cfg.results_dir) / SMOKE_DIR),
        }
    )


def fresh_smoke_study(cfg: SweepConfig) -> None:
    """Delete the previous smoke study of this sweep; only ever a folder under `.smoke/`."""
    folder = cfg.study_dir
    if folder.parent.name == SMOKE_DIR and folder.exists():
        shutil.rmtree(folder)


def load(path: Path, overrides: Sequence[str] = (), smoke: bool = False) -> SweepConfig:
    from harness import tasks

    cfg = load_sweep(path, list(overrides), checks=tasks.check)  # the tasks' problems with the schema's
    return smoke_config(cfg) if smoke else cfg


@dataclass
class Collected:
    path: Path
    cfg: SweepConfig | None
    error: str | None


def collect(
    target: Path, overrides: Sequence[str] = (), keyword: str | None = None, smoke: bool = False
) -> tuple[list[Collected], int]:
    """Find, validate and select sweep files -> (selected, number deselected by -k)."""
    expr = KeywordExpr(keyword) if keyword else None
    # Not a folder: one sweep file; a missing one is reported by load_sweep ("sweep file not found").
    files = find_sweep_files(target) if target.is_dir() else [target]
    if len(files) > 1 and any(o.split("=", 1)[0] == "name" for o in overrides):
        raise ConfigError("override name=... would give every collected sweep the same study; drop it")
    selected, deselected = [], 0
    for path in files:
        cfg, error = None, None
        try:
            cfg = load(path, overrides, smoke)
        except HarnessError as e:
            error = str(e) if str(path) in str(e) else f"{path}: {e}"
        if expr is not None and not expr.matches(keywords_for(path, target, cfg)):
            deselected += 1
            continue
        selected.append(Collected(path, cfg, error))
    return selected, deselected
