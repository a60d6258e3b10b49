"""Where a sweep's rows come from: the builtin pricer data, a local file (json, jsonl, csv, parquet) or a
folder of them (one per split, by name), or a hub dataset. `read(cfg)` -> {split name: rows}, and the
source in words for messages; shaping the rows is harness.trial.datasets' job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import DataError, HarnessError
from harness.sweepfile.schema import SweepConfig
from harness.tasks import pricer

SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet")
# Names ending like these are meant as files, so a missing one is "not found", never a hub lookup.
FILE_LIKE_EXTENSIONS = (*SUPPORTED_EXTENSIONS, ".txt", ".tsv", ".xlsx", ".xls", ".arrow", ".gz", ".zip")
BUILTIN_SOURCES = ("builtin:pricer",)

Row = dict[str, Any]


def read(cfg: SweepConfig) -> tuple[dict[str, list[Row]], str]:
    source = cfg.dataset.source
    if source.startswith("builtin:"):
        if source not in BUILTIN_SOURCES:
            raise DataError(f"unknown builtin dataset {source!r}; available: {', '.join(BUILTIN_SOURCES)}.")
        return pricer.builtin_splits(cfg.trainer), source  # the pricer's data, whatever the task
    path = cfg.resolve_path(source)
    looks_local = path.suffix.lower() in FILE_LIKE_EXTENSIONS or source.startswith((".", "/", "~"))
    if path.exists() or looks_local:
        if not path.exists():
            where = f" in {cfg.source_path}" if cfg.source_path else ""
            raise DataError(f"dataset file not found: {path} (dataset.source {source!r}{where}).")
        return _read_local(path), str(path)
    return _read_hub(source), f"hub dataset {source!r}"


def _read_local(path: Path) -> dict[str, list[Row]]:
    if path.is_file():
        return {"train": _read_file(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
    if not files:
        found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
        raise DataError(
            f"dataset folder {path} has no {'/'.join(SUPPORTED_EXTENSIONS)} files (found: {found})."
        )
    # train.jsonl / validation.csv / test-00000-of-00001.parquet name their split; otherwise one split.
    by_split: dict[str, list[Row]] = {}
    named = [f for f in files if _split_of(f) is not None]
    for f in named or files:
        by_split.setdefault(_split_of(f) or "train", []).extend(_read_file(f))
    return by_split


def _split_of(path: Path) -> str | None:
    stem = path.stem.lower()
    for name in ("train", "validation", "test"):
        if stem == name or stem.startswith(name + "-"):
            return name
    return None


def _read_file(path: Path) -> list[Row]:
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"unsupported dataset file type {ext or '(none)'!r}: {path}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}."
        )
    try:
        if ext == ".csv":
            import pandas as pd

            # dtype=str: CSV has no types; prices are parsed where needed, and text stays text.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            return frame.to_dict("records")
        if ext == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
    except HarnessError:
        raise
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, malformed CSV/parquet
        raise DataError(f"cannot read dataset file {path}: {first_line(e)}.") from None
    except Exception as e:  # pandas/pyarrow parser errors have no common base class
        raise DataError(f"cannot read dataset file {path}: {type(e).__name__}: {first_line(e)}.") from None
    return _parse_json(text, path, lines=ext == ".jsonl")


def _parse_json(text: str, path: Path, lines: bool) -> list[Row]:
    if not lines:
        try:
            data = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as e:
            if "Extra data" not in e.msg:  # else: JSON Lines saved as .json (datasets' to_json does this)
                raise DataError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}.") from None
        except (ValueError, RecursionError) as e:  # a 5,000-digit number; arrays nested 100,000 deep
            raise DataError(f"{path}: unreadable JSON: {_why(e)}.") from None
        else:
            return _json_records(data, path)
    rows: list[Row] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: malformed JSON on line {i}: {e.msg}.") from None
        except (ValueError, RecursionError) as e:
            raise DataError(f"{path}: unreadable JSON on line {i}: {_why(e)}.") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {i} is not a JSON object.")
        rows.append(row)
    return rows


def _json_records(data: Any, path: Path) -> list[Row]:
    """A list of objects, or pandas' column layout `{"col": [...], ...}`."""
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) == 1:
            n = lengths.pop()
            return [{k: v[i] for k, v in data.items()} for i in range(n)]
    raise DataError(f"{path}: expected a list of objects (one per row) or JSON Lines.")


def _read_hub(source: str) -> dict[str, list[Row]]:
    import datasets

    try:
        loaded = datasets.load_dataset(source)
    except Exception as e:  # network, auth, unknown id: all mean "cannot get it", and all look different
        raise DataError(
            f"could not load dataset {source!r} from the Hugging Face hub ({type(e).__name__}: "
            f"{first_line(e)}); check the id and the network, or use a local .jsonl/.csv/.parquet file."
        ) from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded.to_list()}
    return {name: split.to_list() for name, split in loaded.items()}


def _why(e: BaseException) -> str:
    return "nested too deep" if isinstance(e, RecursionError) else first_line(e)


def first_line(e: BaseException) -> str:
    """An exception's first line, at most 300 characters: a parser may quote a whole (huge) line."""
    line = (str(e).strip().splitlines() or [""])[0].rstrip(".")
    return line if len(line) <= 300 else line[:300] + "..."
