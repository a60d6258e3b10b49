"""Trial folders: results/<study>/trial-0007/{params.json, metrics.json, generations.jsonl, log.jsonl}.

Every file is written atomically (temp file in the same folder, fsync, rename), so a kill at any moment
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.spec import TrialResult, TrialSpec

_UMASK = os.umask(0)
os.umask(_UMASK)


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / f"trial-{number:04d}"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
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
        },
    )


def write_result(spec: TrialSpec, result: TrialResult, state: str) -> None:
    write_json(spec.output_dir / "metrics.json", {"state": state, **result.to_dict()})
    write_jsonl(spec.output_dir / "generations.jsonl", result.generations)
    write_jsonl(
        spec.output_dir / "log.jsonl", [*result.train_log, *({"eval": True, **h} for h in result.history)]
    )


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
