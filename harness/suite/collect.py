"""Collection, selection and pass/fail for `sweep run PATH` (a file or a folder) and the pytest plugin.

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

Verdicts: *passed* (every expectation held), *failed* (an expectation failed, no trial completed, or the
sweep stopped after `max_failures` failures in a row), *error* (a user error: invalid file, data, storage;
reported per file), *skipped* (not run because of `-x`). The run ends with one line
`N passed, N failed[, N skipped][, N errors]`; exit code 2 if any error, else 1 if any failure, else 0.

Session fixtures (base model, tokenizer, splits; see fixtures.py) live for the whole process, so every
collected sweep with the same model and data reuses what the first one loaded.
"""

from __future__ import annotations

import re
import shutil
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.markup import escape

from harness.core.spec import Recipe
from harness.errors import ConfigError, HarnessError
from harness.suite.keywords import KeywordExpr, keywords_for
from harness.sweepfile.expect import Outcome, check
from harness.sweepfile.load import load_sweep, read_yaml
from harness.sweepfile.schema import Expectation, SweepConfig
from harness.tasks import baselines

if TYPE_CHECKING:
    from harness.study.run import RunOutcome
    from harness.study.workers import Pool

SUFFIXES = (".yaml", ".yml")
SMOKE_DIR = ".smoke"
SMOKE = {"n_trials": 1, "max_steps": 4, "eval_steps": 2, "max_eval_rows": 16, "samples": 4}
SEARCH_SPACE_KEYS = {"parameters", "description"}
"""A file with only these top-level keys is a search-space file (referenced by `search_space:`)."""

Status = Literal["passed", "failed", "error", "skipped"]
EXIT = {"ok": 0, "failed": 1, "error": 2}


# ----------------------------------------------------------------------------------------------------
# Discovery


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
    `parameters:` next to a key only sweep files have (so search-space files and other YAML don't match)."""
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
    if not isinstance(data, dict):
        return False
    sweep_only = set(SweepConfig.model_fields) - SEARCH_SPACE_KEYS - {"source_path"}
    return "search_space" in data or ("parameters" in data and bool(set(data) & sweep_only))


# ----------------------------------------------------------------------------------------------------
# Smoke mode


def smoke_config(cfg: SweepConfig) -> SweepConfig:
    """The same sweep, tiny, in its own study folder (see the module docstring)."""
    b, d, e = cfg.budget, cfg.dataset, cfg.evaluation
    return cfg.model_copy(
        update={
            "budget": b.model_copy(
                update={
                    "n_trials": SMOKE["n_trials"],
                    "max_steps": min(b.max_steps, SMOKE["max_steps"]),
                    "eval_steps": min(b.eval_steps, SMOKE["eval_steps"]),
                    "timeout_minutes": None,
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


# ----------------------------------------------------------------------------------------------------
# One sweep


@dataclass
class SweepReport:
    path: Path
    status: Status
    name: str = ""
    outcomes: list[Outcome] = field(default_factory=list)
    message: str = ""
    """Why it failed or errored, in one or a few lines (no traceback for user errors)."""
    best_value: float | None = None
    trials_run: int = 0

    @property
    def failed_outcomes(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def reason(self) -> str:
        """One line for the short summary: the failed expectations, or the message."""
        failed = self.failed_outcomes
        if failed:
            return "; ".join(f"{o.expectation.describe()} ({o.detail})" for o in failed)
        if not self.message:
            return self.status
        # One line: the file is already named by the summary line, and a validation list folds up.
        text = self.message.removeprefix(f"{self.path}: ")
        text = " ".join(line.strip() for line in text.splitlines() if line.strip())
        return text if len(text) <= 300 else text[:297] + "..."


def load(path: Path, overrides: Sequence[str] = (), smoke: bool = False) -> SweepConfig:
    from harness import tasks

    cfg = load_sweep(path, list(overrides), checks=tasks.check)  # the tasks' problems with the schema's
    return smoke_config(cfg) if smoke else cfg


def run_one(
    cfg: SweepConfig,
    path: Path,
    *,
    storage: str | None = None,
    recipe: Recipe | None = None,
    console: Console | None = None,
    err: Console | None = None,
    smoke: bool = False,
    worker: bool = False,
) -> SweepReport:
    """Run (or resume) one sweep and judge it. User errors propagate as HarnessError (the caller decides
    whether they end the run or count as one file's error). A `worker` of `--workers N` only runs: its
    pool judges the study once every worker is done."""
    from harness.study.run import run_sweep

    console = console or Console(highlight=False)
    err = err or Console(stderr=True, highlight=False)
    if smoke:
        storage = None  # smoke studies live in their own SQLite file, whatever the sweep's storage is
        fresh_smoke_study(cfg)
    outcome = run_sweep(cfg, storage=storage, recipe=recipe, console=console)
    if cfg.confirm is not None and not smoke and not worker and not outcome.stopped_for_failures:
        from harness.study.confirm import confirm_after_run

        confirm_after_run(cfg, storage, recipe, console)
    if worker:
        console.print(f"{outcome.ran} trial(s) run in {outcome.seconds:.0f}s", soft_wrap=True)
        return SweepReport(path, "failed" if outcome.stopped_for_failures else "passed", cfg.name)
    return judge(cfg, path, outcome, console, err, smoke)


def judge(
    cfg: SweepConfig, path: Path, outcome: RunOutcome, console: Console, err: Console, smoke: bool = False
) -> SweepReport:
    """The end of a sweep: its trials table, each expectation's PASS/FAIL, and the verdict."""
    from optuna.trial import TrialState

    from harness.results.view import trials_table
    from harness.study.run import SweepStopped, check_failures

    console.print(trials_table(outcome.study, cfg.metric.name, cfg.metric.goal))
    console.print(
        f"{outcome.ran} trial(s) run in {outcome.seconds:.0f}s; results in {cfg.study_dir}/", soft_wrap=True
    )
    report = SweepReport(path, "passed", cfg.name, trials_run=outcome.ran)
    from harness.study import ranking

    complete = outcome.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = ranking.best_trial(outcome.study)
        report.best_value = ranking.primary_value(best) if best is not None else None
    report.outcomes = check_study(cfg.expectations, outcome.study, cfg.metric.name, smoke=smoke)
    stats = ranking.confirmed(outcome.study, ranking.best_trial(outcome.study)) if complete else None
    if stats is not None and report.outcomes:
        console.print(
            f"expectations use trial {stats.number}'s confirmed mean over {stats.n} seeds (sweep confirm)",
            soft_wrap=True,
        )
    for o in report.outcomes:
        label = "[green]PASS[/]" if o.passed else "[red]FAIL[/]"
        console.print(f"{label} {escape(o.expectation.describe())} ({escape(o.detail)})", soft_wrap=True)
    try:
        check_failures(outcome, cfg)
    except SweepStopped as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        report.status, report.message = "failed", str(e)
        return report
    if not complete:
        report.status = "failed"
        report.message = (
            f"{cfg.name}: no trial completed; the reasons are in {cfg.study_dir}/trial-*/metrics.json"
        )
    elif report.failed_outcomes:
        report.status = "failed"
    return report


def trial_metrics(trial: Any, objective: str) -> dict[str, float]:
    """A finished trial's final metrics (objective.record stores them), with the objective value added
    when the recipe did not report it under its own name."""
    metrics = dict(trial.user_attrs.get("metrics") or {})
    if objective not in metrics and trial.values:
        metrics[objective] = float(trial.values[0])
    return metrics


def check_study(
    expectations: Sequence[Expectation], study: Any, objective: str, smoke: bool = False
) -> list[Outcome]:
    """expectations.check on a study: its best trial (multi-objective: the Pareto-optimal trial best on
    the primary metric; a confirmed config: the mean of each metric over its seeds), every COMPLETE
    trial, and its task baselines."""
    from optuna.trial import TrialState

    from harness.study import noise
    from harness.study.ranking import best_trial, confirmed

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best_t = best_trial(study)
    best = trial_metrics(best_t, objective) if best_t is not None else None
    if best_t is not None and confirmed(study, best_t) is not None:
        best = noise.mean_metrics(noise.runs_of(complete, best_t.number), objective)
    trials = [(t.number, trial_metrics(t, objective)) for t in complete]
    return check(expectations, best, trials, smoke, baselines.ladder(study.user_attrs))


# ----------------------------------------------------------------------------------------------------
# A collection


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


def summary_line(reports: Iterable[SweepReport]) -> str:
    counts = {s: 0 for s in ("passed", "failed", "skipped", "error")}
    for r in reports:
        counts[r.status] += 1
    parts = [f"{counts['passed']} passed", f"{counts['failed']} failed"]
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} skipped")
    if counts["error"]:
        parts.append(f"{counts['error']} error{'s' if counts['error'] > 1 else ''}")
    return ", ".join(parts)


def exit_code(reports: Iterable[SweepReport]) -> int:
    statuses = {r.status for r in reports}
    if "error" in statuses:
        return EXIT["error"]
    return EXIT["failed"] if "failed" in statuses else EXIT["ok"]


def run_path(
    target: str | Path,
    overrides: Sequence[str] = (),
    *,
    keyword: str | None = None,
    exitfirst: bool = False,
    collect_only: bool = False,
    smoke: bool = False,
    storage: str | None = None,
    recipe: Recipe | None = None,
    pool: Pool | None = None,
    console: Console | None = None,
    err: Console | None = None,
) -> int:
    """`sweep run PATH [overrides]`: collect, select, run each sweep, judge, summarize -> exit code.
    `pool`: `--workers N` (each sweep run by N processes), or this process is one of them (workers.py)."""
    console = console or Console(highlight=False)
    err = err or Console(stderr=True, highlight=False)
    target = Path(target)
    # A file argument (even a missing one: load_sweep names it) keeps `sweep run FILE` as it always was.
    single = not target.is_dir()
    selected, deselected = collect(target, overrides, keyword, smoke)
    if not single and not selected and not deselected:
        raise ConfigError(f"no sweep files (*.yaml, *.yml) under {target}")
    if collect_only:
        return _print_collection(selected, deselected, console, err)
    if deselected:
        total = len(selected) + deselected
        console.print(
            f"collected {total} sweep files, {deselected} deselected by -k {keyword!r}", markup=False
        )
    if not selected:
        raise ConfigError(f"-k {keyword!r} selects none of the sweep files under {target}")

    reports: list[SweepReport] = []
    stop = False
    for item in selected:
        if stop:
            reports.append(SweepReport(item.path, "skipped", item.cfg.name if item.cfg else ""))
            continue
        if not single:
            console.rule(escape(str(item.path)))
        if pool is not None and pool.worker is not None:  # one of a pool's workers: run, nothing more
            return exit_code([_run_item(item, single, storage, recipe, console, err, smoke, pool)])
        report = _run_item(item, single, storage, recipe, console, err, smoke, pool)
        reports.append(report)
        if exitfirst and report.status in ("failed", "error"):
            stop = True
    if stop and any(r.status == "skipped" for r in reports):
        console.print("stopping after the first failure (-x)")
    _print_short_summary(reports, console)
    console.print(summary_line(reports), markup=False, highlight=False, soft_wrap=True)
    return exit_code(reports)


def _run_item(
    item: Collected,
    single: bool,
    storage: str | None,
    recipe: Recipe | None,
    console: Console,
    err: Console,
    smoke: bool,
    pool: Pool | None = None,
) -> SweepReport:
    if item.cfg is None:
        err.print(f"error: {item.error}", markup=False, soft_wrap=True)
        return SweepReport(item.path, "error", message=item.error or "")
    try:
        if pool is not None and pool.n > 1:
            return _run_pool(item.cfg, item.path, storage, pool, console, err)
        worker = pool is not None and pool.worker is not None
        return run_one(
            item.cfg,
            item.path,
            storage=storage,
            recipe=recipe,
            console=console,
            err=err,
            smoke=smoke,
            worker=worker,
        )
    except HarnessError as e:
        message = str(e) if str(item.path) in str(e) or item.cfg.name in str(e) else f"{item.path}: {e}"
        err.print(f"error: {message}", markup=False, soft_wrap=True)
        return SweepReport(item.path, "error", item.cfg.name, message=message)
    except Exception as e:
        if single:
            raise  # our bug, one sweep: the full traceback, exactly as before collection existed
        # Our bug, but one broken sweep must not hide the results of the others.
        err.print(traceback.format_exc(), markup=False, soft_wrap=True)
        return SweepReport(
            item.path, "error", item.cfg.name, message=f"internal error: {type(e).__name__}: {e}"
        )


def _run_pool(
    cfg: SweepConfig, path: Path, storage: str | None, pool: Pool, console: Console, err: Console
) -> SweepReport:
    """`--workers N`: the workers run the sweep, then it is judged here once."""
    from harness.study.workers import run_pool

    result = run_pool(cfg, path, storage, pool, console, err)
    if result.outcome is None:
        return SweepReport(path, "error", cfg.name, message=result.why or "a worker met a user error")
    report = judge(cfg, path, result.outcome, console, err)
    if result.why:
        err.print(f"error: {result.why}", markup=False, soft_wrap=True)
        report.status, report.message = "failed", result.why
    return report


def _print_collection(selected: list[Collected], deselected: int, console: Console, err: Console) -> int:
    errors = 0
    for item in selected:
        if item.cfg is None:
            errors += 1
            console.print(f"{item.path}  ERROR", markup=False, soft_wrap=True)
            err.print(f"error: {item.error}", markup=False, soft_wrap=True)
            continue
        c = item.cfg
        tags = f"  tags={','.join(c.tags)}" if c.tags else ""
        n_expect = len(c.expectations)
        console.print(
            f"{item.path}  name={c.name}{tags}  trials={c.budget.n_trials}  max_steps={c.budget.max_steps}"
            f"  expectations={n_expect}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    parts = [f"{len(selected) - errors} collected"]
    if deselected:
        parts.append(f"{deselected} deselected")
    if errors:
        parts.append(f"{errors} error{'s' if errors > 1 else ''}")
    console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)
    return EXIT["error"] if errors else EXIT["ok"]


def _print_short_summary(reports: list[SweepReport], console: Console) -> None:
    bad = [r for r in reports if r.status in ("failed", "error")]
    if not bad or len(reports) == 1 and not bad[0].failed_outcomes and bad[0].status == "error":
        return  # a single erroring file already printed its error; nothing to add
    console.rule("short summary")
    for r in bad:
        label = "FAILED" if r.status == "failed" else "ERROR"
        console.print(f"{label} {r.path} - {r.reason()}", markup=False, highlight=False, soft_wrap=True)
