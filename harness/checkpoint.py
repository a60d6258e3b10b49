"""Trial checkpoints: an interrupted trial's retry continues from its last eval instead of step 0.

results/<study>/trial-0007/checkpoint/, written at every eval (recipe.EvalLoop), in the HF Trainer's own
layout for what the Trainer resumes (optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json: global
step, and the data loader skips the batches already seen), plus ours:
- adapter.safetensors: the LoRA weights, from recipe.adapter_state (named_parameters) -- never
  model.state_dict(), which would disturb the shared 4-bit base (see recipe.adapter_state);
- best_adapter.safetensors: EvalLoop's in-memory snapshot of the best adapter so far;
- loop.json: EvalLoop's history, train log, best value/step and bad-eval count. Written last: a folder
  with loop.json is complete.

Atomic: the checkpoint is written to checkpoint.tmp/ and swapped in by rename (the previous one moves to
checkpoint.old/ for the instant between the two renames, and `find` falls back to it), so a kill at any
moment leaves a complete checkpoint or the previous one.

Disk stays bounded: a trial's checkpoint is deleted when the trial ends (any way but an interruption),
and the best COMPLETE trial's adapter is kept as results/<study>/best-adapter/ (safetensors).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from harness import results

ADAPTER, BEST, LOOP, STATE = (
    "adapter.safetensors",
    "best_adapter.safetensors",
    "loop.json",
    "trainer_state.json",
)


def _siblings(folder: Path) -> tuple[Path, Path]:
    return folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")


def save(
    folder: Path,
    trainer: Any,
    adapter: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor] | None,
    loop: dict[str, Any],
) -> None:
    from safetensors.torch import save_file

    tmp, old = _siblings(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in adapter.items()}, str(tmp / ADAPTER))
    if best is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in best.items()}, str(tmp / BEST))
    trainer._save_optimizer_and_scheduler(str(tmp))
    trainer._save_rng_state(str(tmp))
    trainer.state.save_to_json(str(tmp / STATE))
    results.atomic_write_text(tmp / LOOP, json.dumps(loop, default=float))
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def find(folder: Path | None) -> Path | None:
    """The complete checkpoint at `folder` (or its .old twin, if killed mid-swap); None if there is none."""
    if folder is None:
        return None
    folder = Path(folder)
    for candidate in (folder, _siblings(folder)[1]):
        if (candidate / LOOP).is_file():
            return candidate
    return None


def load_loop(folder: Path) -> dict[str, Any]:
    return json.loads((folder / LOOP).read_text(encoding="utf-8"))


def load_tensors(folder: Path, name: str = ADAPTER) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    path = folder / name
    return load_file(str(path)) if path.is_file() else None


def step(folder: Path) -> int:
    return int(json.loads((folder / STATE).read_text(encoding="utf-8"))["global_step"])


def remove(folder: Path | None) -> None:
    if folder is None:
        return
    folder = Path(folder)
    for f in (folder, *_siblings(folder)):
        shutil.rmtree(f, ignore_errors=True)


def keep_best_adapter(study_dir: Path, adapter_dir: Path, info: dict[str, Any]) -> None:
    """Make `adapter_dir` (a finished trial's saved adapter) results/<study>/best-adapter/, atomically."""
    target = Path(study_dir) / "best-adapter"
    results.write_json(adapter_dir / "trial.json", info)
    tmp, old = _siblings(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(adapter_dir, target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
