"""Shared test set-up: real components at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# `make test` runs two xdist workers on two cores: one intra-op thread each. Oversubscribed torch threads
# slow CPU training by an order of magnitude here.
torch.set_num_threads(1)

# Budgets small enough for seconds per trial on the builtin model, large enough to learn something.
TINY = [
    "budget.max_steps=12",
    "budget.eval_steps=4",
    "dataset.max_eval_rows=32",
    "dataset.max_train_rows=400",
    "evaluation.samples=8",
    "early_terminate.type=none",
    "early_stopping.patience=0",
]


@pytest.fixture
def tiny(tmp_path):
    """load_sweep(sweeps/pricer.yaml) with tiny budgets, results under tmp_path; extra overrides win."""
    from harness.sweepfile import load_sweep

    def make(*overrides: str):
        return load_sweep(ROOT / "sweeps/pricer.yaml", [f"results_dir={tmp_path}", *TINY, *overrides])

    return make
