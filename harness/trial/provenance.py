"""Measuring what a study was run on: content hashes of the base weights, the tokenizer and each data
split (the record's format, and how it is read and compared, is harness.core.provenance).

A hash is over content, not names: the model's weight and config files (the tokenizer's own files apart),
and the formatted rows of each split as JSON, so renaming a file changes nothing and editing one row
changes the hash. Hashes that cannot be taken (a hub model not in the local cache) are left out, never
guessed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.core.provenance import SPLITS

TOKENIZER_FILES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
MODEL_FILES = {"config.json", "generation_config.json"}


def files_sha256(folder: Path, names: Iterable[str]) -> str | None:
    """sha256 over (relative name, content digest) of the given files in `folder`, in name order."""
    h = hashlib.sha256()
    found = False
    for name in sorted(names):
        path = folder / name
        if not path.is_file():
            continue
        found = True
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        h.update(f"{name}\0{digest.hexdigest()}\n".encode())
    return h.hexdigest() if found else None


def model_hashes(folder: Path) -> dict[str, str]:
    """{"base_model_sha256", "tokenizer_sha256"} of a model folder (the files transformers loads)."""
    names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES) or n in MODEL_FILES]
    out = {}
    for key, chosen in (("base_model_sha256", weights), ("tokenizer_sha256", TOKENIZER_FILES)):
        digest = files_sha256(folder, chosen)
        if digest:
            out[key] = digest
    return out


def model_folder(cfg: Any) -> Path | None:
    """Where the base's files are: the shipped builtin, a local folder, or a hub model's local cache."""
    from harness.builtin import BUILTIN_MODEL

    name = cfg.model.name
    if name == BUILTIN_MODEL:
        from harness.builtin.tiny_model import SHIPPED

        return SHIPPED
    local = cfg.resolve_path(name)
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=cfg.model.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached here (or no hub library): no hash rather than a guess
        return None


def rows_sha256(rows: Iterable[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


_CACHE: dict[str, dict[str, Any]] = {}


def measure(cfg: Any, splits: Any | None = None, model_path: str | None = None) -> dict[str, Any]:
    """The provenance of a sweep: `splits` (data.Splits) as the recipe formatted them, else loaded here
    (a chat dataset needs the tokenizer, so without the recipe its data hashes may be missing)."""
    from harness.errors import HarnessError
    from harness.trial.datasets import generation_subset, load_splits, seeded_subset

    key = json.dumps(
        [
            cfg.model.model_dump(mode="json"),
            cfg.dataset.model_dump(mode="json"),
            cfg.task,
            cfg.trainer,
            cfg.seed,
        ]
        + [cfg.evaluation.samples, cfg.source_path, model_path, splits is None],
        default=str,
    )
    if key in _CACHE:
        return dict(_CACHE[key])
    out: dict[str, Any] = {"base_model": cfg.model.name}
    folder = Path(model_path) if model_path and Path(model_path).is_dir() else model_folder(cfg)
    if folder is not None:
        out.update(model_hashes(folder))
    if splits is None:
        try:
            splits = load_splits(cfg)
        except HarnessError:
            splits = None
    if splits is not None:
        parts = splits.as_dict()
        out["data"] = {name: rows_sha256(parts[name].to_list()) for name in SPLITS}
        out["rows"] = {name: len(parts[name]) for name in SPLITS}
        scored = seeded_subset(splits.validation, cfg.dataset.max_eval_rows, cfg.seed)
        generated = generation_subset(splits.validation, cfg) if cfg.evaluation.samples else []
        out["eval_subset"] = rows_sha256([*scored, {"--": "generation rows"}, *generated])
    _CACHE[key] = out
    return dict(out)
