"""Datasets for a sweep: source -> rows -> prompt/completion -> train/validation/test.

`load_splits(cfg)` is the only way in. Sources are the builtin pricer data, local files (or a folder of
them) and hub ids. Row shapes are detected from the columns, in this order: an explicit
`dataset.template`; `prompt`/`completion` columns; a chat `messages` column; a single `text` column cut at
`training.response_template`; then the task's own columns (harness.tasks: the pricer's `text`/`price`).
Every split comes out with string `prompt` and `completion` columns (and the task's float label column,
the pricer's `price`), so the recipe never needs to know where the data came from.

Rows are handled as plain dicts: sweep datasets are small enough, and it keeps the hashing and the
error messages simple and deterministic.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, Features, Value

from harness import tasks
from harness.core import badrows
from harness.errors import DataError
from harness.sweepfile.schema import SweepConfig
from harness.trial import formats, sources

Row = dict[str, Any]
# Turns a source row into a prompt/completion row, or into a short reason it cannot be used.
Formatter = Callable[[Row], "Row | str"]


@dataclass(frozen=True)
class Splits:
    train: Dataset
    validation: Dataset
    test: Dataset
    dropped: dict[str, Any] = field(default_factory=dict)
    """The bad rows left out under `dataset.bad_rows: drop` (harness.core.badrows figures); {} for none."""

    def as_dict(self) -> dict[str, Dataset]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def load_splits(cfg: SweepConfig, tokenizer: Any | None = None) -> Splits:
    """Load, format and split `cfg.dataset`. `tokenizer` is only needed for chat (`messages`) data."""
    raw, where = sources.read(cfg)
    if not any(raw.values()):
        raise DataError(f"{where} has no rows.")
    ds = cfg.dataset
    if ds.train_split in raw:
        train_raw = raw[ds.train_split]
    elif len(raw) == 1:  # one unnamed split (a single file, or a hub dataset with one split)
        train_raw = next(iter(raw.values()))
    else:
        raise DataError(
            f"{where} has no split {ds.train_split!r} (found splits: {', '.join(raw)}); "
            "set dataset.train_split."
        )
    # Every split is formatted before anything is decided: one error names every bad row of all of them.
    bad = badrows.BadRows()
    formatted: dict[str, list[Row]] = {}
    done: dict[int, list[Row]] = {}  # one unnamed split may also be read as validation: format it once
    for name in (ds.train_split, ds.validation_split, ds.test_split):
        rows = train_raw if name == ds.train_split else raw.get(name)
        if rows and name not in formatted:
            if id(rows) not in done:
                done[id(rows)] = _format_rows(rows, cfg, tokenizer, where, bad, _split_name(name, raw))
            formatted[name] = done[id(rows)]
    if bad and ds.bad_rows == "error":
        raise bad.error(where)
    train = formatted[ds.train_split]
    # A split the source lacks (or has empty) is carved out of train below, by hash.
    validation, test = (formatted.get(name) for name in (ds.validation_split, ds.test_split))
    train, validation, test = _carve(train, validation, test, ds.validation_fraction, ds.test_fraction)
    if ds.max_train_rows is not None and len(train) > ds.max_train_rows:
        train = _subset(train, ds.max_train_rows)
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        if not rows:
            fix = "add rows" if name == "train" else f"add rows, raise dataset.{name}_fraction, or provide it"
            raise DataError(
                f"{where}: the {name} split is empty after splitting {len(train_raw)} rows; {fix}."
            )
    label = tasks.get(cfg.task).label
    train_ds, validation_ds, test_ds = (
        _to_dataset(rows, label, cfg.trainer, where) for rows in (train, validation, test)
    )
    return Splits(train_ds, validation_ds, test_ds, dropped=bad.figures() if bad else {})


def _split_name(name: str, raw: dict[str, list[Row]]) -> str:
    """The name a user knows a split by: the source's own (one unnamed split is `train`)."""
    return name if name in raw else next(iter(raw), name)


# ----------------------------------------------------------------------------------------------------
# Row shapes -> prompt/completion


def _format_rows(
    rows: list[Row], cfg: SweepConfig, tokenizer: Any, where: str, bad: badrows.BadRows, split: str
) -> list[Row]:
    """The rows that can be used, formatted; each one that cannot goes into `bad` with its reason."""
    ds, task = cfg.dataset, tasks.get(cfg.task)
    cols = formats.columns(rows)
    found = f"found columns: {', '.join(cols) or 'none'}"
    if cfg.trainer != "sft":
        fmt: Formatter | None = None
        items = task.labelled(formats.format_rows(rows, cfg.trainer, ds.format, tokenizer, where), ds)
    elif ds.template is not None:
        fmt = _template_formatter(ds.template.prompt, ds.template.completion, cols, where, found)
    elif "prompt" in cols and "completion" in cols:
        fmt = _passthrough
    elif ds.messages_column in cols:
        fmt = _chat_formatter(ds.messages_column, tokenizer, where)
    elif cfg.training.response_template and ds.text_column in cols:
        fmt = _response_template_formatter(ds.text_column, cfg.training.response_template, rows, where)
    elif (own := task.formatter(ds, cols)) is not None:  # the task's own columns (pricer: text, price)
        fmt = own
    else:
        raise DataError(
            f"{where} lacks the columns to build prompts: it needs 'prompt' and 'completion', "
            f"{task.columns_hint(ds)}{ds.messages_column!r} (chat), {ds.text_column!r} with "
            "training.response_template, "
            f"or a dataset.template; {found}."
        )
    if fmt is not None:
        items = [_labelled(fmt(row), row, task, ds) for row in rows]

    out: list[Row] = []
    before = len(bad.found)
    bad.rows += len(rows)
    for i, item in enumerate(items):
        reason = item if isinstance(item, str) else _unusable(item, cfg.trainer != "grpo")
        if reason:
            bad.add(split, i, reason)
        else:
            out.append(item)  # type: ignore[arg-type]
    if rows and not out and ds.bad_rows == "drop":
        reasons = badrows.tally(Counter(b.reason for b in bad.found[before:]))
        raise DataError(f"{where}: no usable rows left after filtering {len(rows)} rows ({reasons}).")
    return out


def _labelled(item: Row | str, row: Row, task: tasks.Task, ds: Any) -> Row | str:
    """An SFT row with the task's label (pricer: price) set, or why it has none."""
    if isinstance(item, str) or task.label is None:
        return item
    value = task.label_of(item, row, ds)
    return value if isinstance(value, str) else {**item, task.label: value}


def _unusable(item: Row, needs_answer: bool) -> str:
    """Why a formatted row cannot be trained on ('' when it can): an empty side, or text no file can hold."""
    for key in ("prompt", "completion") if needs_answer else ("prompt",):
        value = item.get(key)
        if not (isinstance(value, str) and value.strip()):
            return f"empty {key}"
    for key in ("prompt", "completion", *formats.PREFERENCE):
        value = item.get(key)
        if isinstance(value, str) and not _encodable(value):
            return f"{key} is not valid Unicode (a lone surrogate)"
    return ""


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _passthrough(row: Row) -> Row | str:
    for key in ("prompt", "completion"):
        if key not in row:
            return f"no {key}"
        if _structured(row[key]):
            return f"{key} is {badrows.kind(row[key])}"
    return {"prompt": _text(row.get("prompt")), "completion": _text(row.get("completion"))}


def _template_formatter(prompt: str, completion: str, cols: list[str], where: str, found: str) -> Formatter:
    whole: set[str] = set()  # columns the template spells out whole: {output}, not {meta[title]}
    for which, text in (("prompt", prompt), ("completion", completion)):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as e:
            raise DataError(f"dataset.template.{which} is not a valid format string: {e}.") from None
        for name_field in fields:
            name = re.split(r"[.\[]", name_field, maxsplit=1)[0]
            if not name or name.isdigit():
                raise DataError(f"dataset.template.{which} must name columns, like {{instruction}}.")
            if name not in cols:
                raise DataError(f"{where} has no column {name!r} used by dataset.template.{which}; {found}.")
            if name == name_field:
                whole.add(name)

    def fmt(row: Row) -> Row | str:
        # A key absent from this row only (ragged JSON) or null renders as "", like an empty CSV cell.
        values = {c: "" for c in cols} | {k: _text(v) if _missing(v) else v for k, v in row.items()}
        wrong = next((c for c in sorted(whole) if _structured(values[c])), None)
        if wrong is not None:  # a whole column spelled into the text: {meta[title]} may index into one
            return f"{wrong} is {badrows.kind(values[wrong])}"
        try:
            return {"prompt": prompt.format_map(values), "completion": completion.format_map(values)}
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
            return f"dataset.template cannot format it ({type(e).__name__})"

    return fmt


def _chat_formatter(column: str, tokenizer: Any, where: str) -> Formatter:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"{where} has a chat column {column!r} but the model's tokenizer has no chat template; "
            "use a chat model, or give the data prompt/completion columns."
        )
    # The trainer's tokenizer adds BOS itself; a template that also writes it would double it.
    bos = getattr(tokenizer, "bos_token", None)
    ids = tokenizer("x")["input_ids"]
    strip_bos = bool(bos) and bool(ids) and ids[0] == getattr(tokenizer, "bos_token_id", None)

    def fmt(row: Row) -> Row | str:
        messages = row.get(column)
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in messages
        ):
            return "malformed messages"
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            return "no assistant turn"
        if last == 0:
            return "no turn before the assistant's"
        try:
            prompt = tokenizer.apply_chat_template(
                messages[:last], tokenize=False, add_generation_prompt=True
            )
            full = tokenizer.apply_chat_template(messages[: last + 1], tokenize=False)
        except Exception:  # noqa: BLE001 - a chat template is user code (jinja): the row is bad
            return "messages the chat template cannot render"
        # Taking the completion from the rendered text keeps the template's end-of-turn markers.
        completion = full[len(prompt) :] if full.startswith(prompt) else _text(messages[last]["content"])
        if strip_bos and bos and prompt.startswith(bos):
            prompt = prompt[len(bos) :]
        return {"prompt": prompt, "completion": completion}

    return fmt


def _response_template_formatter(column: str, template: str, rows: list[Row], where: str) -> Formatter:
    if not any(template in _text(r.get(column)) for r in rows):
        raise DataError(
            f"{where}: training.response_template {template!r} occurs in no row of column {column!r}."
        )

    def fmt(row: Row) -> Row | str:
        if _structured(row.get(column)):
            return f"{column} is {badrows.kind(row.get(column))}"
        text = _text(row.get(column))
        cut = text.find(template)
        if cut < 0:
            return "no response template"
        cut += len(template)
        return {"prompt": text[:cut], "completion": text[cut:]}

    return fmt


def _text(value: Any) -> str:
    """A cell as text: null and NaN (pandas' and parquet's empty cell) are ""."""
    return "" if _missing(value) else str(value)


def _structured(value: Any) -> bool:
    """A list, dict or bytes: never text to train on, whatever str() would make of it."""
    return isinstance(value, (list, tuple, dict, bytes, bytearray))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ----------------------------------------------------------------------------------------------------
# Splitting


def _position(row: Row) -> float:
    """A stable number in [0, 1) from the formatted content (hashlib: the same on every run and machine).

    Hashing prompt+completion, not the raw row, keeps duplicates that differ only in an id column in the
    same split (no leakage), and a row's split never changes when other rows are added.
    """
    digest = hashlib.sha256(f"{row['prompt']}\x00{row['completion']}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _carve(
    train: list[Row], validation: list[Row] | None, test: list[Row] | None, val_frac: float, test_frac: float
) -> tuple[list[Row], list[Row], list[Row]]:
    """Take the missing validation/test splits out of train by hash position."""
    if validation is not None and test is not None:
        return train, validation, test
    # Positions [0, test_hi) go to test and [test_hi, val_hi) to validation, for whichever is missing.
    test_hi = test_frac if test is None else 0.0
    val_hi = test_hi + (val_frac if validation is None else 0.0)
    keep: list[Row] = []
    new_val: list[Row] = []
    new_test: list[Row] = []
    for row in train:
        u = _position(row)
        (new_test if u < test_hi else new_val if u < val_hi else keep).append(row)
    return keep, validation if validation is not None else new_val, test if test is not None else new_test


def _subset(rows: list[Row], n: int) -> list[Row]:
    """The n rows with the lowest hash position, in their original order: stable and nested in n."""
    chosen = sorted(range(len(rows)), key=lambda i: (_position(rows[i]), i))[:n]
    return [rows[i] for i in sorted(chosen)]


def seeded_subset(ds: Any, n: int, seed: int) -> list[Row]:
    """A fixed, seeded subset of a split, as rows: the same rows for every trial, so trials are compared
    on equal terms (fixtures: the eval-loss and generation subsets)."""
    idx = list(range(len(ds)))
    random.Random(seed).shuffle(idx)
    return [ds[i] for i in sorted(idx[:n])]


def generation_subset(validation: Any, cfg: SweepConfig) -> list[Row]:
    """The validation rows generation metrics are measured on (`evaluation.samples` of them, before the
    truncation rule's fit filter); harness.tasks.baselines scores the task baselines on the same rows."""
    return seeded_subset(validation, cfg.evaluation.samples, cfg.seed + 1)


def _to_dataset(rows: list[Row], label: str | None, trainer: str = "sft", where: str = "") -> Dataset:
    columns: dict[str, list[Any]] = {
        "prompt": [r["prompt"] for r in rows],
        "completion": [r["completion"] for r in rows],
    }
    features = {"prompt": Value("string"), "completion": Value("string")}
    if label is not None:  # the task's label (pricer: price)
        columns[label] = [float(r[label]) for r in rows]
        features[label] = Value("float64")
    if trainer == "sft":
        return Dataset.from_dict(columns, features=Features(features))
    # dpo: chosen/rejected; grpo: the columns reward functions read (their types inferred from the rows)
    extra = [c for c in formats.columns(rows) if c not in columns]
    ds = Dataset.from_dict(columns, features=Features(features))
    for c in extra:
        values = [r.get(c) for r in rows]
        try:
            ds = ds.add_column(c, values)
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for mixed or odd types share no base class
            kinds = ", ".join(sorted({badrows.kind(v) for v in values if v is not None}))
            raise DataError(
                f"{where}: column {c!r} cannot be stored as one column ({kinds} across rows; "
                f"{type(e).__name__}); give it one type in every row, or remove it."
            ) from None
    return ds
