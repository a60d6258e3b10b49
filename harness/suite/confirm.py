"""`sweep confirm` and a sweep file's `confirm:` block: run the repeats (harness.study.confirm), then
print what they say: the trials table and each confirmed config's mean and interval (harness.results).
`sweep audit`: run the audits of pruned trials, then print the pruning regret (harness.results.audit)."""

from __future__ import annotations

from rich.console import Console

from harness.core.spec import Recipe
from harness.results import audit
from harness.results.view import noise_lines, trials_table
from harness.study import noise
from harness.study import storage as st
from harness.study.confirm import ConfirmOutcome, config_for, run_audit, run_confirm
from harness.sweepfile.schema import SweepConfig


def print_outcome(outcome: ConfirmOutcome, cfg: SweepConfig, console: Console) -> None:
    console.print(trials_table(outcome.study, cfg.metric.name, cfg.metric.goal))
    console.print(
        f"{outcome.ran} repeat(s) run in {outcome.seconds:.0f}s; results in {cfg.study_dir}/", soft_wrap=True
    )
    for line in noise_lines(outcome.study):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def confirm_after_run(cfg: SweepConfig, storage: str | None, recipe: Recipe | None, console: Console) -> None:
    """A sweep file's `confirm: {top, seeds}`: confirm right after the run, before it is judged."""
    assert cfg.confirm is not None
    outcome = run_confirm(
        cfg,
        cfg.confirm.top,
        cfg.confirm.seeds,
        url=st.storage_url(cfg, storage),
        recipe=recipe,
        console=console,
    )
    console.print(f"{outcome.ran} repeat(s) run in {outcome.seconds:.0f}s", soft_wrap=True)
    for line in noise_lines(outcome.study):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def confirm_target(
    target: str,
    top: int,
    seeds: int,
    results_dir: str,
    storage: str | None,
    console: Console,
    *,
    recipe: Recipe | None = None,
    test: bool = False,
) -> int:
    """The `sweep confirm` verb: 0 when every owed repeat completed, 1 when some failed."""
    cfg, url = config_for(target, results_dir, storage)
    outcome = run_confirm(cfg, top, seeds, url=url, recipe=recipe, console=console, test=test)
    print_outcome(outcome, cfg, console)
    stats = noise.config_stats(outcome.study.get_trials(deepcopy=False))
    return 0 if all(n in stats for n in outcome.targets) else 1


def audit_target(
    target: str,
    pruned: int,
    results_dir: str,
    storage: str | None,
    console: Console,
    *,
    recipe: Recipe | None = None,
) -> int:
    """The `sweep audit` verb: 0 when every chosen pruned trial has a complete audit, 1 when one failed."""
    cfg, url = config_for(target, results_dir, storage, verb="audit")
    outcome = run_audit(cfg, pruned, url=url, recipe=recipe, console=console)
    console.print(trials_table(outcome.study, cfg.metric.name, cfg.metric.goal))
    console.print(
        f"{outcome.ran} audit(s) run in {outcome.seconds:.0f}s; results in {cfg.study_dir}/", soft_wrap=True
    )
    for line in audit.lines(outcome.study):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    complete = {a.pruned for a in outcome.summary.audited if a.state == "COMPLETE"}
    return 0 if all(n in complete for n in outcome.targets) else 1
