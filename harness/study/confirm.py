"""`sweep confirm STUDY|FILE [--top K] [--seeds S]`: is the winner real, or did it have a lucky seed?

The K best configs (by their single run) are trained S more times each, as trials of the same study:

- A repeat is an enqueued trial with the original's params and user attrs `repeat_of` (the original's
  number), `repeat_index` (1..S), `seed` (the original's seed + SEED_STRIDE * index: LoRA init and dropout
  change) and `data_seed` (the sweep's seed + index: the data order changes). Data and eval subset do not.
- Repeats are never sampled (their params are fixed), never pruned and never feed the pruner
  (objective.py), do not count toward `n_trials` (failures.counts), and rank after every sampled config.
- Resumable like `sweep run`: an interrupted repeat is retried with the same seeds (failures.py keeps the
  repeat attrs on a retry); a re-run enqueues only the (config, index) pairs that have no repeat yet.
- Several `sweep confirm` processes may share a study: each runs WAITING repeats until none is left. Two
  that enqueued the same pair at once train it once: the later trial of a pair stands down without
  training (FAIL `duplicate repeat of trial N`, no budget used).

Each confirmed config then has `value_mean`, `value_std`, `value_ci95` and `n_seeds` (harness.study.noise),
and `sweep best`, `expect:` and the reports use its mean.

`sweep audit STUDY|FILE --pruned K`: was the pruning right? The K most promising pruned trials
(ranking.most_promising: the highest standing among the trials that reached the step each was cut at) are
re-trained to the full budget, as trials of the same study:

- An audit is an enqueued trial with the pruned trial's params and seed (the sweep's data order) and user
  attr `audit_of` (its number); when the pruned trial kept its checkpoint (early_terminate.
  keep_pruned_checkpoints, saved at the eval that pruned it) the audit continues from it (`resume_from`,
  the retry's path), else it trains from step 0. It trains as the sweep's trials do, early stopping
  included, and like a repeat it is never pruned, never feeds the pruner and does not count toward
  `n_trials`. Unlike a repeat it competes in the ranking: it is the run the pruner cut short.
- The pruning regret (ranking.audit_summary): how many audits beat the best of the sweep's own trials, and
  by how much the best of them did; stored on the study (user attr `pruning_audit`) and in the report.
- Resumable and shareable like confirm: a re-run chooses the same K and enqueues only the unaudited ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from harness.core import attrs, trialdir
from harness.core.spec import Recipe
from harness.errors import ConfigError, HarnessError, TrialFailed
from harness.study import failures, noise, ranking, resume
from harness.study import storage as st
from harness.sweepfile.schema import SEED_LIMIT, SweepConfig

SEED_STRIDE = 1_000_003
"""Repeat k of a trial with seed s trains with seed s + SEED_STRIDE * k: never another trial's seed
(trials use sweep seed + trial number)."""
DUPLICATE = "duplicate repeat of trial"


class ConfirmError(HarnessError):
    """Nothing to confirm, or a study whose config cannot be rebuilt."""


@dataclass
class ConfirmOutcome:
    study: optuna.Study
    targets: list[int]
    added: int
    ran: int
    seconds: float
    recovered: list[int] = field(default_factory=list)


def repeat_seed(seed: int, index: int) -> int:
    return (seed + SEED_STRIDE * index) % SEED_LIMIT  # numpy takes seeds below 2**32


def targets(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The `top` best complete configs by their own single run (not by a mean: so the same K are chosen
    before and after repeats exist, and a re-run of confirm resumes the same work)."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and not noise.is_repeat(t)
    ]
    return sorted(complete, key=ranking.rank_key(study))[:top]


def settled(t: FrozenTrial) -> bool:
    """A repeat that is done, running, queued, or failed for a real reason (not retried again)."""
    if t.state != TrialState.FAIL:
        return True
    why = str(t.user_attrs.get(attrs.FAIL_REASON, failures.INTERRUPTED))
    return why != failures.INTERRUPTED and not why.startswith(DUPLICATE)


def owed(study: optuna.Study, chosen: list[FrozenTrial], seeds: int, sweep_seed: int) -> list[dict[str, Any]]:
    """The repeats still missing: user attrs of each one to enqueue."""
    trials = study.get_trials(deepcopy=False)
    out = []
    for t in chosen:
        have = {attrs.repeat_index(r) for r in trials if attrs.repeat_of(r) == t.number and settled(r)}
        seed = int(t.user_attrs.get(attrs.SEED, sweep_seed + t.number))
        for k in range(1, seeds + 1):
            if k not in have:
                out.append(
                    {
                        attrs.REPEAT_OF: t.number,
                        attrs.REPEAT_INDEX: k,
                        attrs.SEED: repeat_seed(seed, k),
                        attrs.DATA_SEED: sweep_seed + k,
                    }
                )
    return out


def waiting_reruns(study: optuna.Study) -> int:
    """Queued repeats and audits: what `sweep confirm` and `sweep audit` run until none is left."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return sum(failures.is_rerun(t) for t in waiting)


def rerun_key(stored: attrs.Source) -> tuple[Any, Any, Any]:
    """What a re-run re-runs: (config, repeat index) of a repeat, the pruned trial of an audit."""
    given = attrs.of(stored)
    return given.get(attrs.REPEAT_OF), given.get(attrs.REPEAT_INDEX), given.get(attrs.AUDIT_OF)


def duplicate_of(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """An earlier trial for the same re-run that is not an interrupted one: this one stands down."""
    key = rerun_key(trial.user_attrs)
    for t in study.get_trials(deepcopy=False):
        if t.number < trial.number and rerun_key(t) == key and settled(t):
            return t.number
    return None


def run_confirm(
    cfg: SweepConfig,
    top: int,
    seeds: int,
    *,
    url: str,
    recipe: Recipe | None = None,
    console: Console | None = None,
    test: bool = False,
) -> ConfirmOutcome:
    console = console or Console(highlight=False)
    if top < 1 or seeds < 1:
        raise ConfigError(f"--top {top} --seeds {seeds}: give 1 or more of each")
    start = time.perf_counter()
    study, recovered = _open(cfg, url, console)
    chosen = targets(study, top)
    if not chosen:
        raise ConfirmError(f"study {cfg.name!r} has no complete trial to confirm yet")
    to_add = owed(study, chosen, seeds, cfg.seed)
    params = {t.number: t.params for t in chosen}
    for repeat_attrs in to_add:
        number = repeat_attrs[attrs.REPEAT_OF]
        study.enqueue_trial(params[number], user_attrs=repeat_attrs, skip_if_exists=False)
    waiting = waiting_reruns(study)
    numbers = ", ".join(str(t.number) for t in chosen)
    console.print(
        f"[bold]{cfg.name}[/]: confirming trial(s) {numbers} with {seeds} more seed(s) each: "
        f"{len(to_add)} repeat(s) added, {waiting} to run" + (" (test split scored too)" if test else "")
    )
    ran = run_queued(cfg, study, waiting, recipe, console, recovered, test=test)
    return ConfirmOutcome(
        study, [t.number for t in chosen], len(to_add), ran, time.perf_counter() - start, recovered
    )


def _open(cfg: SweepConfig, url: str, console: Console) -> tuple[optuna.Study, list[int]]:
    """The study to add re-runs to (it must exist), its interrupted trials re-queued first."""
    from harness.study.run import quiet_libraries

    quiet_libraries()
    storage = st.open_storage(url)
    if cfg.name not in optuna.get_all_study_names(storage):
        raise ConfirmError(f"no study {cfg.name!r} in {st.mask_url(url)}: run `sweep run` first")
    study = resume.open_study(cfg, storage, url)
    recovered = failures.recover_interrupted(study)
    if recovered:
        console.print(
            f"{cfg.name}: trial(s) {', '.join(map(str, recovered))} were interrupted; retrying them"
        )
    return study, recovered


def run_queued(
    cfg: SweepConfig,
    study: optuna.Study,
    waiting: int,
    recipe: Recipe | None,
    console: Console,
    recovered: list[int],
    *,
    test: bool = False,
) -> int:
    """Train the queued repeats and audits until none is left (also those another process queued);
    returns how many this process ran. `recovered` gets the trials of dead workers beside us."""
    from harness.study.objective import Objective
    from harness.study.run import ProgressPrinter, real_recipe

    if not waiting:
        return 0
    if recipe is None:
        console.print(
            f"[bold]{cfg.name}[/]: loading base model and data ({cfg.model.name}, {cfg.dataset.source})"
        )
        recipe = real_recipe(cfg)
    if test:
        with_test = getattr(recipe, "with_test_split", None)
        if with_test is None:
            raise ConfirmError("--test: this recipe cannot score the test split")
        recipe = with_test()
    objective = Objective(cfg, recipe, progress=ProgressPrinter(cfg, console, first=0, total=waiting))

    def rerun(trial: optuna.Trial) -> float | tuple[float, ...]:
        # Optuna hands out the oldest waiting trial, which may be the retry of an interrupted sweep trial
        # queued before our re-runs: it is owed, and standing it down would lose it (and its checkpoint).
        if attrs.RETRY_OF in trial.user_attrs and not failures.is_rerun(trial.user_attrs):
            return objective(trial)
        # Another worker took the last re-run between our look and ask: stand down.
        if not failures.is_rerun(trial.user_attrs):
            trial.set_user_attr(attrs.FAIL_REASON, failures.SPARE)
            raise TrialFailed(failures.SPARE)
        dup = duplicate_of(study, trial)
        if dup is not None:
            trial.set_user_attr(attrs.FAIL_REASON, f"{DUPLICATE} {dup}")
            raise TrialFailed(f"{DUPLICATE} {dup}")
        return objective(trial)

    while waiting_reruns(study):
        study.optimize(rerun, n_trials=1, catch=(Exception,))
        recovered += failures.recover_interrupted(study)  # a worker beside us that died
    return objective.started


# ----------------------------------------------------------------------------------------------------
# `sweep audit STUDY --pruned K`: was the pruning right?


@dataclass
class AuditOutcome:
    study: optuna.Study
    targets: list[int]
    added: int
    ran: int
    seconds: float
    summary: ranking.AuditSummary
    recovered: list[int] = field(default_factory=list)


def audit_targets(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The K most promising pruned trials (ranking.most_promising), audited or not: so a re-run of the
    audit chooses the same K and resumes the same work, and `--pruned K+1` adds one."""
    return ranking.most_promising(study)[:k]


def kept_checkpoint(t: FrozenTrial) -> tuple[Path, int] | None:
    """The checkpoint a pruned trial kept (early_terminate.keep_pruned_checkpoints) and its step."""
    folder = attrs.trial_dir(t)
    found = trialdir.find_checkpoint(trialdir.checkpoint_dir(folder)) if folder else None
    return (trialdir.checkpoint_dir(folder), trialdir.checkpoint_step(found)) if folder and found else None


def audits_owed(study: optuna.Study, chosen: list[FrozenTrial], sweep_seed: int) -> list[dict[str, Any]]:
    """User attrs of each audit still missing: the pruned trial's seed (same data order: the sweep's) and,
    when it kept one, its checkpoint to continue from."""
    trials = study.get_trials(deepcopy=False)
    audited = {attrs.audit_of(t) for t in trials if attrs.audit_of(t) is not None and settled(t)}
    out = []
    for t in chosen:
        if t.number in audited:
            continue
        owed_attrs: dict[str, Any] = {
            attrs.AUDIT_OF: t.number,
            attrs.SEED: int(t.user_attrs.get(attrs.SEED, sweep_seed + t.number)),
        }
        kept = kept_checkpoint(t)
        if kept is not None:
            owed_attrs[attrs.RESUME_FROM] = str(kept[0])
        out.append(owed_attrs)
    return out


def run_audit(
    cfg: SweepConfig,
    pruned: int,
    *,
    url: str,
    recipe: Recipe | None = None,
    console: Console | None = None,
) -> AuditOutcome:
    """Re-train the `pruned` most promising pruned trials to the full budget, as trials of the study with
    user attr audit_of; they train as the sweep's trials do (early stopping included) and are never pruned.
    The regret (ranking.audit_summary) is stored on the study as user attr pruning_audit."""
    console = console or Console(highlight=False)
    if pruned < 1:
        raise ConfigError(f"--pruned {pruned}: give 1 or more")
    start = time.perf_counter()
    study, recovered = _open(cfg, url, console)
    chosen = audit_targets(study, pruned)
    if not chosen:
        raise ConfirmError(
            f"study {cfg.name!r} has no pruned trial to audit (its pruner: early_terminate.type "
            f"{cfg.early_terminate.type}); nothing was cut short, so pruning cost nothing here"
        )
    to_add = audits_owed(study, chosen, cfg.seed)
    params = {t.number: t.params for t in chosen}
    for audit_attrs in to_add:
        study.enqueue_trial(params[audit_attrs[attrs.AUDIT_OF]], user_attrs=audit_attrs, skip_if_exists=False)
    waiting = waiting_reruns(study)
    numbers = ", ".join(str(t.number) for t in chosen)
    console.print(
        f"[bold]{cfg.name}[/]: auditing pruned trial(s) {numbers} at the full budget: "
        f"{len(to_add)} audit(s) added, {waiting} to run"
    )
    for audit_attrs in to_add:
        t = next(c for c in chosen if c.number == audit_attrs[attrs.AUDIT_OF])
        kept = kept_checkpoint(t)
        how = (
            f"from its checkpoint at step {kept[1]}"
            if kept
            else "from step 0 (no checkpoint kept; early_terminate.keep_pruned_checkpoints keeps one)"
        )
        console.print(f"  trial {t.number} (pruned at step {attrs.steps_run(t)}): {how}")
    ran = run_queued(cfg, study, waiting, recipe, console, recovered)
    summary = ranking.audit_summary(study)
    study.set_user_attr(attrs.PRUNING_AUDIT, summary.to_json())
    seconds = time.perf_counter() - start
    return AuditOutcome(study, [t.number for t in chosen], len(to_add), ran, seconds, summary, recovered)


def config_for(
    target: str, results_dir: str, storage: str | None, verb: str = "confirm"
) -> tuple[SweepConfig, str]:
    """`sweep confirm|audit TARGET`: the config the study was run with (its stored config and search space,
    overrides included, so repeats train exactly as their originals did) and its storage URL."""
    from pydantic import ValidationError

    from harness.sweepfile.load import load_sweep

    url, name = st.locate(target, results_dir, storage)
    study = st.load_readonly(url, name)
    stored = study.user_attrs.get(attrs.CONFIG)
    path = Path(target)
    file_cfg = load_sweep(path, [f"results_dir={results_dir}"]) if path.suffix in (".yaml", ".yml") else None
    space = study.user_attrs.get(attrs.PARAMETERS)
    if space is None and file_cfg is not None:
        space = {k: v.model_dump(mode="json", exclude_none=True) for k, v in file_cfg.parameters.items()}
    if not isinstance(stored, dict) or space is None:
        raise ConfirmError(
            f"study {name!r} does not record its config and search space (made by an older harness or not "
            f"by `sweep run`): give its sweep file, `sweep {verb} sweeps/NAME.yaml`"
        )
    folder = st.study_folder(study, results_dir)
    data = {**stored, "parameters": space, "search_space": None, "storage": None}
    data["results_dir"] = str(folder.parent)
    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as e:
        raise ConfirmError(
            f"study {name!r}: its stored config does not validate: {e.errors()[0]['msg']}"
        ) from None
    if file_cfg is not None:
        cfg = cfg.model_copy(update={"source_path": file_cfg.source_path})
    return cfg, url
