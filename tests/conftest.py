"""Shared test set-up: real components at tiny sizes."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, journal, sweep

# `make test` runs two xdist workers on two cores: one intra-op thread each. Oversubscribed torch threads
# slow CPU training by an order of magnitude here.
torch.set_num_threads(1)


@pytest.fixture
def tiny(tmp_path):
    """sweeps/pricer.yaml with the TINY real-recipe budgets, results under tmp_path; extra overrides win."""

    def make(*overrides: str):
        return sweep(tmp_path, *TINY, *overrides)

    return make


@pytest.fixture(params=["sqlite", "journal"])
def storage(request, tmp_path) -> str | None:
    """One supplier fixture over every backend (optuna's pattern): None is the default SQLite file."""
    return None if request.param == "sqlite" else journal(tmp_path)
