"""The benchmark modules import and their pure helpers work. No timings are asserted here (design.md)."""

from __future__ import annotations

import importlib

import pytest

from benchmarks import BENCHES
from benchmarks.common import LINE, result_line


@pytest.mark.parametrize("name", BENCHES)
def test_every_benchmark_imports_and_has_main(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)


def test_result_line_pass_and_miss():
    ok = result_line("P1", "overhead_share", 3.21, "%", 5, higher_is_better=False)
    assert ok == "P1 overhead_share=3.21% target<=5% PASS"
    miss = result_line("P2", "wall_ratio", 0.92, "", 0.75, higher_is_better=False, reason="load is cheap")
    assert miss == "P2 wall_ratio=0.92 target<=0.75 MISS  # load is cheap"
    up = result_line("G1", "speedup", 3.5, "x", 4, higher_is_better=True)
    assert up.endswith("target>=4x MISS")
    # the bound itself passes
    assert result_line("P3", "share", 50.0, "%", 50, higher_is_better=False).endswith("PASS")


def test_summary_regex_matches_result_lines_only():
    assert LINE.match(result_line("P5", "ms_per_trial", 48.0, "ms", 50, higher_is_better=False))
    assert LINE.match("G1 batched_generation_speedup=7.0x target>=4x PASS")
    assert not LINE.match("  P1 setup: 3 trials x 80 steps")


def test_steps_to_reach_counts_pruned_trials_until_goal():
    from benchmarks.bench_pruning import steps_to_reach

    trials = [
        {"state": "COMPLETE", "value": 1.3, "steps": 40},
        {"state": "PRUNED", "value": 0.5, "steps": 10},  # a pruned trial's value never counts as found
        {"state": "COMPLETE", "value": 1.0, "steps": 40},
    ]
    assert steps_to_reach(trials, 1.02) == 90
    assert steps_to_reach(trials, 1.3) == 40
    assert steps_to_reach(trials, 0.9) is None


def test_baseline_eval_rows_are_harness_eval_rows():
    from benchmarks.bench_vs_hf import seeded_subset
    from harness import fixtures

    rows = [{"i": i} for i in range(50)]
    assert seeded_subset(rows, 12, 42) == fixtures._subset(rows, 12, 42)


def test_p2_params_lie_in_its_search_space(tmp_path):
    from benchmarks.bench_vs_hf import N_TRIALS, PARAMS, SPACE
    from benchmarks.common import sweep_config
    from harness import search_space

    cfg = sweep_config(tmp_path, "search_space=null", *SPACE)
    dists = search_space.distributions(cfg.parameters)
    assert set(dists) == set(PARAMS[0])
    for p in PARAMS[:N_TRIALS]:
        for k, v in p.items():
            assert dists[k]._contains(dists[k].to_internal_repr(v)), (k, v)
