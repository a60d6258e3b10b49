"""P5 (memory): peak RSS of a 4-bit QLoRA fine-tune vs an fp32 LoRA fine-tune of the same model.

Each side runs in its own child process (`python -m benchmarks.bench_memory child nf4|none`): harness's
own path (fixtures.get + recipe.finetune) on the ~35M bench Llama, a few training steps with one eval.
The child reports its RSS after imports (the Python/torch runtime, the same for both) and its peak RSS
(ru_maxrss) at the end. The figure is the ratio of peaks above that runtime floor -- what the model,
adapter, optimizer and activations add -- since the floor (~0.4 GB) would otherwise dominate a 35M model
and hide what 4-bit weights save; the plain peaks are printed alongside.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, ensure_bench_model, load_avg, result_line, setup_torch, sweep_config

TARGET = 40.0  # percent
STEPS = 3
BATCH_SIZE = 4


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def child(quantization: str) -> None:
    setup_torch()
    import peft  # noqa: F401
    import trl  # noqa: F401

    from harness import fixtures
    from harness.recipe import finetune
    from harness.runner import quiet_libraries
    from harness.spec import TrialSpec

    quiet_libraries()
    path = ensure_bench_model()
    floor = rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-p5-") as tmp:
        cfg = sweep_config(
            tmp,
            "name=p5-memory",
            f"model.name={path}",
            f"model.quantization={quantization}",
            f"budget.max_steps={STEPS}",
            f"budget.eval_steps={STEPS}",
            f"training.per_device_train_batch_size={BATCH_SIZE}",
            "training.optim=adamw_torch",
            "dataset.max_eval_rows=16",
            "evaluation.samples=0",
            "early_stopping.patience=0",
        )
        shared = fixtures.get(cfg)
        loaded = rss_mb()
        weights = shared.model.get_memory_footprint() / 2**20
        reset_peak()
        spec = TrialSpec.build(cfg, {}, 0, Path(tmp) / "trial-0000")
        result = finetune(spec, shared)
        train_peak = status_mb("VmHWM")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "floor_mb": floor,
                "loaded_mb": loaded,
                "weights_mb": weights,
                "train_peak_mb": train_peak,
                "peak_mb": peak,
                "steps": result.steps_run,
            }
        )
    )


def measure(quantization: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "child", quantization],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not last.startswith("{"):
        raise RuntimeError(f"child ({quantization}) failed:\n{out.stderr[-2000:]}")
    return json.loads(last)


def main() -> list[str]:
    ensure_bench_model()
    print(f"P5 memory setup: {STEPS} steps, batch {BATCH_SIZE}, bench Llama, one child each; {load_avg()}")
    q = measure("nf4")
    f = measure("none")
    q_add, f_add = q["peak_mb"] - q["floor_mb"], f["peak_mb"] - f["floor_mb"]
    share = 100.0 * q_add / f_add if f_add > 0 else float("inf")
    print(
        f"P5 base weights (get_memory_footprint): 4-bit {q['weights_mb']:.0f} MB, "
        f"fp32 {f['weights_mb']:.0f} MB; "
        f"RSS after load: 4-bit {q['loaded_mb']:.0f} MB, fp32 {f['loaded_mb']:.0f} MB; peak while "
        f"training: {q['train_peak_mb']:.0f} vs {f['train_peak_mb']:.0f} MB"
    )
    print(
        f"P5 peak RSS: 4-bit {q['peak_mb']:.0f} MB, fp32 {f['peak_mb']:.0f} MB (whole process, "
        f"ratio {100 * q['peak_mb'] / f['peak_mb']:.0f}%); above the runtime floor "
        f"({q['floor_mb']:.0f} / {f['floor_mb']:.0f} MB): {q_add:.0f} vs {f_add:.0f} MB"
    )
    line = result_line(
        "P5",
        "qlora_vs_fp32_peak_rss",
        share,
        "%",
        TARGET,
        higher_is_better=False,
        reason=(
            f"the base weights are {f['weights_mb']:.0f} MB of a {f_add:.0f} MB increment at 35M params: "
            "runtime, data, Trainer and activations dominate, and the 4-bit load leaves its fp32 "
            "buffers in the heap"
        ),
    )
    print(line)
    return [line]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        child(sys.argv[2])
    else:
        main()
