"""`sweep run PATH`: collect, run each selected sweep (or hand it to a pool of workers), judge it and print
the session: what it ran, the short summary of what failed, the closing line (see harness.suite.collect)."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from harness.core.spec import Recipe
from harness.errors import ConfigError, HarnessError
from harness.sweepfile.schema import SweepConfig

if TYPE_CHECKING:
    from harness.study.run import RunOutcome
    from harness.study.workers import Pool
from harness.suite.collect import (
    Collected,
    collect,
    fresh_smoke_study,
)
from harness.suite.verdicts import (
    EXIT,
    SweepReport,
    exit_code,
    judge,
    summary_line,
)


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
    from harness.core import ranks
    from harness.study.run import follow_sweep, run_sweep

    if ranks.follower():  # a rank of a distributed worker: rank 0 runs (and judges) the sweep
        follow_sweep(cfg, recipe)
        return SweepReport(path, "passed", cfg.name)
    console = console or Console(highlight=False)
    err = err or Console(stderr=True, highlight=False)
    if smoke:
        storage = None  # smoke studies live in their own SQLite file, whatever the sweep's storage is
        fresh_smoke_study(cfg)
    outcome = run_sweep(cfg, storage=storage, recipe=recipe, console=console)
    print_summary(cfg, outcome, console)
    if cfg.confirm is not None and not smoke and not worker and not outcome.stopped_for_failures:
        from harness.suite.confirm import confirm_after_run

        confirm_after_run(cfg, storage, recipe, console)
    if worker:
        console.print(f"{outcome.ran} trial(s) run in {outcome.seconds:.0f}s", soft_wrap=True)
        return SweepReport(path, "failed" if outcome.stopped_for_failures else "passed", cfg.name)
    return judge(cfg, path, outcome, console, err, smoke)


def print_summary(cfg: SweepConfig, outcome: RunOutcome, console: Console) -> None:
    """What tuning changed, under the run's last trial line: untrained -> best, the baselines beside it;
    then whether the pruning can be trusted (harness.results.agreement) and what the sweep cost
    (harness.results.cost)."""
    from harness.results import agreement, cost
    from harness.results.comparison import summary_lines
    from harness.study.ranking import best_trial

    for line in summary_lines(cfg, outcome.study, best_trial(outcome.study)):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for line in agreement.lines(outcome.study):  # can the pruning be trusted here?
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(cost.line(cost.collect(outcome.study)), markup=False, highlight=False, soft_wrap=True)


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
    if pool is None or pool.worker is None:  # once per sweep, not once per worker
        print_notes(item, console)
    try:
        from harness.core import ranks
        from harness.study.workers import plan_ranks, visible_gpus

        k = plan_ranks(item.cfg, pool, visible_gpus())  # what cannot run here: exit 2, nothing written
        if pool is not None and (pool.n > 1 or (k > 1 and not ranks.launched())):
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
            f"{item.path}  name={c.name}{tags}  trials={c.budget.n_trials}  {c.budget.unit_text}"
            f"  expectations={n_expect}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        print_notes(item, console)
    parts = [f"{len(selected) - errors} collected"]
    if deselected:
        parts.append(f"{deselected} deselected")
    if errors:
        parts.append(f"{errors} error{'s' if errors > 1 else ''}")
    console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)
    return EXIT["error"] if errors else EXIT["ok"]


def print_notes(item: Collected, console: Console) -> None:
    """What load read of W&B's own keys (method: bayes, program:, eval/loss): one line each."""
    for note in item.cfg.notes if item.cfg else ():
        console.print(f"note: {item.path}: {note}", markup=False, highlight=False, soft_wrap=True)


def _print_short_summary(reports: list[SweepReport], console: Console) -> None:
    bad = [r for r in reports if r.status in ("failed", "error")]
    if not bad or len(reports) == 1 and not bad[0].failed_outcomes and bad[0].status == "error":
        return  # a single erroring file already printed its error; nothing to add
    console.rule("short summary")
    for r in bad:
        label = "FAILED" if r.status == "failed" else "ERROR"
        console.print(f"{label} {r.path} - {r.reason()}", markup=False, highlight=False, soft_wrap=True)
