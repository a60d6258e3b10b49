"""Every sweep and search-space file we ship validates (torchtune's test_configs idea)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.sweepfile.load import load_sweep, read_yaml
from harness.sweepfile.space import parse_parameters

ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
SPACE_FILES = sorted((ROOT / "search_spaces").glob("*.yaml"))


def test_the_globs_find_the_shipped_files():
    """An empty glob (a moved folder) would run the parametrized tests below zero times, silently."""
    assert SWEEP_FILES, f"no sweep files in {ROOT / 'sweeps'}"
    assert SPACE_FILES, f"no search-space files in {ROOT / 'search_spaces'}"


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_file_validates(path):
    cfg = load_sweep(path)
    assert cfg.parameters, "a shipped sweep must have a search space"


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.name)
def test_search_space_file_validates(path):
    assert parse_parameters(read_yaml(path)["parameters"], str(path))
