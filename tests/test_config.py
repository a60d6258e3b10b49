from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.errors import ConfigError
from harness.sweepfile.load import load_sweep
from harness.sweepfile.schema import SweepConfig

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    (tmp_path / "space.yaml").write_text("parameters:\n  r: {values: [4, 8]}\n")
    p = tmp_path / name
    p.write_text(text)
    return p


def test_minimal_file_gets_defaults_and_name_from_file(tmp_path):
    cfg = load_sweep(write(tmp_path, "search_space: space.yaml\n", "mysweep.yaml"))
    assert cfg.name == "mysweep" and cfg.task == "pricer" and cfg.metric.name == "eval_loss"
    assert cfg.parameters["r"].values == [4, 8]
    assert cfg.study_dir == Path("results/mysweep")


def test_dotted_overrides_are_typed(tmp_path):
    p = write(tmp_path, "search_space: space.yaml\n")
    cfg = load_sweep(p, ["budget.max_steps=20", "training.learning_rate=3e-4", "model.double_quant=false"])
    assert cfg.budget.max_steps == 20 and isinstance(cfg.budget.max_steps, int)
    assert cfg.training.learning_rate == 3e-4
    assert cfg.model.double_quant is False


def test_unknown_keys_name_the_closest_and_all_problems_are_listed(tmp_path):
    p = write(
        tmp_path,
        "search_space: space.yaml\nbudget: {n_trail: 3, max_steps: -1}\nmodle: {}\nmetric: {goal: up}\n",
    )
    with pytest.raises(ConfigError) as e:
        load_sweep(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: 4 problems")
    assert "budget.n_trail: unknown key (did you mean 'n_trials'?)" in msg
    assert "modle: unknown key (did you mean 'model'?)" in msg
    assert "budget.max_steps: Input should be greater than 0" in msg
    assert "metric.goal" in msg


@pytest.mark.parametrize(
    ("text", "overrides", "fragment"),
    [
        ("name: [oops\n", [], "malformed YAML at line"),
        ("- a\n- b\n", [], "expected a mapping"),
        ("search_space: space.yaml\n", ["budget"], "not of the form key.sub=value"),
        ("search_space: space.yaml\n", ["name=../evil"], "cannot be used as a folder name"),
        (
            "search_space: space.yaml\n",
            ["budget.n_trials=0"],
            "budget.n_trials: Input should be greater than 0",
        ),
        ("search_space: missing.yaml\n", [], "search_space: file not found"),
        ("{}\n", [], "the search space is empty"),
        ("search_space: space.yaml\nmetric: {name: maee}\n", [], "did you mean 'mae'"),
        ("search_space: space.yaml\ntask: text\nmetric: {name: mae}\n", [], "not reported by task 'text'"),
    ],
)
def test_bad_input_is_one_clear_config_error(tmp_path, text, overrides, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        load_sweep(write(tmp_path, text), overrides)
    assert fragment in str(e.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="sweep file not found"):
        load_sweep(tmp_path / "nope.yaml")


def test_configs_are_frozen(tmp_path):
    cfg = load_sweep(write(tmp_path, "search_space: space.yaml\n"))
    with pytest.raises(ValidationError, match="frozen"):
        cfg.name = "x"  # type: ignore[misc]
    assert isinstance(cfg, SweepConfig)
