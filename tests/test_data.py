"""harness.trial.datasets and the pricer generator: real files in tmp_path, no network."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from harness.builtin import BUILTIN_DATASET, generate_products, pricer_splits
from harness.errors import DataError
from harness.sweepfile.schema import SweepConfig
from harness.tasks.pricer import QUESTION, RESPONSE, format_prompt
from harness.trial.datasets import load_splits


def make_cfg(source: str | Path, task: str = "text", source_path: Path | None = None, **sections: Any):
    """A SweepConfig around a dataset source; extra dataset keys go in `dataset`, others as given."""
    training = sections.pop("training", {})
    data: dict[str, Any] = {
        "name": "t",
        "task": task,
        "dataset": {"source": str(source), **sections},
        "training": training,
    }
    if source_path is not None:
        data["source_path"] = str(source_path)
    return SweepConfig.model_validate(data)


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows to .jsonl/.json/.csv/.parquet by extension."""
    ext = path.suffix
    if ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif ext == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif ext == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif ext == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text("\n".join(map(str, rows)), encoding="utf-8")
    return path


def qa_rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"prompt": f"Question {i}: what is {i} plus {i}?\n", "completion": str(2 * i)}
        for i in range(start, n)
    ]


def all_rows(splits) -> list[tuple[str, str]]:
    return [(r["prompt"], r["completion"]) for ds in splits.as_dict().values() for r in ds]


# ----------------------------------------------------------------------------------------------------
# The generator


def test_generator_is_deterministic_per_seed():
    assert generate_products(200, seed=3) == generate_products(200, seed=3)
    assert [p["text"] for p in generate_products(50, 3)] != [p["text"] for p in generate_products(50, 4)]


def test_generator_matches_golden_digest():
    # Pins the output across machines and Python versions. If you change the generator on purpose,
    # update the digest AND rebuild the builtin base (`make base`: its corpus comes from this generator).
    blob = json.dumps(generate_products(50, seed=0), sort_keys=True).encode()
    assert hashlib.sha256(blob).hexdigest()[:16] == "be2736dc3b4cc0f5"


def test_products_look_like_listings_with_learnable_prices():
    rows = generate_products(3000, seed=1)
    prices = [r["price"] for r in rows]
    assert min(prices) >= 5 and max(prices) <= 999
    assert all(p == round(p) for p in prices)
    assert len({r["category"] for r in rows}) == 10
    words = [len(r["text"].split()) for r in rows]
    assert 15 <= min(words) and max(words) <= 50
    assert all(r["brand"] in r["text"] for r in rows)

    def mean(tier: str) -> float:
        return statistics.mean(r["price"] for r in rows if r["tier"] == tier)

    assert mean("premium") > 1.25 * mean("standard") and mean("standard") > 1.25 * mean("budget")
    by_cat = {
        c: statistics.median(r["price"] for r in rows if r["category"] == c) for c in ("furniture", "books")
    }
    assert by_cat["furniture"] > 3 * by_cat["books"]
    # Noise is ~12%, so the same product type spans a range rather than one price.
    assert len(set(prices)) > 300


def test_pricer_splits_are_fixed_and_disjoint():
    splits = pricer_splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 4000, "validation": 500, "test": 500}
    assert splits == pricer_splits(seed=0)
    texts = {k: {r["text"] for r in v} for k, v in splits.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]


# ----------------------------------------------------------------------------------------------------
# builtin:pricer through load_splits


def test_builtin_pricer_rows_have_the_course_format():
    splits = load_splits(make_cfg(BUILTIN_DATASET, task="pricer"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (4000, 500, 500)
    assert splits.train.column_names == ["prompt", "completion", "price"]
    assert splits.train.features["price"].dtype == "float64"
    for row in splits.test.select(range(50)):
        assert row["prompt"].startswith(QUESTION + "\n\n")
        assert row["prompt"].endswith("\n\nPrice is $")
        dollars, cents = row["completion"].split(".")
        assert cents == "00" and float(dollars) == row["price"]
    description = pricer_splits()["train"][0]["text"]
    assert splits.train[0]["prompt"] == format_prompt(description)


def test_builtin_for_text_task_has_no_price_and_max_train_rows_is_a_stable_subset():
    small = load_splits(make_cfg(BUILTIN_DATASET, max_train_rows=100))
    larger = load_splits(make_cfg(BUILTIN_DATASET, max_train_rows=300))
    assert small.train.column_names == ["prompt", "completion"]
    assert len(small.train) == 100 and len(larger.train) == 300
    assert set(small.train["prompt"]) <= set(larger.train["prompt"])
    assert len(small.validation) == 500  # only train is capped


# ----------------------------------------------------------------------------------------------------
# Local files


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv", ".parquet"])
def test_local_prompt_completion_files(tmp_path: Path, ext: str):
    path = write(tmp_path / f"qa{ext}", qa_rows(200))
    splits = load_splits(make_cfg(path))
    assert sorted(all_rows(splits)) == sorted((r["prompt"], r["completion"]) for r in qa_rows(200))
    for ds in splits.as_dict().values():
        assert ds.column_names == ["prompt", "completion"] and len(ds) > 0


def test_relative_source_resolves_beside_the_sweep_file(tmp_path: Path):
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "qa.jsonl", qa_rows(100))
    cfg = make_cfg("data/qa.jsonl", source_path=tmp_path / "sweep.yaml")
    assert len(load_splits(cfg).train) > 50


def test_folder_with_named_splits_carves_only_the_missing_one(tmp_path: Path):
    write(tmp_path / "train.jsonl", qa_rows(300))
    write(tmp_path / "test.jsonl", qa_rows(320, start=300))
    splits = load_splits(make_cfg(tmp_path))
    assert len(splits.test) == 20  # the file's own test split, untouched
    assert len(splits.train) + len(splits.validation) == 300
    assert 10 <= len(splits.validation) <= 60  # ~10% of 300 by hash


def test_hashed_splits_are_stable_disjoint_and_survive_added_rows(tmp_path: Path):
    first = load_splits(make_cfg(write(tmp_path / "a.jsonl", qa_rows(1000))))
    again = load_splits(make_cfg(write(tmp_path / "b.jsonl", qa_rows(1000))))
    assert first.as_dict().keys() == again.as_dict().keys()
    for name in ("train", "validation", "test"):
        assert first.as_dict()[name].to_list() == again.as_dict()[name].to_list()
    sets = [set(ds["prompt"]) for ds in first.as_dict().values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, sets)) == 1000
    assert 60 <= len(first.validation) <= 140 and 60 <= len(first.test) <= 140

    grown = load_splits(make_cfg(write(tmp_path / "c.jsonl", qa_rows(1500))))
    for name in ("train", "validation", "test"):
        assert set(first.as_dict()[name]["prompt"]) <= set(grown.as_dict()[name]["prompt"])


def test_alpaca_template(tmp_path: Path):
    rows = [
        {"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else f"x={i}", "output": str(2 * i)}
        for i in range(100)
    ]
    path = write(tmp_path / "alpaca.csv", rows)
    template = {
        "prompt": "### Instruction:\n{instruction}\n### Input:\n{input}\n### Response:\n",
        "completion": "{output}",
    }
    splits = load_splits(make_cfg(path, template=template))
    got = {
        r["prompt"]: r["completion"]
        for r in splits.train.to_list() + splits.test.to_list() + splits.validation.to_list()
    }
    assert got["### Instruction:\nAdd 4 and 4.\n### Input:\nx=4\n### Response:\n"] == "8"
    assert got["### Instruction:\nAdd 3 and 3.\n### Input:\n\n### Response:\n"] == "6"  # empty CSV cell


def test_template_naming_a_missing_column_says_which(tmp_path: Path):
    path = write(tmp_path / "alpaca.jsonl", [{"instruction": "a", "output": "b"}] * 20)
    with pytest.raises(DataError, match=r"no column 'input'.*found columns: instruction, output"):
        load_splits(make_cfg(path, template={"prompt": "{instruction} {input}", "completion": "{output}"}))


def test_text_column_split_at_response_template(tmp_path: Path):
    rows = [{"text": f"Describe item {i}.\n### Answer: item {i} is fine"} for i in range(100)]
    rows.append({"text": "a row without the marker"})
    path = write(tmp_path / "text.jsonl", rows)
    with pytest.raises(
        DataError, match=r"1 of 101 rows cannot be used .*no response template: train row 101"
    ):
        load_splits(make_cfg(path, training={"response_template": "### Answer:"}))
    splits = load_splits(make_cfg(path, training={"response_template": "### Answer:"}, bad_rows="drop"))
    got = all_rows(splits)
    assert len(got) == 100  # the row without the marker is dropped
    assert splits.dropped == {"rows": 101, "dropped": 1, "reasons": {"no response template": 1}}
    assert ("Describe item 7.\n### Answer:", " item 7 is fine") in got


def test_response_template_found_nowhere_is_an_error(tmp_path: Path):
    path = write(tmp_path / "text.jsonl", [{"text": f"row {i}"} for i in range(30)])
    with pytest.raises(DataError, match=r"response_template '### Answer:' occurs in no row"):
        load_splits(make_cfg(path, training={"response_template": "### Answer:"}))


def test_pricer_from_csv_with_text_and_price_columns(tmp_path: Path):
    rows = [
        {"title": f"Lamp {i}", "description": f"A desk lamp, model {i}.", "cost": f"${i + 10},{i % 10}00.4"}
        for i in range(120)
    ]
    rows[0]["cost"] = "n/a"  # unusable price: an error naming the row, or dropped when asked
    path = write(tmp_path / "items.csv", rows)
    cfg = make_cfg(path, task="pricer", text_column="description", price_column="cost")
    with pytest.raises(DataError, match=r"items\.csv: 1 of 120 rows .*cost not a number: train row 1\. "):
        load_splits(cfg)
    cfg = make_cfg(path, task="pricer", text_column="description", price_column="cost", bad_rows="drop")
    splits = load_splits(cfg)
    by_prompt = {r["prompt"]: r for ds in splits.as_dict().values() for r in ds}
    assert len(by_prompt) == 119
    row = by_prompt[format_prompt("A desk lamp, model 5.")]
    assert row["price"] == pytest.approx(15500.4)
    assert row["completion"] == "15500.00"
    assert row["prompt"].endswith(RESPONSE)


def test_pricer_prompt_completion_file_without_price_column_parses_the_completion(tmp_path: Path):
    rows = [{"prompt": f"{format_prompt(f'Thing {i}')}", "completion": f"{i + 5}.00"} for i in range(80)]
    splits = load_splits(make_cfg(write(tmp_path / "p.jsonl", rows), task="pricer"))
    for r in splits.train:
        assert r["price"] == float(r["completion"])


def test_chat_messages_rendered_with_the_tokenizer_chat_template(tmp_path: Path):
    from harness.builtin.tiny_model import train_tokenizer

    tokenizer = train_tokenizer([f"hello there number {i}" for i in range(50)])
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Say {i}"},
                {"role": "assistant", "content": f"{i}"},
            ]
        }
        for i in range(60)
    ]
    rows.append({"messages": [{"role": "user", "content": "no answer"}]})
    path = write(tmp_path / "chat.jsonl", rows)
    with pytest.raises(DataError, match=r"no assistant turn: train row 61\. "):
        load_splits(make_cfg(path), tokenizer=tokenizer)
    splits = load_splits(make_cfg(path, bad_rows="drop"), tokenizer=tokenizer)
    got = dict(all_rows(splits))
    assert len(got) == 60
    prompt = "<|system|>\nBe brief.\n<|user|>\nSay 3\n<|assistant|>\n"
    assert got[prompt] == "3\n"

    with pytest.raises(DataError, match=r"chat column 'messages'.*no chat template"):
        load_splits(make_cfg(path))


def test_hub_dataset_ids_use_load_dataset(monkeypatch: pytest.MonkeyPatch):
    import datasets

    seen = []

    def fake_load(name: str, *args: Any, **kwargs: Any) -> DatasetDict:
        seen.append(name)
        return DatasetDict(train=Dataset.from_list(qa_rows(200)), test=Dataset.from_list(qa_rows(230, 200)))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    splits = load_splits(make_cfg("some-org/qa"))
    assert seen == ["some-org/qa"]
    assert len(splits.test) == 30 and len(splits.train) + len(splits.validation) == 200


def test_hub_failure_becomes_a_data_error(monkeypatch: pytest.MonkeyPatch):
    import datasets

    def offline(name: str, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"could not load dataset 'some-org/qa'.*ConnectionError"):
        load_splits(make_cfg("some-org/qa"))


# ----------------------------------------------------------------------------------------------------
# User errors: one DataError, naming the file and what is wrong


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match=r"dataset file not found: .*nope\.jsonl"):
        load_splits(make_cfg(tmp_path / "nope.jsonl"))


def test_unsupported_extension(tmp_path: Path):
    path = write(tmp_path / "data.txt", ["a", "b"])
    with pytest.raises(DataError, match=r"unsupported dataset file type '\.txt'.*data\.txt"):
        load_splits(make_cfg(path))


def test_folder_without_data_files(tmp_path: Path):
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(DataError, match=r"has no .json/.jsonl/.csv/.parquet files \(found: notes\.md\)"):
        load_splits(make_cfg(tmp_path))


def test_empty_dataset(tmp_path: Path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl has no rows"):
        load_splits(make_cfg(path))


def test_missing_columns_lists_what_was_found(tmp_path: Path):
    path = write(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}] * 10)
    with pytest.raises(DataError, match=r"odd\.jsonl lacks the columns.*found columns: question, answer"):
        load_splits(make_cfg(path))


def test_pricer_task_names_its_columns_when_missing(tmp_path: Path):
    path = write(tmp_path / "odd.csv", [{"text": "a lamp"}] * 10)
    with pytest.raises(DataError, match=r"'text' and 'price' \(pricer\).*found columns: text"):
        load_splits(make_cfg(path, task="pricer"))


def test_empty_after_filtering(tmp_path: Path):
    path = write(tmp_path / "items.csv", [{"text": f"lamp {i}", "price": "unknown"} for i in range(10)])
    with pytest.raises(
        DataError,
        match=r"no usable rows: all 10 rows are bad .*price not a number: train rows 1, 2, .*, 10\.",
    ):
        load_splits(make_cfg(path, task="pricer"))
    with pytest.raises(
        DataError, match=r"no usable rows left after filtering 10 rows \(10 price not a number\)"
    ):
        load_splits(make_cfg(path, task="pricer", bad_rows="drop"))


def test_too_few_rows_for_hashed_splits(tmp_path: Path):
    path = write(tmp_path / "one.jsonl", qa_rows(1))
    with pytest.raises(DataError, match=r"split is empty after splitting 1 rows"):
        load_splits(make_cfg(path))


def test_malformed_jsonl_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl: malformed JSON on line 2"):
        load_splits(make_cfg(path))


def test_unknown_builtin():
    with pytest.raises(DataError, match=r"unknown builtin dataset 'builtin:nope'; available: builtin:pricer"):
        load_splits(make_cfg("builtin:nope"))


def test_no_nan_prices_in_builtin():
    splits = load_splits(make_cfg(BUILTIN_DATASET, task="pricer"))
    assert all(math.isfinite(p) and p > 0 for p in splits.validation["price"])
