"""`sweep best` and `sweep train`: from a study's winner to one full fine-tune, evaluated on the test split.

`sweep best STUDY --export best.yaml` writes the study's own config (stored in the study when it was
created) with the best trial's settings in `training:` and a search space of constants, so the file is
both a valid sweep file and a plain training config. `sweep train best.yaml` runs it once with the
longer `train:` budget, saves the adapter (safetensors) and scores it on the held-out test split.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import optuna
import yaml
from optuna.trial import FrozenTrial
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from harness import tasks
from harness.core import attrs, trialdir
from harness.core.cost import TrialCost, hours_text
from harness.core.spec import TrialResult, TrialSpec
from harness.errors import ConfigError, HarnessError, problems_error
from harness.study import ranking
from harness.study import storage as st
from harness.study.objective import trial_cost
from harness.sweepfile.load import load_sweep
from harness.sweepfile.schema import SweepConfig
from harness.trial import monitor

# promote(spec, adapter_dir) -> result whose metrics include test_<name> for the test split.
Promoter = Callable[[TrialSpec, Path], TrialResult]


# ----------------------------------------------------------------------------------------------------
# sweep best


def best_trial(study: optuna.Study) -> FrozenTrial:
    best = ranking.best_trial(study)
    if best is None:
        raise HarnessError(
            f"study {study.study_name!r} has no complete trial yet: nothing to export or train"
        )
    return best


def stored_config(study: optuna.Study) -> dict[str, Any]:
    config = study.user_attrs.get(attrs.CONFIG)
    if not isinstance(config, dict):
        raise HarnessError(
            f"study {study.study_name!r} has no stored sweep config (it was not created by `sweep run`), "
            "so there is nothing to export"
        )
    return copy.deepcopy(config)


def export_config(study: optuna.Study, best: FrozenTrial) -> dict[str, Any]:
    """The stored config with the best trial's training settings and a constant search space.

    `training:` is what the trial actually trained with (TrialSpec.build applies the sampled params, so
    lora_alpha_multiple becomes lora_alpha = multiple * r exactly as in the sweep)."""
    data = stored_config(study)
    try:
        base = SweepConfig.model_validate({k: v for k, v in data.items() if k != "parameters"})
    except ValidationError as e:  # a study made by an older harness whose config no longer validates
        raise HarnessError(
            f"study {study.study_name!r}: its stored config does not validate with this harness: "
            f"{e.errors()[0]['loc']}: {e.errors()[0]['msg']}"
        ) from None
    spec = TrialSpec.build(base, dict(best.params), number=best.number, output_dir=Path("."))
    data["training"] = spec.training.model_dump(mode="json")
    data["parameters"] = {name: {"value": value} for name, value in best.params.items()}
    data["search_space"] = None  # the constants above are the whole space; a relative path would break here
    data["name"] = f"{study.study_name}-best"  # its own study/folder: never resumes into the original
    data["description"] = f"best trial {best.number} of study {study.study_name!r}" + (
        f": {data.get('description')}" if data.get("description") else ""
    )
    data["budget"] = {**data.get("budget", {}), "n_trials": 1}  # `sweep run` on it trains it once
    return data


def write_export(path: Path, data: dict[str, Any], header: str) -> None:
    """Write, then load it back with load_sweep: an exported file that does not validate is our bug."""
    text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    trialdir.atomic_write_text(path, text)
    try:
        load_sweep(path)
    except ConfigError as e:
        raise AssertionError(f"exported config {path} does not validate: {e}") from None


def export_header(study: optuna.Study, best: FrozenTrial, metric: str) -> str:
    return (
        f"# Best trial {best.number} of study {study.study_name!r}: "
        f"{metric} = {_value_text(study, best)}\n"
        "# Exported by `sweep best --export`. `sweep train` on this file runs one full fine-tune with the\n"
        "# `train:` budget; `parameters:` holds the same values as constants, so it is also a sweep file.\n"
    )


def _value_text(study: optuna.Study, best: FrozenTrial) -> str:
    stats = ranking.confirmed(study, best)
    if stats is None:
        return f"{ranking.primary_value(best):.6g}"
    return f"{stats.mean:.6g} ± {stats.ci95:.3g} (confirmed mean of {stats.n} seeds, 95% interval)"


def print_best(study: optuna.Study, best: FrozenTrial, metric: str, folder: Path, console: Console) -> None:
    table = Table(
        title=f"{study.study_name}: best trial {best.number}", title_justify="left", show_header=False
    )
    table.add_column("key")
    table.add_column("value")
    stats = ranking.confirmed(study, best)
    if stats is not None:  # the winner was chosen by its mean over seeds (harness.study.confirm): say so
        table.title = (
            f"{study.study_name}: best config, trial {best.number} (confirmed mean over {stats.n} seeds)"
        )
        table.add_row(f"{metric} mean ± ci95", f"{stats.mean:.6g} ± {stats.ci95:.3g} (n={stats.n})")
        table.add_row(f"{metric} std", f"{stats.std:.3g}")
        table.add_row(f"{metric} (trial {best.number}'s own run)", f"{ranking.primary_value(best):.6g}")
    else:
        table.add_row(metric, f"{ranking.primary_value(best):.6g}")
    for name, value in best.params.items():
        table.add_row(name, _fmt(value))
    for name, value in attrs.metrics(best).items():
        if name != metric:
            table.add_row(name, _fmt(value))
    for key in (attrs.BEST_STEP, attrs.STEPS_RUN, attrs.DURATION_S, attrs.PEAK_RSS_MB):
        if best.user_attrs.get(key) is not None:
            table.add_row(key, _fmt(best.user_attrs[key]))
    table.add_row("folder", str(trialdir.trial_dir(folder, best.number)))
    console.print(table)


class Winner(NamedTuple):
    """`sweep best STUDY`: the study (opened read-only), its best trial, its metric and results folder."""

    study: optuna.Study
    trial: FrozenTrial
    metric: str
    folder: Path


def find_best(target: str, results_dir: str, storage: str | None) -> Winner:
    study = st.load(target, results_dir, storage)
    metric = attrs.metric(study) or "value"
    return Winner(study, best_trial(study), metric, st.study_folder(study, results_dir))


def export_best(winner: Winner, path: Path) -> None:
    """`sweep best --export FILE`: the winner as a sweep file that `sweep train` runs once."""
    header = export_header(winner.study, winner.trial, winner.metric)
    write_export(path, export_config(winner.study, winner.trial), header)


# ----------------------------------------------------------------------------------------------------
# sweep train


def fixed_params(cfg: SweepConfig) -> dict[str, Any]:
    """A promotion trains one configuration: every parameter must be a single value."""
    fixed = {name: _single_value(spec) for name, spec in cfg.parameters.items()}
    open_ = [name for name, value in fixed.items() if value is _RANGE]
    if open_:
        raise ConfigError(
            f"{cfg.source_path or 'sweep file'}: `sweep train` trains one configuration, but "
            f"{', '.join(open_)} {'is' if len(open_) == 1 else 'are'} still a search range; export the "
            "winner with `sweep best STUDY --export best.yaml`, or fix values with overrides such as "
            f"parameters.{open_[0]}=<value>"
        )
    return fixed


_RANGE = object()


def _single_value(spec: Any) -> Any:
    """`value: x` and `values: [x]` fix a parameter; anything else is still a range."""
    if spec.kind == "constant":
        return spec.value
    if spec.kind == "categorical" and len(spec.values) == 1:
        return spec.values[0]
    return _RANGE


def promotion_spec(cfg: SweepConfig) -> TrialSpec:
    """The sweep's config with the `train:` budget in place of the per-trial one, as trial -1."""
    budget = cfg.budget.model_copy(
        update={"max_steps": cfg.train.max_steps, "eval_steps": cfg.train.eval_steps, "epochs": None}
    )
    full = cfg.model_copy(update={"budget": budget})
    out = Path(cfg.train.output_dir) if cfg.train.output_dir else cfg.study_dir / "promoted"
    return TrialSpec.build(full, fixed_params(cfg), number=-1, output_dir=out)


def real_promoter(cfg: SweepConfig) -> Promoter:
    from harness.trial import session
    from harness.trial.recipe import finetune

    needed = {"save_adapter_to", "test_rows"}
    missing = needed - set(inspect.signature(finetune).parameters)
    if missing:  # checked before the base model is loaded: fail in a second, not after an hour of training
        raise HarnessError(
            "`sweep train` needs harness.trial.recipe.finetune(..., save_adapter_to=, test_rows=), "
            "which this "
            f"version lacks ({', '.join(sorted(missing))}); update harness"
        )
    shared = session.get(cfg)

    def run(spec: TrialSpec, adapter_dir: Path) -> TrialResult:
        return finetune(spec, shared, None, save_adapter_to=adapter_dir, test_rows=shared.test_rows)

    return run


def promote(cfg: SweepConfig, console: Console, promoter: Promoter | None = None) -> tuple[TrialResult, Path]:
    found = tasks.check(cfg)  # what only the tasks know (reward functions, baseline names): nothing written
    if found:
        raise problems_error(cfg.source_path or cfg.name, found)
    spec = promotion_spec(cfg)
    adapter_dir = trialdir.adapter_dir(spec.output_dir)
    console.print(
        f"[bold]{cfg.name}[/]: one fine-tune of {spec.sweep.budget.max_steps} steps "
        f"(eval every {spec.sweep.budget.eval_steps}) -> {spec.output_dir}"
    )
    from harness.study.run import quiet_libraries

    quiet_libraries()  # the same quiet output as `sweep run`
    if promoter is None:
        promoter = real_promoter(cfg)
    trialdir.write_params(spec)
    usage = monitor.ResourceMonitor().start()
    started = time.perf_counter()
    try:
        result = promoter(spec, adapter_dir)
    finally:
        resources = usage.stop()
    spent = trial_cost(started, result, {}, resources)  # as a trial's record (harness.core.cost)
    state = "COMPLETE" if result.value is not None else "FAIL"
    trialdir.write_result(spec, result, state, resources, spent.to_dict())
    console.print(f"{cfg.name}: {cost_text(spent)}", markup=False, soft_wrap=True)
    return result, adapter_dir


def cost_text(c: TrialCost) -> str:
    """`cost: 0.0012 device-hours (4.4 device-s), 200 steps, 51200 tokens, peak memory 900 MB`."""
    parts = [f"cost: {hours_text(c.device_s)}", f"{c.steps} steps"]
    parts += [f"{c.tokens} tokens"] if c.tokens is not None else []
    parts += [f"peak memory {c.peak_memory_mb:.0f} MB"] if c.peak_memory_mb is not None else []
    return ", ".join(parts)


def metrics_table(result: TrialResult, metric: str) -> Table:
    """Validation (the best eval's) next to test, one row per metric name."""
    test = {k.removeprefix("test_"): v for k, v in result.metrics.items() if k.startswith("test_")}
    validation = {k: v for k, v in result.metrics.items() if not k.startswith("test_")}
    table = Table(title=f"metrics (objective {metric})", title_justify="left")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    table.add_column("test", justify="right")
    for name in dict.fromkeys([*validation, *test]):
        table.add_row(name, _fmt(validation.get(name, "-")), _fmt(test.get(name, "-")))
    return table


def trained_line(cfg: SweepConfig, result: TrialResult, adapter_dir: Path) -> str:
    """The last line `sweep train` prints: the best value, where it was reached, where the files are."""
    return (
        f"best {cfg.metric.name} {_fmt(result.value)} at step {result.best_step}/{result.steps_run} in "
        f"{result.duration_s:.0f}s; adapter in {adapter_dir}, "
        f"metrics in {adapter_dir.parent / 'metrics.json'}"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "-" if v is None else str(v)
