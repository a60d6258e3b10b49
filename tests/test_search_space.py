from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from harness.errors import ConfigError
from harness.study.space import grid, suggest, to_distribution
from harness.sweepfile.space import parse_parameters


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("r", {"value": 8}, CategoricalDistribution([8])),
        ("r", 8, CategoricalDistribution([8])),  # shorthand for value
        ("r", {"values": [4, 8, 16]}, CategoricalDistribution([4, 8, 16])),
        (
            "lr_scheduler_type",
            {"distribution": "categorical", "values": ["cosine", "linear"]},
            CategoricalDistribution(["cosine", "linear"]),
        ),
        ("r", {"min": 4, "max": 32}, IntDistribution(4, 32)),  # ints -> int_uniform (W&B default)
        ("r", {"distribution": "int_uniform", "min": 1, "max": 4}, IntDistribution(1, 4)),
        ("lora_dropout", {"min": 0.0, "max": 0.1}, FloatDistribution(0.0, 0.1)),  # floats -> uniform
        ("lora_dropout", {"distribution": "uniform", "min": 0, "max": 0.5}, FloatDistribution(0.0, 0.5)),
        (
            "learning_rate",
            {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
            FloatDistribution(1e-5, 1e-2, log=True),
        ),
        (
            "warmup_ratio",
            {"distribution": "q_uniform", "min": 0.0, "max": 0.1, "q": 0.05},
            FloatDistribution(0.0, 0.1, step=0.05),
        ),
    ],
)
def test_wandb_distribution_maps_to_optuna(name, body, expected):
    spec = parse_parameters({name: body}, "space.yaml")[name]
    assert to_distribution(spec) == expected


def test_log_uniform_uses_natural_log_bounds():
    spec = parse_parameters({"learning_rate": {"distribution": "log_uniform", "min": -9.2, "max": -4.6}}, "s")
    d = to_distribution(spec["learning_rate"])
    assert isinstance(d, FloatDistribution) and d.log
    assert math.isclose(d.low, math.exp(-9.2)) and math.isclose(d.high, math.exp(-4.6))


def test_suggest_samples_inside_the_space_and_records_params():
    space = parse_parameters(
        {
            "r": {"values": [4, 8]},
            "learning_rate": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "per_device_train_batch_size": {"min": 2, "max": 6},
        },
        "s",
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        p = suggest(trial, space)
        assert p["r"] in (4, 8)
        assert 1e-4 <= p["learning_rate"] <= 1e-2
        assert (
            isinstance(p["per_device_train_batch_size"], int) and 2 <= p["per_device_train_batch_size"] <= 6
        )
        assert trial.params == p
        study.tell(trial, 0.0)


def test_all_problems_reported_at_once_with_hints():
    with pytest.raises(ConfigError) as e:
        parse_parameters(
            {
                "learning_rat": {"values": [1e-3]},
                "r": {"min": 8, "max": 4},
                "learning_rate": {"distribution": "log_uniform_values", "min": 0, "max": 1},
                "lora_dropout": {"values": [0.1, 1.5]},
                "optim": {"valuez": ["adamw_torch"]},
            },
            "qlora.yaml",
        )
    msg = str(e.value)
    assert msg.startswith("qlora.yaml: 5 problems")
    assert "did you mean 'learning_rate'" in msg
    assert "min (8) is greater than max (4)" in msg
    assert "log_uniform_values needs min > 0" in msg
    assert "parameters.lora_dropout: value 1.5 is invalid" in msg
    assert "parameters.optim.valuez: unknown key (did you mean 'value'?)" in msg


def test_alpha_forms_are_exclusive():
    with pytest.raises(ConfigError, match="not both"):
        parse_parameters({"lora_alpha": {"values": [16]}, "lora_alpha_multiple": {"values": [2]}}, "s")


def test_grid_enumerates_discrete_and_refuses_continuous():
    space = parse_parameters(
        {
            "r": {"values": [4, 8]},
            "gradient_accumulation_steps": {"min": 1, "max": 3},
            "warmup_ratio": {"distribution": "q_uniform", "min": 0.0, "max": 0.1, "q": 0.05},
        },
        "s",
    )
    g = grid(space)
    assert g["r"] == [4, 8] and g["gradient_accumulation_steps"] == [1, 2, 3]
    assert [round(x, 6) for x in g["warmup_ratio"]] == [0.0, 0.05, 0.1]
    with pytest.raises(ConfigError, match="grid cannot enumerate"):
        grid(parse_parameters({"lora_dropout": {"min": 0.0, "max": 0.1}}, "s"))
