"""`dataset.bad_rows`: a dataset with some bad rows (an empty or missing answer, a label that is not a
number, a value of the wrong type) is one error naming every one of them, before anything is written;
`drop` trains without them, says so, and the study records how many (user attr `dropped_rows`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from helpers import DPO_TINY, ROOT, FakeRecipe, sweep

from harness.cli import main
from harness.core import attrs, badrows
from harness.errors import DataError
from harness.sweepfile.load import load_sweep
from harness.trial.datasets import load_splits

TOPICS = [
    (
        "a haiku about autumn rain",
        "Cold rain on the roof;\nthe maple lets go its last\nred leaf to the stream.",
    ),
    ("why the sky is blue", "Air scatters short blue wavelengths of sunlight far more than red ones."),
    ("three tips for a job interview", "Research the company, prepare examples, and ask good questions."),
    ("what a prime number is", "A whole number above 1 whose only divisors are 1 and itself."),
    ("how to boil an egg", "Cover it with cold water, bring to a boil, then simmer for 9 minutes."),
    ("the capital of Australia", "Canberra is the capital of Australia."),
    ("a synonym for 'happy'", "Joyful."),
    ("what photosynthesis does", "It turns light, water and carbon dioxide into sugar and oxygen."),
]
VERBS = ["Explain", "Tell me", "Describe", "Write", "Give me"]


def instruction_pairs(n: int = 40) -> list[dict[str, str]]:
    """Preference pairs from instruction data: chosen answers the instruction, rejected does not."""
    rows = []
    for i in range(n):
        topic, answer = TOPICS[i % len(TOPICS)]
        verb = VERBS[(i // len(TOPICS)) % len(VERBS)]
        rows.append(
            {
                "prompt": f"### Instruction:\n{verb} {topic}.\n\n### Response:\n",
                "chosen": answer,
                "rejected": f"I am not sure about {topic}, sorry.",
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def dpo_argv(data: Path, results: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(ROOT / "sweeps/pricer-dpo.yaml"),
        "task=text",  # instruction data has no prices
        f"dataset.source={data}",
        f"results_dir={results}",
        "expect={}",
        "budget.n_trials=1",
        *DPO_TINY,
        *extra,
    ]


def test_empty_answers_in_preference_data_are_named_then_dropped(tmp_path, capsys):
    rows = instruction_pairs(40)
    rows[4]["chosen"] = ""
    rows[17]["rejected"] = "   "
    rows[29]["chosen"] = ""
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    results = tmp_path / "results"

    assert main(dpo_argv(data, results)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "3 of 40 rows cannot be used" in err
    assert "empty chosen: train rows 5, 30" in err and "empty rejected: train row 18" in err
    assert "counting from 1" in err and "dataset.bad_rows=drop" in err
    assert not results.exists(), "a bad dataset must write nothing, not even the results folder"

    assert main(dpo_argv(data, results, "dataset.bad_rows=drop")) == 0
    out = capsys.readouterr().out
    assert "pricer-dpo: dropped 3 of 40 rows (2 empty chosen, 1 empty rejected)" in out
    study = optuna.load_study(study_name="pricer-dpo", storage=f"sqlite:///{results}/pricer-dpo/study.db")
    assert attrs.dropped_rows(study) == {
        "rows": 40,
        "dropped": 3,
        "reasons": {"empty chosen": 2, "empty rejected": 1},
    }
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]


def test_a_list_valued_price_column_stops_the_sweep_before_anything_is_written(tmp_path, capsys):
    rows = [{"text": f"Desk lamp, brass, model {i}", "price": [10.0 + i]} for i in range(30)]
    rows += [{"text": f"Floor lamp, model {i}", "price": 20.0 + i} for i in range(30)]
    data = write_jsonl(tmp_path / "items.jsonl", rows)
    results = tmp_path / "results"
    argv = ["run", str(ROOT / "sweeps/pricer.yaml"), f"dataset.source={data}", f"results_dir={results}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "items.jsonl: 30 of 60 rows cannot be used" in err
    assert "price is a list: train rows 1, 2, 3" in err and "and 10 more" in err
    assert "Traceback" not in err and not results.exists()


# ----------------------------------------------------------------------------------------------------
# Every row shape names its bad rows (load_splits, no model)


def cfg_for(sweep: str, source: Path, *overrides: str):
    return load_sweep(ROOT / sweep, [f"dataset.source={source}", "results_dir=unused", *overrides])


def named_rows(message: str) -> set[tuple[str, int]]:
    """(split, row number) of every row the message names."""
    return {
        (split, int(n))
        for split, numbers in re.findall(r"(\w+) rows? (\d+(?:, \d+)*)", message)
        for n in numbers.split(", ")
    }


def error_of(cfg) -> str:
    with pytest.raises(DataError) as info:
        load_splits(cfg)
    return str(info.value)


def test_prompt_completion_rows(tmp_path):
    rows: list[dict[str, Any]] = [
        {"prompt": f"What is {i} + {i}?", "completion": str(2 * i)} for i in range(1, 61)
    ]
    rows[2]["completion"] = ""
    rows[9]["completion"] = None
    rows[11]["prompt"] = ["a", "list"]
    del rows[20]["completion"]
    rows[33]["completion"] = {"answer": 4}
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    message = error_of(cfg_for("sweeps/pricer.yaml", path, "task=text", "expect={}"))
    assert "5 of 60 rows cannot be used" in message
    for part in (
        "empty completion: train rows 3, 10",
        "prompt is a list: train row 12",
        "no completion: train row 21",
        "completion is a dict: train row 34",
    ):
        assert part in message
    splits = load_splits(cfg_for("sweeps/pricer.yaml", path, "task=text", "dataset.bad_rows=drop"))
    assert sum(len(s) for s in splits.as_dict().values()) == 55
    assert splits.dropped["dropped"] == 5


@pytest.mark.parametrize("ext", [".jsonl", ".parquet", ".csv"])
def test_pricer_text_and_price_rows_with_lists_nan_and_text_prices(tmp_path, ext):
    rows: list[dict[str, Any]] = [{"text": f"Desk lamp model {i}", "price": float(10 + i)} for i in range(60)]
    bad = {3: [12.5], 8: "n/a", 15: float("nan"), 22: -4.0, 40: float("inf"), 51: None}
    for i, value in bad.items():
        rows[i]["price"] = value
    rows[30]["text"] = ""
    path = tmp_path / f"items{ext}"
    if ext == ".jsonl":
        write_jsonl(path, rows)
    elif ext == ".parquet":  # one column holds one type: the prices as text, the list written out
        prices = [
            v if v is None else json.dumps(v) if isinstance(v, list) else str(v) for v in bad_prices(rows)
        ]
        pd.DataFrame({"text": [r["text"] for r in rows], "price": prices}).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    message = error_of(cfg_for("sweeps/pricer.yaml", path))
    assert "7 of 60 rows cannot be used" in message, message
    assert named_rows(message) == {("train", n) for n in (4, 9, 16, 23, 31, 41, 52)}
    assert "empty text: train row 31" in message
    assert "price not a number" in message
    splits = load_splits(cfg_for("sweeps/pricer.yaml", path, "dataset.bad_rows=drop"))
    assert splits.dropped["dropped"] == 7
    assert all(p > 0 for s in splits.as_dict().values() for p in s["price"])


def bad_prices(rows: list[dict[str, Any]]) -> list[Any]:
    return [r["price"] for r in rows]


def test_template_rows(tmp_path):
    rows: list[dict[str, Any]] = [
        {"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)} for i in range(50)
    ]
    rows[6]["output"] = ""
    rows[7]["output"] = ["8", "9"]
    del rows[44]["output"]  # ragged JSON: renders as "", an empty answer
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    template = (
        "dataset.template={prompt: '{instruction}\\n{input}\\n### Response:\\n', completion: '{output}'}"
    )
    message = error_of(cfg_for("sweeps/pricer.yaml", path, "task=text", "expect={}", template))
    assert "3 of 50 rows" in message
    assert "empty completion: train rows 7, 45" in message and "output is a list: train row 8" in message


def test_grpo_prompt_rows(tmp_path):
    rows: list[dict[str, Any]] = [{"prompt": f"Price of lamp {i}?", "price": 10.0 + i} for i in range(40)]
    rows[1]["prompt"] = "  "
    rows[2]["prompt"] = None
    rows[3]["price"] = [1, 2]
    path = write_jsonl(tmp_path / "prompts.jsonl", rows)
    message = error_of(cfg_for("sweeps/pricer-grpo.yaml", path))
    assert "empty prompt: train row 2" in message and "no prompt: train row 3" in message
    assert "price is a list: train row 4" in message


def test_bad_rows_of_every_split_in_one_error(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    pairs = instruction_pairs(30)
    write_jsonl(folder / "train.jsonl", [*pairs[:20], {"prompt": "p", "chosen": "c"}])
    write_jsonl(folder / "validation.jsonl", [pairs[20], {**pairs[21], "chosen": None}])
    write_jsonl(folder / "test.jsonl", [{**pairs[22], "rejected": 5}, *pairs[23:]])
    message = error_of(cfg_for("sweeps/pricer-dpo.yaml", folder, "task=text", "expect={}"))
    assert "3 of 31 rows cannot be used" in message
    assert "no rejected: train row 21" in message
    assert "no chosen: validation row 2" in message
    assert "rejected is a number: test row 1" in message


def test_many_bad_rows_are_capped_and_counted_and_the_message_stays_short(tmp_path):
    rows = [{"text": "x" * 10_000 + str(i), "price": "unknown" if i % 2 else 12.0} for i in range(400)]
    path = write_jsonl(tmp_path / "items.jsonl", rows)
    message = error_of(cfg_for("sweeps/pricer.yaml", path))
    assert message.count("train row") == 1 and message.count(", ") >= badrows.SHOWN - 1
    assert f"and {200 - badrows.SHOWN} more (200 in all: 200 price not a number)" in message
    assert len(message) < 2_000


def test_the_start_up_line_and_its_tally():
    figures = {"rows": 4000, "dropped": 3, "reasons": {"price not a number": 1, "empty completion": 2}}
    assert badrows.line("pricer", figures) == (
        "pricer: dropped 3 of 4000 rows (2 empty completion, 1 price not a number)"
    )
    assert badrows.line("pricer", {}) is None


def test_good_data_is_unchanged_and_drops_nothing(tmp_path):
    splits = load_splits(cfg_for("sweeps/pricer.yaml", Path("builtin:pricer")))
    assert splits.dropped == {} and len(splits.train) == 4000


@dataclass
class DroppingRecipe(FakeRecipe):
    """A fake recipe whose data left rows out: the study side reports and records what it says."""

    dropped: dict[str, Any] = field(default_factory=dict)

    def dropped_rows(self) -> dict[str, Any]:
        return self.dropped


def test_the_study_records_the_dropped_rows_and_a_later_clean_run_clears_them(tmp_path, capsys):
    from rich.console import Console

    from harness.study.run import run_sweep

    cfg = sweep(tmp_path, "budget.n_trials=1")
    figures = {"rows": 4000, "dropped": 3, "reasons": {"empty completion": 2, "price not a number": 1}}
    outcome = run_sweep(cfg, recipe=DroppingRecipe(lr_weight=0, dropped=figures), console=Console())
    assert attrs.dropped_rows(outcome.study) == figures
    assert (
        "pricer: dropped 3 of 4000 rows (2 empty completion, 1 price not a number)" in capsys.readouterr().out
    )
    again = run_sweep(cfg, recipe=DroppingRecipe(lr_weight=0), console=Console())
    assert attrs.dropped_rows(again.study)["dropped"] == 0
    assert "dropped" not in capsys.readouterr().out
    plain = run_sweep(sweep(tmp_path / "other", "budget.n_trials=1"), recipe=FakeRecipe(), console=Console())
    assert attrs.DROPPED_ROWS not in plain.study.user_attrs  # good data: nothing new in the study
