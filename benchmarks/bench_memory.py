"""P5 (memory): does a worker's memory stay flat over many trials, and what does 4-bit save on a GPU?

memory_growth_over_20_trials: one worker (`run_sweep` in this process, the builtin base loaded once and
shared) runs 20 short real trials that alternate two configs of different LoRA shapes (r 4 / r 16, batch
8 / 16), so every adapter is attached, trained, evaluated (loss and generation) and detached again. Each
trial records its own peak RSS (harness's ResourceMonitor resets the kernel's high-water mark at the trial's
start); trial 20 runs the same config as trial 2, so any difference between their peaks is what stayed
behind. Target <= 2%: a shared base, adapters unloaded, nothing accumulating.

gpu_qlora_vs_bf16_lora_peak (only where CUDA is present, otherwise printed as SKIP): peak CUDA memory
(torch.cuda.max_memory_allocated) of harness's own trial path (session.get + recipe.finetune) on a
~1.06B-parameter Llama built locally from a config with random weights (saved once as bf16 safetensors),
4-bit NF4 QLoRA against bf16 LoRA, each in its own child process, a few steps of batch 4 at
max_seq_length 112. Target <= 40%. (The CPU 4-bit-vs-fp32 RSS figure this replaces measured
bitsandbytes' CPU load path, not a user's GPU memory.)
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, ensure_random_llama, load_avg, result_line, setup_torch, sweep_config

GROWTH_TARGET = 2.0  # percent
GPU_TARGET = 40.0  # percent
N_TRIALS = 20
CONFIGS = [  # alternated: trial 2 and trial 20 run the second one
    {"r": 4, "lora_alpha_multiple": 2, "per_device_train_batch_size": 8},
    {"r": 16, "lora_alpha_multiple": 2, "per_device_train_batch_size": 16},
]
GROWTH_BUDGET = [
    "budget.max_steps=20",
    "budget.eval_steps=10",
    "early_stopping.patience=0",
    "early_terminate.type=none",
    "evaluation.samples=16",
    "dataset.max_eval_rows=64",
]
# ~1.06B parameters with the builtin 1,024-token tokenizer: TinyLlama's shape, 24 layers.
GPU_MODEL = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 24,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
}
GPU_MODEL_VERSION = "llama-1b-v1"
GPU_STEPS = 4
GPU_BATCH = 4


# ----------------------------------------------------------------------------------------------------
# Growth over 20 trials


def growth(tmp: str, n_trials: int = N_TRIALS, budget: list[str] | None = None) -> list[dict[str, Any]]:
    """One worker, n_trials alternating CONFIGS: [{"number", "peak_rss_mb", "rss_mb", "params"}, ...]."""
    from rich.console import Console

    from harness.core import attrs
    from harness.study import resume
    from harness.study import storage as st
    from harness.study.run import run_sweep

    cfg = sweep_config(
        tmp, "name=p5-growth", "method=random", f"budget.n_trials={n_trials}", *(budget or GROWTH_BUDGET)
    )
    url = st.storage_url(cfg)
    study = resume.open_study(cfg, st.open_storage(url), url)
    for i in range(n_trials):
        study.enqueue_trial(CONFIGS[i % len(CONFIGS)])
    outcome = run_sweep(cfg, console=Console(file=io.StringIO()))
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "peak_rss_mb": t.user_attrs.get(attrs.PEAK_RSS_MB),
            "rss_mb": t.user_attrs.get(attrs.RSS_MB),
            "params": t.params,
        }
        for t in sorted(outcome.study.trials, key=lambda t: t.number)
    ]


def growth_line(trials: list[dict[str, Any]]) -> str:
    second, last = trials[1], trials[-1]
    if second["peak_rss_mb"] is None or last["peak_rss_mb"] is None:
        return "P5 memory_growth_over_20_trials=nan% target<=2% ERROR  # no peak_rss_mb recorded"
    pct = 100.0 * (last["peak_rss_mb"] - second["peak_rss_mb"]) / second["peak_rss_mb"]
    return result_line(
        "P5",
        f"memory_growth_over_{len(trials)}_trials",
        pct,
        "%",
        GROWTH_TARGET,
        higher_is_better=False,
        reason=f"peak RSS {second['peak_rss_mb']:.0f} MB at trial 2 -> {last['peak_rss_mb']:.0f} MB at "
        f"trial {len(trials)}",
    )


# ----------------------------------------------------------------------------------------------------
# GPU: QLoRA vs bf16 LoRA peak CUDA memory


def ensure_gpu_model() -> Path:
    """A ~1.06B-parameter random-init Llama (GPU_MODEL) with the builtin tokenizer, saved once (bf16)."""
    return ensure_random_llama(GPU_MODEL_VERSION, GPU_MODEL, bf16=True)


def gpu_child(quantization: str) -> None:
    """One side: harness's trial path on the GPU model; prints {"peak_mb", "weights_mb", "steps"}."""
    import torch

    from harness.core.spec import TrialSpec
    from harness.study.run import quiet_libraries
    from harness.trial import session
    from harness.trial.recipe import finetune

    quiet_libraries()
    path = ensure_gpu_model()
    with tempfile.TemporaryDirectory(prefix="bench-p5g-") as tmp:
        cfg = sweep_config(
            tmp,
            "name=p5-gpu",
            f"model.name={path}",
            f"model.quantization={quantization}",
            "model.compute_dtype=bfloat16",
            f"budget.max_steps={GPU_STEPS}",
            f"budget.eval_steps={GPU_STEPS}",
            f"training.per_device_train_batch_size={GPU_BATCH}",
            "training.gradient_checkpointing=false",  # the same activations on both sides
            "dataset.max_eval_rows=16",
            "evaluation.samples=0",
            "early_stopping.patience=0",
        )
        shared = session.get(cfg)
        weights = shared.model.get_memory_footprint() / 2**20
        torch.cuda.reset_peak_memory_stats()
        spec = TrialSpec.build(cfg, {"r": 16, "lora_alpha_multiple": 2}, 0, Path(tmp) / "trial-0000")
        result = finetune(spec, shared)
        peak = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps({"peak_mb": peak, "weights_mb": weights, "steps": result.steps_run}))


def gpu_measure(quantization: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "gpu-child", quantization],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not last.startswith("{"):
        raise RuntimeError(f"GPU child ({quantization}) failed:\n{out.stderr[-2000:]}")
    return json.loads(last)


def gpu_line() -> str:
    import torch

    if not torch.cuda.is_available():
        return "P5 gpu_qlora_vs_bf16_lora_peak=n/a target<=40% SKIP  # no CUDA device here"
    ensure_gpu_model()
    q, b = gpu_measure("nf4"), gpu_measure("none")
    print(
        f"P5 GPU ({torch.cuda.get_device_name(0)}): 1.06B Llama, {GPU_STEPS} steps of batch {GPU_BATCH}: "
        f"peak CUDA allocated QLoRA {q['peak_mb']:.0f} MB vs bf16 LoRA {b['peak_mb']:.0f} MB; base weights "
        f"{q['weights_mb']:.0f} vs {b['weights_mb']:.0f} MB"
    )
    return result_line(
        "P5",
        "gpu_qlora_vs_bf16_lora_peak",
        100.0 * q["peak_mb"] / b["peak_mb"],
        "%",
        GPU_TARGET,
        higher_is_better=False,
        reason="activations and the LoRA optimizer state are not quantized",
    )


def main() -> list[str]:
    setup_torch()
    print(f"P5 setup: {N_TRIALS} trials alternating r 4 / r 16 in one worker; {load_avg()}")
    with tempfile.TemporaryDirectory(prefix="bench-p5-") as tmp:
        trials = growth(tmp)
    print(
        "P5 peak RSS per trial (MB): "
        + " ".join(f"{t['peak_rss_mb']:.0f}" if t["peak_rss_mb"] else "-" for t in trials)
    )
    print(
        "P5 RSS at each trial's end (MB): "
        + " ".join(f"{t['rss_mb']:.0f}" if t["rss_mb"] else "-" for t in trials)
    )
    lines = [growth_line(trials), gpu_line()]
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gpu-child":
        setup_torch()
        gpu_child(sys.argv[2])
    else:
        main()
