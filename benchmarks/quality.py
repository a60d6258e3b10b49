"""P3 (`make bench-quality`): how much sooner does harness find a good config than the tools a user would
use instead? Time and train steps until a method's running best is within 2% of the best value found.

The problem is the default sweep file (pricer task, builtin base, search_spaces/qlora-tiny.yaml, max_steps
300, an eval every 50 steps on the same 128 validation rows, objective eval_loss). Each method runs it
with the same sweep seed and the same budget of train steps:

- `harness`: as shipped: TPE, the sweep file's pruner (successive halving), early stopping (patience 2), a
  trial's value = its best eval (`run_sweep`, the base loaded once).
- `harness-hyperband`, `harness-median`: the same with the other pruners (median with the settings the sweep
  file shipped before successive halving measured faster: 3 start-up trials, no pruning before the 2nd eval).
- `harness-auto`: the sweep file with `early_terminate.min_iter: auto` (no pruning until 4 trials finished,
  then the first rung is the earliest eval whose rank agreement with the final value reaches rho 0.7).
- `hf`: `Trainer(model_init=...).hyperparameter_search(backend="optuna")` as HF's docs show it: model_init
  loads the 4-bit base and wraps a new LoRA adapter every trial; hp_space suggests the same search space
  (harness's own `search_space.suggest`, resolved by `TrialSpec.build`, so the values mean the same); the
  value is the last eval (HF's default `compute_objective`). The study is Optuna's default: TPE (given the
  sweep seed so runs repeat) and Optuna's default MedianPruner (5 startup trials, no warmup), which HF's
  `_report_to_hp_search` consults at every eval: HF as shipped does prune, so it is measured that way.
- `random`: W&B `method: random` with no `early_terminate`: harness's engine (no model reloads, which only
  favours this baseline), `method=random`, no pruner, no early stopping, and the last eval as the value
  (a W&B run's summary metric is its last logged value, and the run hands over its final model).
- `grid`: Axolotl's `--sweep`: the cartesian product of a reduced grid (learning_rate 1e-3/2.5e-3/6e-3 x
  r 4/16; everything else at the sweep file's training defaults), one full run each, last eval as the
  value; harness's engine with `method=grid` (the points in an order shuffled by the seed).

Budget: BUDGET_TRIALS x max_steps train steps per method (pruned trials count the steps they ran); a method
with pruning runs more trials inside it, the grid stops when its points run out. 5 x 300 = 1,500 steps:
6 methods x 3 seeds = 18 runs, two at a time (one torch thread each), took 47-48 minutes on an idle
2-core machine (5,352-5,540 CPU-seconds of runs; the grid's batch-16 trials are a fifth of it); a loaded
machine takes longer, and BENCH_QUALITY_* below run a reduced version.

The common measure: the eval_loss (token-weighted mean NLL over the completion tokens of the same 128
validation rows, tokenized by trial.prepare.tokenize_rows on both sides) of the adapter the method hands
the user. harness keeps each trial's best-eval adapter (best-adapter/), so its value is its best eval; HF,
W&B and Axolotl hand over the final model, so theirs is the last eval. HF's eval runs the 128 rows as one
batch, so its eval_loss is that same token-weighted mean. A pruned trial hands over nothing (no tool offers
one as its best), so it never counts as found. Generation metrics are off for every method (the objective
is eval_loss; generating would add the same reporting time to the harness methods only).

Near-best: per seed, `best` = the lowest value any method found; a method gets there at the end of its
first trial whose value is <= best x 1.02. Time: wall seconds from the method's start (model load and
tokenization included) to that trial's end. Steps: train steps the method had run by then. A method that
never gets there is charged its whole run, shown with `>`. Ratios are per seed (baseline time / harness
time), the median over seeds is printed with its target.

Reduced runs (for a quick look, not the figures): BENCH_QUALITY_SEEDS, BENCH_QUALITY_TRIALS,
BENCH_QUALITY_MAX_STEPS (eval_steps = max_steps / 6), BENCH_QUALITY_JOBS, BENCH_QUALITY_METHODS (comma list).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    ROOT,
    load_avg,
    machine_facts,
    result_line,
    setup_torch,
    sweep_config,
    write_json,
)

TOLERANCE = 0.02
METHODS = ["harness", "hf", "random", "grid", "harness-hyperband", "harness-median", "harness-auto"]
TARGETS = {"hf": 2.0, "random": 1.5}  # baseline time / harness time, median over seeds
# harness with each pruner: the sweep file as shipped, then the others as extra rows.
PRUNER_ROWS: dict[str, list[str]] = {
    "harness": [],
    "harness-hyperband": ["early_terminate.type=hyperband"],
    "harness-median": [
        "early_terminate.type=median",
        "early_terminate.n_startup_trials=3",
        "early_terminate.n_warmup_steps=2",
    ],
    "harness-auto": ["early_terminate.min_iter=auto"],
}
GRID = [
    "parameters.learning_rate={values: [1.0e-3, 2.5e-3, 6.0e-3]}",
    "parameters.r={values: [4, 16]}",
]
SEED0 = 42  # the sweep file's seed; seed i of the benchmark is SEED0 + i
OUT = ROOT / "benchmarks" / "last-quality.json"


@dataclass(frozen=True)
class Settings:
    seeds: int = 3
    trials: int = 5  # the budget: trials x max_steps train steps per method
    max_steps: int = 300
    eval_steps: int = 50
    jobs: int = 2
    methods: tuple[str, ...] = tuple(METHODS)

    @property
    def budget_steps(self) -> int:
        return self.trials * self.max_steps

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        max_steps = int(env.get("BENCH_QUALITY_MAX_STEPS", cls.max_steps))
        eval_steps = cls.eval_steps if max_steps == cls.max_steps else max(1, max_steps // 6)
        methods = env.get("BENCH_QUALITY_METHODS")
        return cls(
            seeds=int(env.get("BENCH_QUALITY_SEEDS", cls.seeds)),
            trials=int(env.get("BENCH_QUALITY_TRIALS", cls.trials)),
            max_steps=max_steps,
            eval_steps=eval_steps,
            jobs=int(env.get("BENCH_QUALITY_JOBS", cls.jobs)),
            methods=tuple(m.strip() for m in methods.split(",")) if methods else tuple(METHODS),
        )


# ----------------------------------------------------------------------------------------------------
# One method on one seed (a child process each): -> trace {"method", "seed", "wall", "trials": [...]}


def method_config(results: str, method: str, seed: int, s: Settings) -> Any:
    common = [
        f"name=q-{method}-{seed}",
        f"seed={seed}",
        f"budget.max_steps={s.max_steps}",
        f"budget.eval_steps={s.eval_steps}",
        f"budget.n_trials={s.trials * 8}",  # the step budget (StepBudget) ends the run, not n_trials
        "evaluation.samples=0",
    ]
    if method in PRUNER_ROWS:
        return sweep_config(results, *common, *PRUNER_ROWS[method])
    plain = ["early_terminate.type=none", "early_stopping.patience=0"]
    if method == "random":
        return sweep_config(results, *common, *plain, "method=random")
    if method == "grid":
        return sweep_config(results, *common, *plain, "method=grid", "search_space=null", *GRID)
    if method == "hf":  # its data, eval rows and search space; run by run_hf
        return sweep_config(results, *common)
    raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")


class StepBudget:
    """Optuna callback: stop the study once its trials have run `budget` train steps."""

    def __init__(self, budget: int) -> None:
        self.budget, self.spent = budget, 0

    def __call__(self, study: Any, trial: Any) -> None:
        from harness.core import attrs

        self.spent += attrs.steps_run(trial) or 0
        if self.spent >= self.budget:
            study.stop()


def last_eval(folder: Path, metric: str) -> float | None:
    """The trial's last eval of `metric` (metrics.json history): what a tool without best-eval hands over."""
    try:
        history = json.loads((folder / "metrics.json").read_text()).get("history") or []
    except (OSError, ValueError):
        return None
    values = [h[metric] for h in history if h.get(metric) is not None]
    return float(values[-1]) if values else None


def run_harness(method: str, seed: int, s: Settings, results: str) -> dict[str, Any]:
    from rich.console import Console

    from harness.core import agreement, attrs, trialdir
    from harness.study.run import run_sweep
    from harness.trial import cache

    cfg = method_config(results, method, seed, s)
    cache.clear_session()  # nothing loaded: the base model load and tokenization are on the clock
    start = dt.datetime.now()
    t0 = time.perf_counter()
    outcome = run_sweep(cfg, console=Console(file=io.StringIO()), callbacks=[StepBudget(s.budget_steps)])
    wall = time.perf_counter() - t0
    best_eval = method in PRUNER_ROWS
    trials = []
    for t in outcome.study.trials:
        if t.datetime_complete is None:
            continue
        value = None
        if t.state.name == "COMPLETE":
            folder = trialdir.trial_dir(cfg.study_dir, t.number)
            value = t.value if best_eval else last_eval(folder, cfg.metric.name)
        trials.append(
            {
                "t": (t.datetime_complete - start).total_seconds(),
                "steps": attrs.steps_run(t) or 0,
                "state": t.state.name,
                "value": value,
                "params": t.params,
            }
        )
    done = [t for t in outcome.study.trials if t.state.name == "COMPLETE" and t.intermediate_values]
    rungs = [(r.step, r.rho, r.n) for r in agreement.by_step((t.intermediate_values, t.value) for t in done)]
    return {
        "method": method,
        "seed": seed,
        "wall": wall,
        "trials": sorted(trials, key=lambda r: r["t"]),
        "agreement": rungs,  # (step, rho, n) over the finished trials (harness.core.agreement)
        "auto_rung": attrs.auto_rung(outcome.study),  # min_iter: auto's last choice ({} otherwise)
    }


def run_hf(seed: int, s: Settings, results: str) -> dict[str, Any]:
    """Trainer.hyperparameter_search(backend="optuna") with model_init, on harness's data and eval rows."""
    import optuna
    import torch
    from datasets import Dataset
    from harness.trial.fixtures import _subset, keep_4bit_layout_trainable, tokenize_rows
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from harness.builtin.tiny_model import ensure_tiny_model
    from harness.core.spec import TrialSpec
    from harness.study import space as search_space
    from harness.trial.datasets import load_splits

    cfg = method_config(results, "hf", seed, s)
    path = ensure_tiny_model()
    start = dt.datetime.now()
    t0 = time.perf_counter()
    t = cfg.training
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    data = load_splits(cfg, tokenizer=tok)
    fit = {"truncation": t.truncation, "response_template": t.response_template}
    enc = tokenize_rows(data.train, tok, t.max_seq_length, t.completion_only_loss, **fit)
    keep = [i for i, lab in enumerate(enc["labels"]) if any(x != -100 for x in lab)]
    train = Dataset.from_dict({k: [v[i] for i in keep] for k, v in enc.items()})
    rows = _subset(data.validation, cfg.dataset.max_eval_rows, cfg.seed)
    columns = {c: [r[c] for r in rows] for c in ("prompt", "completion")}
    evalset = Dataset.from_dict(tokenize_rows(columns, tok, t.max_seq_length, True, **fit))
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.model.quantization,
        bnb_4bit_use_double_quant=cfg.model.double_quant,
        bnb_4bit_compute_dtype=torch.float32,
        bnb_4bit_quant_storage=torch.uint8,
    )
    scratch = Path(results) / "hf-spec"

    def resolved(trial: Any) -> Any:
        """The trial's TrainingConfig: the same names, ranges and alpha = multiple x r as harness."""
        return TrialSpec.build(cfg, search_space.suggest(trial, cfg.parameters), 0, scratch).training

    current: dict[str, Any] = {}

    def model_init(trial: Any = None) -> Any:
        tr = resolved(trial) if trial is not None else t
        current["trial"] = trial
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=bnb, dtype=torch.float32, device_map="cpu"
        )
        keep_4bit_layout_trainable(model)  # the same bitsandbytes CPU kernels as harness (fixtures.py)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model.config.use_cache = False
        lora = LoraConfig(
            r=tr.r,
            lora_alpha=float(tr.lora_alpha if tr.lora_alpha is not None else 2 * tr.r),
            lora_dropout=tr.lora_dropout,
            target_modules=tr.target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)

    def hp_space(trial: Any) -> dict[str, Any]:
        tr = resolved(trial)  # r / alpha / dropout are read again (same values) by model_init
        return {
            "learning_rate": tr.learning_rate,
            "lr_scheduler_type": tr.lr_scheduler_type,
            "warmup_steps": float(tr.warmup_ratio),  # a float < 1 is a ratio (transformers 5)
            "per_device_train_batch_size": tr.per_device_train_batch_size,
            "gradient_accumulation_steps": tr.gradient_accumulation_steps,
            "optim": tr.optim,
            "weight_decay": float(tr.weight_decay),
        }

    steps: dict[int, int] = {}
    spent = [0]

    class Budget(TrainerCallback):
        """The step budget: stop the study after the trial that uses it up (pruned trials count)."""

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            trial = current.get("trial")
            if trial is None:
                return
            steps[trial.number] = state.global_step
            spent[0] += state.global_step
            if spent[0] >= s.budget_steps:
                trial.study.stop()

    args = TrainingArguments(
        output_dir=str(Path(results) / "hf"),
        max_steps=s.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=len(rows),  # one batch: eval_loss is the token-weighted mean
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=float(t.warmup_ratio),  # float, so hp_space's ratios are not cast to int
        optim=t.optim,
        weight_decay=float(t.weight_decay),
        max_grad_norm=t.max_grad_norm,
        eval_strategy="steps",
        eval_steps=s.eval_steps,
        prediction_loss_only=True,
        save_strategy="no",
        logging_steps=s.eval_steps,
        report_to="none",
        disable_tqdm=True,
        log_level="error",
        use_cpu=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model_init=model_init,
        args=args,
        train_dataset=train,
        eval_dataset=evalset,
        data_collator=DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id),
        processing_class=tok,
        callbacks=[Budget()],
    )
    trainer.remove_callback(PrinterCallback)
    storage = optuna.storages.InMemoryStorage()
    trainer.hyperparameter_search(
        hp_space=hp_space,
        backend="optuna",
        n_trials=s.trials * 8,
        direction="minimize",
        study_name="hf",
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed),
    )
    wall = time.perf_counter() - t0
    trials = []
    for tr in optuna.load_study(study_name="hf", storage=storage).trials:
        if tr.datetime_complete is None:
            continue
        trials.append(
            {
                "t": (tr.datetime_complete - start).total_seconds(),
                "steps": steps.get(tr.number, max(tr.intermediate_values, default=0)),
                "state": tr.state.name,
                "value": tr.value if tr.state.name == "COMPLETE" else None,
                "params": tr.params,
            }
        )
    return {"method": "hf", "seed": seed, "wall": wall, "trials": sorted(trials, key=lambda r: r["t"])}


def warm_up_imports() -> None:
    """Imports are a per-process cost either side pays once: kept off every method's clock."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    from transformers import Trainer  # noqa: F401
    from trl import SFTTrainer  # noqa: F401

    import harness.study.run  # noqa: F401
    import harness.trial.recipe  # noqa: F401
    from harness.study.run import quiet_libraries

    quiet_libraries()


def job(method: str, seed: int, out: str) -> None:
    setup_torch()
    warm_up_imports()
    s = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix=f"bench-q-{method}-") as tmp:
        trace = run_hf(seed, s, tmp) if method == "hf" else run_harness(method, seed, s, tmp)
    Path(out).write_text(json.dumps(trace))


# ----------------------------------------------------------------------------------------------------
# Scoring the traces


def reach(trace: dict[str, Any], goal: float) -> tuple[float, int, bool]:
    """(seconds, train steps, reached) at the end of the first trial whose value <= goal; the whole run
    (reached False) when none did."""
    spent = 0
    for r in trace["trials"]:
        spent += r["steps"]
        if r["value"] is not None and r["value"] <= goal:
            return r["t"], spent, True
    return trace["wall"], spent, False


def best_value(traces: list[dict[str, Any]]) -> float | None:
    values = [r["value"] for tr in traces for r in tr["trials"] if r["value"] is not None]
    return min(values, default=None)


def score(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: per-seed (time, steps, reached) and ratios to harness; medians over seeds."""
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for tr in traces:
        by_seed.setdefault(tr["seed"], []).append(tr)
    rows: dict[str, dict[str, Any]] = {}
    for seed, group in sorted(by_seed.items()):
        best = best_value(group)
        if best is None:
            continue
        goal = best * (1 + TOLERANCE)
        own = {tr["method"]: tr for tr in group}
        ref = reach(own["harness"], goal) if "harness" in own else None
        for method, tr in own.items():
            secs, steps, ok = reach(tr, goal)
            row = rows.setdefault(
                method,
                {"time": [], "steps": [], "reached": [], "ratio": [], "best": [], "wall": [], "trials": []},
            )
            row["time"].append(secs)
            row["steps"].append(steps)
            row["reached"].append(ok)
            row["wall"].append(tr["wall"])
            row["trials"].append(len(tr["trials"]))
            row["best"].append(best_value([tr]))
            if ref is not None and ref[0] > 0:
                row["ratio"].append(secs / ref[0])
        if ref is not None and not ref[2]:
            print(
                f"  seed {seed}: harness never got within 2% of {best:.4f}: its ratios that seed are bounds"
            )
    for row in rows.values():
        row["median_time"] = statistics.median(row["time"])
        row["median_steps"] = statistics.median(row["steps"])
        row["median_ratio"] = statistics.median(row["ratio"]) if row["ratio"] else None
    return rows


def figure_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for method, target in TARGETS.items():
        row = rows.get(method)
        if row is None or row["median_ratio"] is None:
            continue
        h = rows["harness"]
        reason = (
            f"median {row['median_time']:.0f}s / {row['median_steps']:.0f} steps vs harness "
            f"{h['median_time']:.0f}s / {h['median_steps']:.0f} steps"
        )
        lines.append(
            result_line(
                "P3", f"{method}_vs_harness_time_to_near_best", row["median_ratio"], "x", target, True, reason
            )
        )
    return lines


def print_table(rows: dict[str, dict[str, Any]], s: Settings) -> None:
    print(
        f"  {'method':<18} {'median time':>11} {'median steps':>12} {'reached':>7} {'x harness':>9}  "
        "per seed: time/steps (> = never within 2%), trials run, best eval_loss"
    )
    for method in [m for m in METHODS if m in rows]:
        row = rows[method]
        per = "  ".join(
            f"{'' if ok else '>'}{t:.0f}s/{st}, {n}t, {b:.4f}" if b is not None else f">{t:.0f}s/{st}, {n}t"
            for t, st, ok, n, b in zip(
                row["time"], row["steps"], row["reached"], row["trials"], row["best"], strict=True
            )
        )
        ratio = f"{row['median_ratio']:.2f}" if row["median_ratio"] is not None else "-"
        print(
            f"  {method:<18} {row['median_time']:>10.0f}s {row['median_steps']:>12.0f} "
            f"{sum(row['reached']):>5}/{len(row['reached'])} {ratio:>9}  {per}"
        )


def pruner_of(method: str) -> str:
    """The `early_terminate.type` a harness row runs (the sweep file's own for `harness`)."""
    with tempfile.TemporaryDirectory() as tmp:
        et = method_config(tmp, method, SEED0, Settings()).early_terminate
    return str(et.type) + (" (min_iter auto)" if et.min_iter == "auto" else "")


def fastest_pruner(rows: dict[str, dict[str, Any]]) -> str | None:
    """The harness row that got within 2% on the most seeds, then the lowest median time (a seed where a
    method never got there is charged its whole run, which can be shorter than another method's success)."""
    have = [(-sum(rows[m]["reached"]), rows[m]["median_time"], m) for m in PRUNER_ROWS if m in rows]
    return min(have)[2] if have else None


# ----------------------------------------------------------------------------------------------------


def run_jobs(s: Settings, tmp: Path) -> list[dict[str, Any]]:
    """Every (method, seed) in its own process, `s.jobs` at a time; the order rotates with the seed so a
    method does not always share the machine with the same neighbour."""
    queue = []
    for i in range(s.seeds):
        k = i % len(s.methods)
        for method in (*s.methods[k:], *s.methods[:k]):
            queue.append((method, SEED0 + i))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    running: list[tuple[subprocess.Popen[str], str, int, Path, float]] = []
    traces = []
    while queue or running:
        while queue and len(running) < s.jobs:
            method, seed = queue.pop(0)
            out = tmp / f"{method}-{seed}.json"
            cmd = [sys.executable, "-m", "benchmarks.quality", "job", method, str(seed), str(out)]
            log = open(tmp / f"{method}-{seed}.log", "w")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            running.append((proc, method, seed, out, time.perf_counter()))
        time.sleep(1.0)
        for item in list(running):
            proc, method, seed, out, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0 or not out.exists():
                tail = (tmp / f"{method}-{seed}.log").read_text()[-2000:]
                print(f"  {method} seed {seed}: exit {proc.returncode}\n{tail}", flush=True)
                continue
            trace = json.loads(out.read_text())
            traces.append(trace)
            vals = [r["value"] for r in trace["trials"] if r["value"] is not None]
            states = "".join(r["state"][0] for r in trace["trials"])
            print(
                f"  {method:<18} seed {seed}: {trace['wall']:5.0f}s, trials {states}, "
                f"{sum(r['steps'] for r in trace['trials'])} steps, best "
                + (f"{min(vals):.4f}" if vals else "-")
                + f" ({time.perf_counter() - t0:.0f}s with start-up; {load_avg()})",
                flush=True,
            )
    return traces


def main() -> list[str]:
    s = Settings.from_env()
    t0 = time.perf_counter()
    print(
        f"P3 setup: {', '.join(s.methods)}; {s.seeds} seeds; budget {s.trials} x {s.max_steps} = "
        f"{s.budget_steps} train steps per method (eval every {s.eval_steps}); {s.jobs} jobs at a time, one "
        f"torch thread each; {load_avg()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        traces = run_jobs(s, Path(tmp))
    lines = report(traces, s)
    print(f"P3 done in {time.perf_counter() - t0:.0f}s; {load_avg()}")
    for line in lines:
        print(line)
    return lines


def report(traces: list[dict[str, Any]], s: Settings, save: bool = True) -> list[str]:
    """The table, the extra rows and the figure lines; writes benchmarks/last-quality.json (`save`)."""
    rows = score(traces)
    print("P3 time and train steps until the running best is within 2% of the best any method found:")
    print_table(rows, s)
    lines = figure_lines(rows) if "harness" in rows else []
    for method in ("grid", "harness-hyperband", "harness-median", "harness-auto"):
        if method in rows and rows[method]["median_ratio"] is not None:
            print(f"P3 {method} / harness time to near-best: {rows[method]['median_ratio']:.2f}x (no target)")
    fastest = fastest_pruner(rows)
    if fastest:
        print(
            f"P3 best pruner (seeds within 2%, then median time): {pruner_of(fastest)} ({fastest}; the sweep "
            f"file ships {pruner_of('harness')})"
        )
    if not save:
        return lines
    write_json(
        OUT,
        {
            "settings": asdict(s),
            "machine": machine_facts(),
            "figures": [parse_line(x) for x in lines],
            "rows": {m: {k: v for k, v in r.items()} for m, r in rows.items()},
            "traces": traces,
        },
    )
    agreement_lines(traces)
    return lines


def agreement_lines(traces: list[dict[str, Any]]) -> None:
    """Per harness row and seed: rho per eval step, and the first rung min_iter: auto settled on."""
    for tr in sorted(traces, key=lambda t: (t["method"], t["seed"])):
        if not tr.get("agreement"):
            continue
        cells = "  ".join(
            f"{step}:{'n/a' if rho is None else f'{rho:.2f}'}/{n}" for step, rho, n in tr["agreement"]
        )
        auto = tr.get("auto_rung") or {}
        chosen = f"; auto first rung {auto.get('step')}" if auto else ""
        print(f"  rho by step (step:rho/n) {tr['method']} seed {tr['seed']}: {cells}{chosen}")


def parse_line(line: str) -> dict[str, Any]:
    from benchmarks.common import parse_figure

    return parse_figure(line)


def rescore(folder: str) -> None:
    """`python -m benchmarks.quality score DIR|FILE`: score the traces (*.json) of jobs already run, e.g.
    the ones a run stopped early left in its temp folder, or a saved last-quality.json."""
    if folder.endswith(".json"):  # a saved benchmarks/last-quality.json
        traces = json.loads(Path(folder).read_text())["traces"]
    else:
        traces = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]
    names = ", ".join(f"{t['method']}/{t['seed']}" for t in traces)
    print(f"P3 {len(traces)} traces from {folder}: {names}")
    for line in report(traces, Settings.from_env(), save=False):
        print(line)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "job":
        job(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "score":
        rescore(sys.argv[2])
    else:
        main()
