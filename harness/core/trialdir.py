"""The one owner of the trial folder format; every path and file name below a study folder is made here.

results/<study>/study.db       the default storage (SQLite), when the sweep file names none (study_db)
results/<study>/trial-0007/
  params.json          sampled params, the full training settings used and the base's quantization
                       (write_params); once trained, what the adapter really covered: lora_modules,
                       base_layer, and the steps it was budgeted: max_steps, eval_steps (write_result)
  metrics.json         state, value, best step, history, resources, cost (harness.core.cost): written
                       once, when the trial ends (failed and interrupted ones too)
  generations.jsonl    prompt, reference, prediction, per-row scores
  log.jsonl            training log lines and evals by step
  adapter/             the trial's adapter (safetensors), until the objective keeps or deletes it
  checkpoint/          written at every eval (the recipe fills it, see `CHECKPOINT_FILES`), so an
                       interrupted trial's retry resumes instead of restarting
results/<study>/best-adapter/   the best COMPLETE trial's adapter (keep_best_adapter)

Every file is written atomically (temp file in the same folder, fsync, rename), so a kill at any moment
leaves either the old file or the new one, never half of one. Folders (checkpoint/, best-adapter/) are
swapped in whole: written to `<name>.tmp/`, the previous one moved to `<name>.old/` for the instant
between two renames (`find_checkpoint` falls back to it), so a kill leaves a complete one.
Knows neither torch nor Optuna: the recipe writes tensors into the folder this module hands it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.core.spec import TrialResult, TrialSpec

_UMASK = os.umask(0)
os.umask(_UMASK)


STUDY_DB = "study.db"
CHECKPOINT = "checkpoint"
ADAPTER = "adapter"
BEST_ADAPTER = "best-adapter"
# Inside checkpoint/: the HF Trainer's own files for what it resumes (optimizer.pt, scheduler.pt,
# rng_state.pth, trainer_state.json) plus ours. loop.json is written last: a folder with it is complete.
ADAPTER_FILE, BEST_FILE, LOOP_FILE, STATE_FILE = (
    "adapter.safetensors",
    "best_adapter.safetensors",
    "loop.json",
    "trainer_state.json",
)


def trial_name(number: int) -> str:
    """`trial-0007`: the trial's folder, and its name wherever a trial is named by folder (tracking runs)."""
    return f"trial-{number:04d}"


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / trial_name(number)


def study_db(study_dir: Path) -> Path:
    """results/<study>/study.db: the default SQLite storage."""
    return Path(study_dir) / STUDY_DB


def checkpoint_dir(trial_folder: Path) -> Path:
    return trial_folder / CHECKPOINT


def adapter_dir(trial_folder: Path) -> Path:
    return trial_folder / ADAPTER


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: a kill leaves the old file or the new one. Every
    output (text or binary, e.g. report.parquet) gets one file mode: 0666 less the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf: write them as null rather than producing a file other tools reject."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(data), indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_params(spec: TrialSpec) -> None:
    write_json(
        spec.output_dir / "params.json",
        {
            "trial": spec.number,
            "seed": spec.seed,
            "sampled": spec.params,
            "training": spec.training.model_dump(mode="json"),
            "quantization": spec.model.quantization,
        },
    )


def write_result(
    spec: TrialSpec,
    result: TrialResult,
    state: str,
    resources: dict[str, float | None] | None = None,
    cost: dict[str, Any] | None = None,
) -> None:
    """Everything a finished trial leaves; metrics.json is written once, with its resource figures and
    its cost (harness.core.cost)."""
    extra: dict[str, Any] = {"resources": resources} if resources is not None else {}
    if cost is not None:
        extra["cost"] = cost
    write_json(spec.output_dir / "metrics.json", {"state": state, **result.to_dict(), **extra})
    params = spec.output_dir / "params.json"
    # What was asked for, then what the trial really had: adapted modules, and the steps it was budgeted.
    used = {**result.trained, **{k: v for k, v in budget_used(result).items() if v is not None}}
    if used and params.is_file():
        write_json(params, {**read_json(params), **used})
    write_jsonl(spec.output_dir / "generations.jsonl", result.generations)
    write_jsonl(
        spec.output_dir / "log.jsonl", [*result.train_log, *({"eval": True, **h} for h in result.history)]
    )


def budget_used(result: TrialResult) -> dict[str, int | None]:
    """params.json's `max_steps` / `eval_steps`: the steps the trial trained with (derived per trial
    from budget.epochs or a fractional eval_steps)."""
    return {"max_steps": result.max_steps, "eval_steps": result.eval_steps}


def write_failure(folder: Path, reason: str, **details: Any) -> None:
    """metrics.json of a trial that ended without a result (an exception, a duplicate config)."""
    write_json(folder / "metrics.json", {"state": "FAIL", "fail_reason": reason, **details})


# ----------------------------------------------------------------------------------------------------
# Folders swapped in whole: checkpoints and the kept best adapter


def _siblings(folder: Path) -> tuple[Path, Path]:
    return folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")


def fresh_tmp(folder: Path) -> Path:
    """An empty `<folder>.tmp/` to write a new version of `folder` into; `swap_in` then publishes it."""
    tmp = _siblings(folder)[0]
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def swap_in(source: Path, folder: Path) -> None:
    """Make `source` the new `folder` with two renames; the previous one is gone afterwards."""
    old = _siblings(folder)[1]
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(source, folder)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(folder: Path | None) -> Path | None:
    """The complete checkpoint at `folder` (or its .old twin, if killed mid-swap); None if there is none."""
    if folder is None:
        return None
    folder = Path(folder)
    for candidate in (folder, _siblings(folder)[1]):
        if (candidate / LOOP_FILE).is_file():
            return candidate
    return None


def remove_checkpoint(folder: Path | None) -> None:
    if folder is None:
        return
    folder = Path(folder)
    for f in (folder, *_siblings(folder)):
        shutil.rmtree(f, ignore_errors=True)


def write_loop(checkpoint_tmp: Path, loop: dict[str, Any]) -> None:
    """The recipe's eval-loop state; written last, it marks the checkpoint complete."""
    atomic_write_text(checkpoint_tmp / LOOP_FILE, json.dumps(loop, default=float))


def read_loop(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / LOOP_FILE).read_text(encoding="utf-8"))


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))["global_step"])


def keep_best_adapter(study_dir: Path, adapter: Path, info: dict[str, Any]) -> None:
    """Make `adapter` (a finished trial's saved adapter) results/<study>/best-adapter/, atomically."""
    write_json(adapter / "trial.json", info)
    target = Path(study_dir) / BEST_ADAPTER
    swap_in(adapter, target)
    shutil.rmtree(_siblings(target)[0], ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# Reading trial folders back (reports). Lenient: a report must never fail because one trial's file is
# missing or has a bad line (a trial killed mid-run, a hand-edited file); what cannot be read is skipped.


def read_jsonl_lenient(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_eval_history(folder: Path) -> list[dict[str, Any]]:
    """The eval entries of a trial's log.jsonl ({"eval": true, "step": .., "eval_loss": ..}), by step."""
    evals = [r for r in read_jsonl_lenient(folder / "log.jsonl") if r.get("eval") and "step" in r]
    return sorted(evals, key=lambda r: r["step"])


def read_generations(folder: Path) -> list[dict[str, Any]]:
    """A trial's generations.jsonl: prompt, reference, prediction and per-row scores."""
    return read_jsonl_lenient(folder / "generations.jsonl")
