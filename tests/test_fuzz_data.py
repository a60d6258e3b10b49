"""Fuzzing the data path (issue 26): dataset files a user could hand harness, of every row shape and file
type, with wrong types, empty cells, missing columns, lists in the label column, NaN/inf prices, huge
strings and unicode, and files that are not what their extension says. `load_splits` on each may only
succeed or raise a HarnessError with a message under 20 kB: never another exception.

Seeded and bounded (`derandomize=True`, no example database): the same examples on every run, part of
`make test`. `pytest tests/test_fuzz_data.py -p no:xdist --hypothesis-show-statistics`, one core, Dec 2026:
- test_dataset_files_...: 500 examples (199 loaded, 301 one HarnessError), 16 s;
- test_broken_files_...: 300 examples (23 loaded, 277 one HarnessError), 1 s;
the whole file 18 s (22 s with start-up). At HEAD before issue 26 the first property failed with a
ValueError from the chat template (an assistant turn with nothing before it), the parser cases with a
RecursionError and a ValueError, and a list-valued parquet price column trained.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError
from harness.sweepfile.load import load_sweep
from harness.trial.datasets import load_splits

MAX_MESSAGE = 20_000
# Splits carved by hash from a few dozen rows: large shares, so that most files get as far as the rows.
SMALL = ["dataset.validation_fraction=0.3", "dataset.test_fraction=0.3"]
EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")

# Each row shape the loader knows, as (sweep file, overrides, the columns a good row has).
TEMPLATE = "dataset.template={prompt: '{instruction}\\n{input}\\n### Response:\\n', completion: '{output}'}"
SHAPES: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    "pricer": ("sweeps/pricer.yaml", [], ("text", "price")),
    "pricer-prompt-completion": ("sweeps/pricer.yaml", [], ("prompt", "completion", "price")),
    "text": ("sweeps/pricer.yaml", ["task=text", "expect={}"], ("prompt", "completion")),
    "template": (
        "sweeps/pricer.yaml",
        ["task=text", "expect={}", TEMPLATE],
        ("instruction", "input", "output"),
    ),
    "chat": ("sweeps/pricer.yaml", ["task=text", "expect={}"], ("messages",)),
    "response-template": (
        "sweeps/pricer.yaml",
        ["task=text", "expect={}", "training.response_template='### Answer:'"],
        ("text",),
    ),
    "dpo": ("sweeps/pricer-dpo.yaml", ["task=text", "expect={}"], ("prompt", "chosen", "rejected")),
    "dpo-pricer": ("sweeps/pricer-dpo.yaml", [], ("prompt", "chosen", "rejected", "price")),
    "grpo": ("sweeps/pricer-grpo.yaml", [], ("prompt", "price")),
}

# ----------------------------------------------------------------------------------------------------
# Values: good ones for each column, and every kind of wrong one

words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24)
prose = st.builds(lambda a, b: f"{a} {b}", words, words)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": prose}),
    min_size=1,
    max_size=3,
)


def good(column: str) -> st.SearchStrategy[Any]:
    if column == "price":
        return st.floats(1, 5000, allow_nan=False)
    if column == "messages":
        return messages.map(lambda m: [*m, {"role": "assistant", "content": "fine"}])
    if column == "text":
        return st.builds(lambda p: f"{p}\n### Answer: yes", prose)
    return prose


wrong = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "\n\t", "n/a", "NaN", "inf", "-5", "$-3", "[12.5]", "{}", "0", "1e999"]),
    st.sampled_from(["x" * 300_000, "€" * 100_000, "\U0001f600" * 50_000, "\u200b\u202e\ufeff", "\ud800"]),
    words,
    st.lists(st.one_of(st.integers(0, 99), st.floats(0, 99), words), max_size=3),
    st.dictionaries(words, st.one_of(st.integers(0, 9), words), max_size=2),
    messages,
    st.lists(st.fixed_dictionaries({"content": words}), min_size=1, max_size=2),  # messages without roles
)


@st.composite
def rows_of(draw: st.DrawFn, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """Mostly good rows with some cells wrong, empty or missing; sometimes a column missing entirely or
    one more column; sometimes too few rows to split."""
    n = draw(st.integers(0, 40))
    missing = draw(st.sets(st.sampled_from(columns), max_size=1)) if draw(st.booleans()) else set()
    extra = draw(st.sampled_from([None, "id", "price", "meta", "completion"]))
    bad_share = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.0]))
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {}
        for c in columns:
            if c in missing:
                continue
            roll = draw(st.floats(0, 1))
            if roll < bad_share / 2:
                continue  # the key is absent from this row (ragged JSON; an empty cell elsewhere)
            row[c] = draw(wrong if roll < bad_share else good(c))
        if extra is not None and extra not in row:
            row[extra] = draw(st.one_of(good("price"), wrong))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------
# Files


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    """rows -> a file of `path`'s type, as a user's tool would write them; what a format cannot hold is
    written as the text a tool would put there instead (json.dumps)."""
    ext = path.suffix
    if ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif ext == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif ext == ".csv":  # as pandas' to_csv writes cells, keeping what it cannot encode (a lone surrogate)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", encoding="utf-8", errors="surrogatepass", newline="") as f:
            out = csv.writer(f)
            out.writerow(columns)
            out.writerows([_cell(r.get(c)) for c in columns] for r in rows)
    else:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        arrays = {c: _arrow([r.get(c) for r in rows]) for c in columns}
        pq.write_table(pa.table(arrays) if arrays else pa.table({"empty": pa.array([], pa.null())}), path)


def _cell(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _arrow(values: list[Any]) -> pa.Array:
    """The column pyarrow infers (lists and dicts become nested columns), else its values as JSON text."""
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())


_CONFIGS: dict[tuple[str, str], Any] = {}
_TOKENIZER: list[Any] = []


def config(workdir: Path, shape: str, ext: str):
    """The sweep config of a row shape reading workdir/data<ext> (loaded once: the file changes, not it)."""
    key = (shape, ext)
    if key not in _CONFIGS:
        sweep, overrides, _ = SHAPES[shape]
        source = workdir / f"data{ext}"
        _CONFIGS[key] = load_sweep(
            ROOT / sweep,
            [f"dataset.source={source}", f"results_dir={workdir / 'results'}", *SMALL, *overrides],
        )
    return _CONFIGS[key]


def with_bad_rows(cfg, policy: str):
    return cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"bad_rows": policy})})


def tokenizer() -> Any:
    """A tokenizer with a chat template (chat rows and conversational pairs are rendered with it)."""
    if not _TOKENIZER:
        from harness.builtin.tiny_model import train_tokenizer

        _TOKENIZER.append(train_tokenizer([f"hello there number {i}" for i in range(50)]))
    return _TOKENIZER[0]


def loads_or_fails_cleanly(cfg) -> str:
    """load_splits succeeds, or raises a HarnessError with a short message; anything else propagates."""
    try:
        splits = load_splits(cfg, tokenizer=tokenizer())
    except HarnessError as e:
        message = str(e)
        assert message.strip() and len(message) < MAX_MESSAGE, message[:2000]
        return "error"
    for ds in splits.as_dict().values():  # what came out is what the trainers read
        assert len(ds) > 0
        assert all(isinstance(p, str) and p.strip() for p in ds["prompt"])
        if cfg.task == "pricer":  # the label: a positive finite number on every row
            assert all(math.isfinite(p) and p > 0 for p in ds["price"])
    return "ok"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-data")


FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@settings(FUZZ, max_examples=500)
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    ext=st.sampled_from(EXTENSIONS),
    data=st.data(),
    bad_rows=st.sampled_from(["error", "drop"]),
)
def test_dataset_files_load_or_fail_with_one_short_harness_error(workdir, shape, ext, data, bad_rows):
    rows = data.draw(rows_of(SHAPES[shape][2]), label="rows")
    path = workdir / f"data{ext}"
    write(path, rows)
    loads_or_fails_cleanly(with_bad_rows(config(workdir, shape, ext), bad_rows))


def _valid_file(ext: str, workdir: Path) -> bytes:
    path = workdir / f"valid{ext}"
    write(path, [{"text": f"A lamp, model {i}", "price": 10.0 + i} for i in range(30)])
    return path.read_bytes()


@settings(FUZZ, max_examples=300)
@given(
    ext=st.sampled_from(EXTENSIONS),
    cut=st.one_of(st.just(1.0), st.floats(0, 1)),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
    prefix=st.one_of(st.just(b""), st.binary(max_size=64)),
    bad_rows=st.sampled_from(["error", "drop"]),
)
def test_broken_files_are_one_harness_error(workdir, ext, cut, flips, prefix, bad_rows):
    """A valid pricer file truncated, with bytes overwritten, or with junk in front: a file a crashed
    export or a wrong extension leaves behind."""
    blob = bytearray(_valid_file(ext, workdir))
    for where, byte in flips:
        blob[int(where * (len(blob) - 1))] = byte
    blob = prefix + blob[: max(1, int(cut * len(blob)))] if cut < 0.98 else prefix + blob
    (workdir / f"data{ext}").write_bytes(bytes(blob))
    loads_or_fails_cleanly(with_bad_rows(config(workdir, "pricer", ext), bad_rows))


@pytest.mark.parametrize(
    "ext, content",
    [
        (".json", "[" * 100_000 + "]" * 100_000),  # nested deeper than the parser's recursion
        (".jsonl", '{"text": "a", "price": ' + "9" * 5000 + "}\n"),  # past Python's int digit limit
        (".json", '{"text": ["a", "b"], "price": [1]}'),  # pandas' column layout, ragged
        (".csv", "text,price\n" + '"unterminated, 5\n' * 3),
        (".parquet", "PAR1 not really"),
    ],
    ids=["deep-json", "huge-int", "ragged-columns", "csv-quote", "fake-parquet"],
)
def test_files_the_parsers_choke_on_are_one_harness_error(workdir, ext, content):
    (workdir / f"data{ext}").write_text(content, encoding="utf-8")
    assert loads_or_fails_cleanly(config(workdir, "pricer", ext)) == "error"


def test_a_nested_parquet_price_column_is_named_row_by_row(workdir):
    path = workdir / "data.parquet"
    table = pa.table({"text": [f"lamp {i}" for i in range(40)], "price": [[float(i)] for i in range(40)]})
    pq.write_table(table, path)
    with pytest.raises(HarnessError, match=r"no usable rows: all 40 rows are bad .*price is a list"):
        load_splits(config(workdir, "pricer", ".parquet"))
