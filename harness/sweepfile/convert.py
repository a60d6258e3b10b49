"""`sweep convert W&B.yaml -o sweep.yaml`: a harness sweep file from a W&B sweep file, as people write them.

One printed line per W&B parameter says what it became, or why it did not:
- names: the script's own argument names (harness.sweepfile.wandb.ALIASES: `lr`, `lora-r`, `batch_size`,
  `model.learning_rate`, ...) -> harness settings. A setting harness searches becomes a `parameters:`
  entry; a fixed one (max_seq_length, max_steps, seed) its section's key, when the sweep gives one value.
- values, where the meaning differs: optimizer names -> transformers' `optim` (adam -> adamw_torch),
  scheduler names -> `lr_scheduler_type`, warmup fractions -> `warmup_ratio` (warmup steps are no share of
  a trial: not mapped), YAML 1.1's `1e-5` strings -> numbers, a `log_uniform` whose bounds are plainly the
  values (a learning rate's 1e-5..1e-3: W&B would sample e^1e-5..e^1e-3, about 1.0) -> log_uniform_values.
- distributions Optuna has not, approximated and said so: normal/log_normal -> mu ± 2 sigma (95% of W&B's
  draws), a log scale over whole numbers -> powers of two, `probabilities` dropped.
- method (bayes -> tpe), metric (eval/loss, val_loss -> eval_loss; a metric harness's tasks do not report
  -> eval_loss, said so), run_cap -> budget.n_trials, early_terminate (hyperband's max_iter/s -> min_iter).
Every parameter not mapped stays in the output as a comment with its reason, and W&B's agent keys too.
model and dataset are harness's offline defaults, with a comment naming what the W&B sweep trained on. The
file is loaded (harness.sweepfile.load) before it is written, atomically; on any error nothing is written.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError, check_name
from harness.sweepfile import reader, trainers, translate, wandb
from harness.sweepfile.schema import (
    TUNABLE,
    BudgetConfig,
    DatasetConfig,
    ModelConfig,
    PrunerConfig,
    TrainingConfig,
)
from harness.sweepfile.space import parse_parameters

HARNESS_ONLY = frozenset({"search_space", "model", "dataset", "budget", "training", "task", "trainer"})
SECTIONS: dict[str, type[BaseModel]] = {
    "training": TrainingConfig,
    "budget": BudgetConfig,
    "model": ModelConfig,
}
DEFAULTS = {"model.name": ModelConfig().name, "dataset.source": DatasetConfig().source}


@dataclass
class Conversion:
    text: str
    """The harness sweep file."""
    lines: list[str] = field(default_factory=list)
    """One per W&B parameter (mapped to what, or not and why), then method, metric, budget, pruning."""
    mapped: dict[str, str] = field(default_factory=dict)
    """W&B parameter -> the harness setting it became."""
    unmapped: dict[str, str] = field(default_factory=dict)
    """W&B parameter -> why it was not mapped (kept as a comment in `text`)."""


def convert_file(src: Path, out: Path, force: bool = False) -> Conversion:
    """Read a W&B sweep file and write its harness version to `out`: atomically, and only if it loads."""
    if out.is_dir():
        raise ConfigError(f"-o {out} is a folder; give a file name, e.g. {out / 'sweep.yaml'}")
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise ConfigError(f"-o {out} is the W&B file itself; write the harness file elsewhere")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; give --force to overwrite it, or another -o file")
    if not out.parent.is_dir():
        raise ConfigError(f"-o {out}: folder {out.parent} does not exist")
    result = convert(reader.read(src, "W&B sweep file"), str(src), out)
    _write_loaded(result.text, out, force)
    return result


def convert(data: Any, source: str, out: Path) -> Conversion:
    """A W&B sweep (parsed YAML) -> the harness sweep file's text, and what was mapped."""
    if isinstance(data, dict) and set(data) & HARNESS_ONLY:
        keys = ", ".join(f"{k}:" for k in sorted(set(data) & HARNESS_ONLY))
        raise ConfigError(f"{source}: already a harness sweep file ({keys}); run it with `sweep run`")
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict) or not data["parameters"]:
        raise ConfigError(
            f"{source}: not a W&B sweep file: a W&B sweep lists what it searches under a top-level "
            "`parameters:` mapping, and this file has none"
        )
    params = translate.flatten(data["parameters"])
    dpo = any(wandb.lookup(n) == "loss_type" or wandb.normalize(n).startswith("dpo") for n, _ in params)
    c = _Converter("dpo" if dpo else "sft")
    c.parameters(params)
    return Conversion(c.render(data, source, out), c.lines, c.mapped, c.unmapped)


class _Converter:
    def __init__(self, trainer: str) -> None:
        self.trainer = trainer
        self.lines: list[str] = []
        self.mapped: dict[str, str] = {}
        self.unmapped: dict[str, str] = {}
        self.bodies: dict[str, dict[str, Any]] = {}  # harness parameter -> its entry
        self.fixed: dict[str, Any] = {}  # "budget.max_steps", "training.max_seq_length", "seed" -> value
        self.source_of: dict[str, str] = {}  # harness setting -> the W&B name it came from
        self.trained_on: list[str] = []  # the W&B sweep's model and data, for a comment
        self.originals: dict[str, Any] = {}

    def parameters(self, params: list[tuple[str, Any]]) -> None:
        targets = {n: wandb.lookup(n) for n, _ in params}
        self.originals = dict(params)
        # Two names for one setting (lr and learning_rate; batch_size and micro_batch_size): the one
        # earliest in ALIASES wins (harness's own name, then the more specific ones).
        owner: dict[str, str] = {}
        for n in sorted(targets, key=lambda n: translate.rank(n, targets[n])):
            if targets[n] is not None:
                owner.setdefault(str(targets[n]), n)
        said: dict[str, str] = {}
        # max_steps first: an eval_steps is checked against it.
        for name in sorted(targets, key=lambda n: targets[n] != "budget.max_steps"):
            target = targets[name]
            try:
                if target is None:
                    raise translate.Unmapped(translate.no_setting(name))
                if owner[target] != name:
                    raise translate.Unmapped(
                        f"{translate.setting_of(target)} is mapped from {owner[target]} already"
                    )
                said[name] = self._map(name, target, self.originals[name])
            except translate.Unmapped as why:
                self.unmapped[name] = str(why)
                said[name] = f"not mapped: {why}"
        if {"lora_alpha", "lora_alpha_multiple"} <= set(self.bodies):  # one alpha form: the absolute one
            wb = self.source_of["lora_alpha_multiple"]
            del self.bodies["lora_alpha_multiple"], self.mapped[wb]
            self.unmapped[wb] = (
                f"lora_alpha is given too (from {self.source_of['lora_alpha']}): one alpha form"
            )
            said[wb] = f"not mapped: {self.unmapped[wb]}"
        width = max(len(n) for n in said)
        self.lines += [f"  {n:<{width}} -> {said[n]}" for n in self.originals]
        self.unmapped = {n: self.unmapped[n] for n in self.originals if n in self.unmapped}

    def _map(self, name: str, target: str, raw: Any) -> str:
        setting = translate.setting_of(target)
        if setting in TUNABLE:
            body, notes = translate.read_entry(raw, setting)
            body = translate.rename_values(body, setting, notes)
            notes += [n for n in [translate.generic(name, setting)] if n]
            only = trainers.ONLY_FOR.get(setting)
            if only and self.trainer not in only:
                raise translate.Unmapped(
                    f"only trainer {' or '.join(only)} reads {setting}; this file is for {self.trainer}"
                )
            try:
                parse_parameters({setting: body}, "W&B")
            except ConfigError as e:
                raise translate.Unmapped(translate.problem_of(str(e), setting)) from None
            self.bodies[setting] = body
            self.mapped[name], self.source_of[setting] = setting, name
            return f"{setting}: {translate.describe(body)}" + (f" ({'; '.join(notes)})" if notes else "")
        value = translate.one_value(raw)
        if target in DEFAULTS:
            shown = value if value is not None else translate.flow(raw)
            self.trained_on.append(f"{name} {shown}")
            raise translate.Unmapped(
                f"{target} stays {DEFAULTS[target]} so this file runs offline; yours: {shown}"
            )
        if target == "epochs":
            if "epochs" not in BudgetConfig.model_fields:
                raise translate.Unmapped(
                    "harness budgets a trial in optimizer steps (budget.max_steps), not epochs"
                )
            target = "budget.epochs"
        if value is None:
            if target == "seed":
                raise translate.Unmapped(
                    "harness repeats configs with other seeds in `sweep confirm`: set seed: once"
                )
            raise translate.Unmapped(
                f"{target} is one setting for every trial (pruning ends weak trials): give one value"
            )
        problem = self._fixed_problem(target, value)
        if problem:
            raise translate.Unmapped(problem)
        self.fixed[target] = value
        self.mapped[name] = target
        self.source_of[target] = name
        return f"{target}: {translate.flow(value)}"

    def _fixed_problem(self, target: str, value: Any) -> str | None:
        if target == "seed":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            return None if ok else f"seed {value!r} is not a whole number >= 0"
        section, key = target.split(".", 1)
        try:
            SECTIONS[section].model_validate({key: value})
        except ValidationError as e:
            return f"{value!r} is not a valid {target}: {e.errors()[0]['msg']}"
        steps = self.fixed.get("budget.max_steps", BudgetConfig().max_steps)
        if target == "budget.eval_steps" and "budget.epochs" not in self.fixed and value > steps:
            return f"an eval every {value} steps never comes in a trial of budget.max_steps {steps}"
        return None

    def render(self, data: dict[str, Any], source: str, out: Path) -> str:
        w = translate.Writer()
        w.comment(f"A harness sweep file, written by `sweep convert` from the W&B sweep {source}.")
        w.comment(f"Check it, then run it: sweep run {out} --collect-only")
        names = [data.get("name"), out.stem, "wandb-sweep"]
        w.key("name", next(n for n in names if isinstance(n, str) and _valid_name(n)))
        text = data.get("description")
        w.key("description", " ".join(text.split()) if isinstance(text, str) else f"converted from {source}")
        w.key("task", "pricer")
        if self.trainer != "sft":
            w.key("trainer", self.trainer, "the W&B sweep tunes DPO's settings")
        w.blank()
        w.comment(
            "The base model and data are harness's offline defaults, so this file runs as it is. Point them "
            "at your own: model.name (a hub id or a folder), dataset.source (a .jsonl, .csv or .parquet "
            "file, or a hub id; `task: text` scores free-text answers)."
        )
        if self.trained_on:
            w.comment("The W&B sweep trained on: " + "; ".join(self.trained_on))
        self._fixed_section(w, "model", {"name": DEFAULTS["model.name"]})
        w.section("dataset", {"source": DEFAULTS["dataset.source"]})
        w.blank()
        self._method(w, data.get("method"))
        self._metric(w, data.get("metric"))
        self._budget(w, data.get("run_cap"))
        self._terminate(w, data.get("early_terminate"))
        if any(k.startswith("training.") for k in self.fixed):
            self._fixed_section(w, "training", {})
        if "seed" in self.fixed:
            w.key("seed", self.fixed["seed"], f"W&B: {self.source_of['seed']}")
        w.blank()
        w.raw("parameters:")
        for setting, body in self.bodies.items():
            w.raw(f"  {setting}: {translate.flow(body)}  # W&B: {self.source_of[setting]}")
        if not self.bodies:  # nothing mapped: a file that loads, with a constant to start from
            w.raw(f"  r: {{value: {TrainingConfig().r}}}  # nothing of the W&B sweep maps; see below")
        if self.unmapped:
            w.blank()
            w.comment(
                "Not mapped from the W&B sweep (kept here so nothing is lost; each says why). harness tunes: "
                + ", ".join(TUNABLE)
            )
            for wb, why in self.unmapped.items():
                w.comment(f"{wb}: {translate.flow(self.originals[wb])}")
                w.comment(why, indent="    ")
        agent = {k: data[k] for k in wandb.IGNORED if k in data}
        if agent:
            w.blank()
            w.comment("W&B's agent keys (harness runs each trial itself):")
            for k, v in agent.items():
                w.comment(f"{k}: {translate.flow(v)}")
            if {"project", "entity"} & set(agent):
                w.comment("To log each trial to W&B: tracking: {backend: wandb, project: ..., entity: ...}")
        return w.text()

    def _fixed_section(self, w: translate.Writer, section: str, values: dict[str, Any]) -> None:
        keys = [k for k in self.fixed if k.startswith(section + ".")]
        notes: dict[str, str | None] = {k.split(".", 1)[1]: f"W&B: {self.source_of[k]}" for k in keys}
        w.section(section, {**values, **{k.split(".", 1)[1]: self.fixed[k] for k in keys}}, notes)

    def _method(self, w: translate.Writer, method: Any) -> None:
        new = {"bayes": "tpe", "random": "random", "grid": "grid"}.get(str(method), "tpe")
        why = {"bayes": "TPE, Optuna's Bayesian sampler"}.get(str(method), "")
        if new == "grid" and not all(translate.enumerable(b) for b in self.bodies.values()):
            new, why = "tpe", "a grid cannot enumerate the continuous ranges"
        self.lines.append(f"  method: {method} -> {new}" + (f" ({why})" if why else ""))
        w.key("method", new, f"W&B: {method}" if method != new else None)

    def _metric(self, w: translate.Writer, metric: Any) -> None:
        name = metric.get("name") if isinstance(metric, dict) else None
        goal = metric.get("goal", "minimize") if isinstance(metric, dict) else "minimize"
        new, new_goal, why = translate.read_metric(name, goal, self.trainer)
        self.lines.append(f"  metric: {name} ({goal}) -> {new} ({new_goal})" + (f": {why}" if why else ""))
        w.section(
            "metric",
            {"name": new, "goal": new_goal},
            {"name": f"W&B: {name}" if name not in (new, None) else None},
        )

    def _budget(self, w: translate.Writer, cap: Any) -> None:
        budget: dict[str, Any] = {}
        notes: dict[str, str | None] = {}
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            budget["n_trials"], notes["n_trials"] = cap, "W&B: run_cap"
            self.lines.append(f"  run_cap: {cap} -> budget.n_trials: {cap}")
        else:
            budget["n_trials"] = BudgetConfig().n_trials
            notes["n_trials"] = "the W&B sweep has no run_cap: set how many trials to run"
            self.lines.append(
                f"  run_cap: none -> budget.n_trials: {budget['n_trials']} (set how many trials)"
            )
        fixed = {k.split(".", 1)[1]: k for k in self.fixed if k.startswith("budget.")}
        if "epochs" not in fixed:
            budget["max_steps"] = self.fixed.get("budget.max_steps", BudgetConfig().max_steps)
            notes["max_steps"] = "optimizer steps per trial (harness budgets in steps, not epochs)"
        for key, path in fixed.items():
            budget[key], notes[key] = self.fixed[path], f"W&B: {self.source_of[path]}"
        budget.setdefault("eval_steps", BudgetConfig().eval_steps)
        w.section("budget", budget, notes)

    def _evals(self) -> int | None:
        """Evals in a trial of the written budget (None for an epochs budget: it depends on the data)."""
        if "budget.epochs" in self.fixed:
            return None
        steps = self.fixed.get("budget.max_steps", BudgetConfig().max_steps)
        return steps // self.fixed.get("budget.eval_steps", BudgetConfig().eval_steps)

    def _terminate(self, w: translate.Writer, terminate: Any) -> None:
        if isinstance(terminate, dict) and terminate.get("type") == "hyperband":
            et, note = wandb.hyperband(terminate)
            keep: dict[str, Any] = {k: et[k] for k in ("type", "min_iter", "eta") if k in et}
            try:
                PrunerConfig.model_validate(keep)
            except ValidationError as e:
                why = e.errors()[0]
                where = ".".join(map(str, why["loc"]))
                self.lines.append(
                    f"  early_terminate: not mapped: {where}: {why['msg']} (harness's default pruner)"
                )
                return
            said = [note.split(": ", 1)[1]] if note else []
            evals = self._evals()
            first = keep.get("min_iter", 1)
            if evals and isinstance(first, int) and first > evals:
                said.append(f"a trial has {evals} evals, so no rung at {first} ever prunes: lower min_iter")
            self.lines.append(
                f"  early_terminate: hyperband -> {translate.flow(keep)}"
                + (f" ({'; '.join(said)})" if said else "")
            )
            w.section("early_terminate", keep, {"min_iter": "in evals (one every budget.eval_steps steps)"})
        else:
            self.lines.append(
                "  early_terminate: none -> harness's default pruner, successive halving (early_terminate: "
                "{type: none} trains every trial to its end)"
            )


def _valid_name(name: str) -> bool:
    try:
        check_name(name)
    except ConfigError:
        return False
    return True


def _write_loaded(text: str, out: Path, force: bool) -> None:
    """Write beside `out`, load it as `sweep run` would (the schema, the space), then rename into place."""
    from harness.sweepfile.load import load_sweep

    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            load_sweep(tmp)
        except ConfigError as e:
            shown = str(e).replace(tmp, str(out))
            raise ConfigError(f"the converted file does not load, so nothing was written:\n{shown}") from None
        if out.exists() and not force:
            raise ConfigError(f"{out} appeared while converting; give --force to overwrite it")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
