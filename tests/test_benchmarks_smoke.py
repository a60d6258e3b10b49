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
    assert LINE.match("P5 gpu_qlora_vs_bf16_lora_peak=n/a target<=40% SKIP  # no CUDA device here")
    assert not LINE.match("  P1 setup: 3 trials x 80 steps")


def test_figures_parse_into_last_json_records():
    from benchmarks.common import parse_figure

    rec = parse_figure("P7 sampler_storage_ms_per_trial=48.2ms target<=20ms MISS  # TPE grows")
    assert rec["figure"] == "P7 sampler_storage_ms_per_trial"
    assert (rec["value"], rec["unit"], rec["target"], rec["pass"]) == (48.2, "ms", "<=20", False)
    assert rec["note"] == "TPE grows"
    ok = parse_figure("P3 hf_vs_harness_time_to_near_best=2.3x target>=2x PASS")
    assert ok["pass"] and ok["value"] == 2.3


def test_quality_module_imports():
    module = importlib.import_module("benchmarks.quality")
    assert callable(module.main)


def _trace(method, seed, rows, wall=100.0):
    return {
        "method": method,
        "seed": seed,
        "wall": wall,
        "trials": [
            {"t": t, "steps": st, "value": v, "state": "COMPLETE" if v else "PRUNED"} for t, st, v in rows
        ],
    }


def test_time_to_near_best_counts_pruned_steps_and_charges_misses_their_whole_run():
    from benchmarks.quality import reach, score

    harness = _trace("harness", 1, [(10, 300, 1.30), (12, 50, None), (20, 300, 1.01)])
    hf = _trace("hf", 1, [(15, 300, 1.20), (40, 300, 1.00), (60, 300, 1.10)], wall=61)
    slow = _trace("random", 1, [(30, 300, 1.50)], wall=33)
    assert reach(harness, 1.02) == (20, 650, True)  # the pruned trial's 50 steps count, its value never
    assert reach(slow, 1.02) == (33, 300, False)
    rows = score([harness, hf, slow])  # best any method found: 1.00 (hf); near-best: <= 1.02
    assert rows["harness"]["time"] == [20] and rows["hf"]["time"] == [40]
    assert rows["hf"]["median_ratio"] == 2.0 and rows["random"]["reached"] == [False]
    assert rows["random"]["median_ratio"] == 33 / 20


def test_step_budget_stops_the_study_once_spent():
    from benchmarks.quality import StepBudget

    class Study:
        stopped = False

        def stop(self):
            self.stopped = True

    class Trial:
        def __init__(self, steps):
            self.user_attrs = {"steps_run": steps}

    budget, study = StepBudget(500), Study()
    budget(study, Trial(300))
    assert not study.stopped
    budget(study, Trial(200))
    assert study.stopped


@pytest.mark.parametrize(
    "method", ["harness", "hf", "random", "grid", "harness-hyperband", "harness-median", "harness-auto"]
)
def test_every_quality_method_is_a_valid_sweep(tmp_path, method):
    from benchmarks.quality import Settings, method_config

    cfg = method_config(str(tmp_path), method, 42, Settings())
    assert cfg.budget.max_steps == 300 and cfg.dataset.max_eval_rows == 128 and cfg.evaluation.samples == 0
    if method == "grid":
        assert cfg.method == "grid" and set(cfg.parameters) == {"learning_rate", "r"}
    if method in ("random", "grid"):
        assert cfg.early_terminate.type == "none" and cfg.early_stopping.patience == 0
    if method == "harness":
        assert (cfg.method, cfg.early_terminate.type) == ("tpe", "successive_halving")  # the file's own
    if method == "harness-median":
        assert (cfg.early_terminate.n_startup_trials, cfg.early_terminate.n_warmup_steps) == (3, 2)
    if method == "harness-auto":
        assert (cfg.early_terminate.type, cfg.early_terminate.min_iter) == ("successive_halving", "auto")


def test_memory_growth_runs_real_trials_and_reads_their_peaks(tmp_path):
    from benchmarks.bench_memory import gpu_line, growth, growth_line

    budget = [
        "budget.max_steps=2",
        "budget.eval_steps=2",
        "early_stopping.patience=0",
        "early_terminate.type=none",
        "evaluation.samples=2",
        "dataset.max_eval_rows=8",
    ]
    trials = growth(str(tmp_path), n_trials=3, budget=budget)
    assert [t["state"] for t in trials] == ["COMPLETE"] * 3
    assert all(t["peak_rss_mb"] and t["peak_rss_mb"] > 50 for t in trials)
    assert trials[0]["params"]["r"] != trials[1]["params"]["r"]  # the two configs alternate
    assert LINE.match(growth_line(trials))
    import torch

    if not torch.cuda.is_available():
        assert gpu_line().endswith("SKIP  # no CUDA device here")


def test_bench_summary_writes_last_json_and_keeps_the_previous(tmp_path, monkeypatch):
    import json

    main = importlib.import_module("benchmarks.__main__")
    monkeypatch.setattr(main, "LAST", tmp_path / "last.json")
    monkeypatch.setattr(main, "PREV", tmp_path / "prev.json")
    monkeypatch.setattr(main, "ROOT", tmp_path)
    main.save(["G1 batched_generation_speedup=7x target>=4x PASS"], 12.0)
    main.save(["G1 batched_generation_speedup=9x target>=4x PASS"], 12.0)
    last = json.loads((tmp_path / "last.json").read_text())
    assert last["figures"][0]["value"] == 9 and last["figures"][0]["pass"] is True
    assert {"cpu_count", "load_avg", "torch", "git_commit"} <= set(last["machine"])
    assert main.previous() == {"G1 batched_generation_speedup": "9.0x"}
    assert json.loads((tmp_path / "prev.json").read_text())["figures"][0]["value"] == 7


def test_best_pruner_is_the_one_within_2_percent_on_most_seeds_then_fastest():
    from benchmarks.quality import fastest_pruner, pruner_of

    rows = {
        "harness-median": {"reached": [True, True, False], "median_time": 269.0},
        "harness-hyperband": {"reached": [True, True, False], "median_time": 241.0},
        "harness": {"reached": [True, True, True], "median_time": 256.0},
    }
    assert fastest_pruner(rows) == "harness"
    rows["harness"]["reached"] = [True, False, False]
    assert fastest_pruner(rows) == "harness-hyperband"
    assert [pruner_of(m) for m in rows] == ["median", "hyperband", "successive_halving"]
