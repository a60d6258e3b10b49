"""P2: the same trials run by harness and by `Trainer.hyperparameter_search(backend="optuna")`.

Both sides, in this process, one after the other and then again in the opposite order (so a burst of load
from elsewhere hits both): N trials with the same params (enqueued into each side's Optuna study), on the
~35M-parameter bench Llama (benchmarks/common.py, safetensors on disk) loaded in 4-bit NF4, on the builtin
pricer data tokenized the same way (harness.fixtures.tokenize_rows), the same max_steps, batch size, LoRA
shape, optimizer, schedule, eval cadence and eval rows. Timed from nothing loaded to the last trial done:

- harness: `run_sweep` on a SweepConfig pointing model.name at the saved folder. Loads and quantizes the
  base once (session fixtures), then attaches a fresh LoRA adapter per trial.
- baseline: `transformers.Trainer(model_init=...)` + `hyperparameter_search(backend="optuna")`, as the HF
  docs show it: model_init loads, quantizes, prepares (k-bit) and wraps the base in a new LoRA adapter each
  trial, plus once when the Trainer is constructed. Its study is in memory (HF's default), so the
  comparison does not favour harness's SQLite.

Printed: `P2 harness_vs_hf_wall_ratio=0.62 target<=0.75 PASS` (harness wall / baseline wall, summed over
both orders).
"""

from __future__ import annotations

import io
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    bench_model_params,
    ensure_bench_model,
    load_avg,
    result_line,
    setup_torch,
    sweep_config,
    timed,
)

TARGET = 0.75
N_TRIALS = 3
# Short trials (a few steps of batch 4, 16 eval rows) so the reload is as large a share of a trial as CPU
# compute allows. On a GPU with a 1-8B model a reload (read + quantize, 15-60 s) is about one short
# trial; on this CPU a 35M reload costs ~1 s against ~6 s of training. BENCH_P2_MODEL=/path/to/model
# runs the same comparison on a real checkpoint (e.g. on a GPU machine).
MAX_STEPS = 4
EVAL_STEPS = 2
BATCH_SIZE = 4
EVAL_ROWS = 16
ROUNDS = 2  # harness, baseline, then baseline, harness
# Varied per trial; every other setting is the sweep file's fixed `training:` default on both sides.
PARAMS = [
    {"r": 8, "lora_alpha_multiple": 2, "learning_rate": 1e-3, "lora_dropout": 0.05},
    {"r": 16, "lora_alpha_multiple": 1, "learning_rate": 3e-4, "lora_dropout": 0.0},
    {"r": 4, "lora_alpha_multiple": 4, "learning_rate": 2e-3, "lora_dropout": 0.1},
]
SPACE = [
    "parameters.r={values: [4, 8, 16]}",
    "parameters.lora_alpha_multiple={values: [1, 2, 4]}",
    "parameters.learning_rate={distribution: log_uniform_values, min: 1.0e-4, max: 3.0e-3}",
    "parameters.lora_dropout={min: 0.0, max: 0.1}",
]


def make_config(model_path: Path, results_dir: str, name: str) -> Any:
    return sweep_config(
        results_dir,
        f"name={name}",
        f"model.name={model_path}",
        "search_space=null",
        *SPACE,
        f"budget.n_trials={N_TRIALS}",
        f"budget.max_steps={MAX_STEPS}",
        f"budget.eval_steps={EVAL_STEPS}",
        f"training.per_device_train_batch_size={BATCH_SIZE}",
        "early_stopping.patience=0",
        "early_terminate.type=none",
        f"dataset.max_eval_rows={EVAL_ROWS}",
        "evaluation.samples=0",  # the baseline has no generation metrics; compare like with like
    )


def suggest(trial: Any) -> dict[str, Any]:
    """Same names and distributions as SPACE, so the enqueued values come back on both sides."""
    return {
        "r": trial.suggest_categorical("r", [4, 8, 16]),
        "lora_alpha_multiple": trial.suggest_categorical("lora_alpha_multiple", [1, 2, 4]),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
        "lora_dropout": trial.suggest_float("lora_dropout", 0.0, 0.1),
    }


# ----------------------------------------------------------------------------------------------------
# harness


def run_harness(cfg: Any) -> dict[str, Any]:
    from rich.console import Console

    from harness import fixtures
    from harness import study as st
    from harness.runner import run_sweep

    fixtures.clear_session()  # nothing loaded: the base model load and tokenization are part of the sweep
    t0 = time.perf_counter()
    url = st.storage_url(cfg)
    study = st.open_study(cfg, st.open_storage(url), url)
    for p in PARAMS[:N_TRIALS]:
        study.enqueue_trial(p)
    log = io.StringIO()
    outcome = run_sweep(cfg, console=Console(file=log, highlight=False, width=200))
    wall = time.perf_counter() - t0
    trials = outcome.study.trials
    states = [t.state.name for t in trials]
    if states != ["COMPLETE"] * N_TRIALS:
        raise RuntimeError(f"harness trials ended {states}:\n{log.getvalue()}")
    return {
        "wall": wall,
        "trial_s": [t.user_attrs["duration_s"] for t in trials],
        "values": [t.value for t in trials],
        "params": [t.params for t in trials],
    }


# ----------------------------------------------------------------------------------------------------
# baseline: Trainer.hyperparameter_search with model_init


def run_baseline(cfg: Any, model_path: Path, out_dir: str) -> dict[str, Any]:
    import optuna
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from harness.data import load_splits
    from harness.fixtures import keep_4bit_layout_trainable, tokenize_rows

    t0 = time.perf_counter()
    stats: dict[str, float] = {}
    t = cfg.training
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    data = load_splits(cfg, tokenizer=tok)
    fit = {"truncation": t.truncation, "response_template": t.response_template}  # as fixtures fit rows
    enc = tokenize_rows(data.train, tok, t.max_seq_length, t.completion_only_loss, **fit)
    keep = [i for i, lab in enumerate(enc["labels"]) if any(x != -100 for x in lab)]
    train = Dataset.from_dict({k: [v[i] for i in keep] for k, v in enc.items()})
    eval_rows = seeded_subset(data.validation, cfg.dataset.max_eval_rows, cfg.seed)
    evalset = Dataset.from_dict(
        tokenize_rows(
            {c: [r[c] for r in eval_rows] for c in ("prompt", "completion")},
            tok,
            t.max_seq_length,
            True,
            **fit,
        )
    )
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.model.quantization,
        bnb_4bit_use_double_quant=cfg.model.double_quant,
        bnb_4bit_compute_dtype=torch.float32,
        bnb_4bit_quant_storage=torch.uint8,
    )
    defaults = {"r": t.r, "lora_alpha_multiple": 2, "lora_dropout": t.lora_dropout}

    def model_init(trial: Any = None) -> Any:
        p = suggest(trial) if trial is not None else defaults
        with timed(stats, "model_init"):
            model = AutoModelForCausalLM.from_pretrained(
                model_path, quantization_config=bnb, dtype=torch.float32, device_map="cpu"
            )
            keep_4bit_layout_trainable(model)  # same bitsandbytes CPU kernels as harness (see fixtures.py)
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
            model.config.use_cache = False
            lora = LoraConfig(
                r=p["r"],
                lora_alpha=float(p["lora_alpha_multiple"] * p["r"]),
                lora_dropout=p["lora_dropout"],
                target_modules=t.target_modules,
                bias="none",
                task_type="CAUSAL_LM",
            )
            stats["loads"] = stats.get("loads", 0) + 1
            return get_peft_model(model, lora)

    def hp_space(trial: Any) -> dict[str, Any]:
        return {"learning_rate": suggest(trial)["learning_rate"]}  # r/alpha/dropout went to model_init

    args = TrainingArguments(
        output_dir=str(Path(out_dir) / "hf"),
        max_steps=cfg.budget.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=32,  # harness's eval batch size
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,
        optim=t.optim,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        eval_strategy="steps",
        eval_steps=cfg.budget.eval_steps,
        prediction_loss_only=True,
        save_strategy="no",
        logging_steps=max(1, min(10, cfg.budget.eval_steps)),
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
    )
    trainer.remove_callback(PrinterCallback)  # its raw dict prints would bury the result lines
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="hf-baseline", storage=storage, direction="minimize")
    for p in PARAMS[:N_TRIALS]:
        study.enqueue_trial(p)
    trainer.hyperparameter_search(
        hp_space=hp_space,
        backend="optuna",
        n_trials=N_TRIALS,
        direction="minimize",
        study_name="hf-baseline",
        storage=storage,
        load_if_exists=True,
    )
    wall = time.perf_counter() - t0
    trials = optuna.load_study(study_name="hf-baseline", storage=storage).trials
    states = [tr.state.name for tr in trials]
    if states != ["COMPLETE"] * N_TRIALS:
        raise RuntimeError(f"baseline trials ended {states}")
    return {
        "wall": wall,
        "model_init_s": stats.get("model_init", 0.0),
        "loads": int(stats.get("loads", 0)),
        "values": [tr.value for tr in trials],
        "params": [tr.params for tr in trials],
    }


def model_size(path: Path) -> str:
    try:
        return f"{bench_model_params(path) / 1e6:.0f}M params"
    except OSError:
        return "params unknown"


def seeded_subset(ds: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """The same fixed eval rows harness uses (fixtures._subset: seeded shuffle, first n, in order)."""
    import random

    idx = list(range(len(ds)))
    random.Random(seed).shuffle(idx)
    return [ds[i] for i in sorted(idx[:n])]


# ----------------------------------------------------------------------------------------------------


def warm_up_imports() -> None:
    """Import costs are paid once per process by either side; neither should be charged them."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Trainer  # noqa: F401
    from trl import SFTTrainer  # noqa: F401

    import harness.recipe  # noqa: F401
    import harness.runner  # noqa: F401
    from harness.runner import quiet_libraries

    quiet_libraries()


def main() -> list[str]:
    setup_torch()
    override = os.environ.get("BENCH_P2_MODEL")
    path = Path(override).expanduser() if override else ensure_bench_model()
    warm_up_imports()
    print(
        f"P2 setup: {N_TRIALS} trials x {MAX_STEPS} steps (batch {BATCH_SIZE}, eval every {EVAL_STEPS}) on "
        f"{path.name} ({model_size(path)}, 4-bit nf4), {ROUNDS} rounds; {load_avg()}"
    )
    h_wall = b_wall = b_init = 0.0
    h: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-p2-") as tmp:
        for rnd in range(ROUNDS):
            order = ("harness", "baseline") if rnd % 2 == 0 else ("baseline", "harness")
            for side in order:
                if side == "harness":
                    h = run_harness(make_config(path, tmp, f"p2-round{rnd}"))
                    h_wall += h["wall"]
                    print(
                        f"  round {rnd} harness : {h['wall']:6.1f}s  trials "
                        + " ".join(f"{s:.1f}s" for s in h["trial_s"])
                        + "  eval_loss "
                        + " ".join(f"{v:.4f}" for v in h["values"])
                    )
                else:
                    b = run_baseline(make_config(path, tmp, f"p2-round{rnd}-hf"), path, tmp)
                    b_wall += b["wall"]
                    b_init += b["model_init_s"]
                    print(
                        f"  round {rnd} baseline: {b['wall']:6.1f}s  model_init {b['model_init_s']:.1f}s "
                        f"over {b['loads']} loads  eval_loss(last) "
                        + " ".join(f"{v:.4f}" for v in b["values"])
                    )
                    if h is not None and [dict(sorted(p.items())) for p in b["params"]] != [
                        dict(sorted(p.items())) for p in h["params"]
                    ]:
                        raise RuntimeError(f"sides ran different params: {h['params']} vs {b['params']}")
            h = None
    ratio = h_wall / b_wall if b_wall else math.inf
    share = 100 * b_init / b_wall if b_wall else 0.0
    print(
        f"P2 harness {h_wall:.1f}s vs baseline {b_wall:.1f}s over {ROUNDS} rounds; the baseline spent "
        f"{b_init:.1f}s ({share:.0f}% of its wall) in model_init (load + quantize + LoRA); {load_avg()}"
    )
    best_possible = (b_wall - b_init * N_TRIALS / (N_TRIALS + 1)) / b_wall if b_wall else 1.0
    line = result_line(
        "P2",
        "harness_vs_hf_wall_ratio",
        ratio,
        "",
        TARGET,
        higher_is_better=False,
        reason=(
            f"reloading is only {share:.0f}% of the baseline's time at this CPU scale, so removing it can at "
            f"best reach ~{best_possible:.2f}"
        ),
    )
    print(line)
    return [line]


if __name__ == "__main__":
    main()
