"""Real tiny sweeps (4-bit QLoRA on the builtin model): a generation metric as the objective, the price
metrics a pricer trial reports, before/after evidence, and the shipped text (Alpaca) example end to end."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from optuna.trial import TrialState
from rich.console import Console

from harness.cli import main
from harness.core import trialdir
from harness.study.run import run_sweep
from harness.suite.session import print_summary

ROOT = Path(__file__).resolve().parents[1]
PRICE_METRICS = ("mae", "rmsle", "hit_rate", "r2", "unparseable_rate")


def test_pricer_sweep_can_minimise_mae_and_records_before_after(tiny, tmp_path):
    cfg = tiny("metric.name=mae", "metric.goal=minimize", "budget.n_trials=1")
    out = io.StringIO()
    console = Console(file=out, width=200)
    outcome = run_sweep(cfg, console=console)
    print_summary(cfg, outcome, console)  # what `sweep run` prints (and writes) under the last trial
    study = outcome.study
    assert study.direction.name == "MINIMIZE" and study.user_attrs["metric"] == "mae"
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    folder = trialdir.trial_dir(cfg.study_dir, trial.number)
    saved = json.loads((folder / "metrics.json").read_text())

    # The objective is mae as measured at the best eval (generation at every eval), and the final
    # metrics (re-measured with the restored best adapter) agree with it.
    maes = {h["step"]: h["mae"] for h in saved["history"]}
    assert len(maes) == 3 and all(math.isfinite(v) for v in maes.values())
    assert trial.value == pytest.approx(min(maes.values()))
    assert trial.value == pytest.approx(maes[trial.user_attrs["best_step"]])
    metrics = trial.user_attrs["metrics"]
    assert metrics["mae"] == pytest.approx(trial.value)

    # Every price metric is reported, in range.
    assert set(PRICE_METRICS) <= set(metrics)
    assert metrics["mae"] >= 0 and metrics["rmsle"] >= 0 and metrics["r2"] <= 1
    assert 0 <= metrics["hit_rate"] <= 1 and 0 <= metrics["unparseable_rate"] <= 1

    # Before/after: the same prompts with the adapter disabled, per row and as corpus metrics.
    rows = trialdir.read_generations(folder)
    assert len(rows) == 8 and all("prediction_before" in r and "before_abs_error" in r for r in rows)
    before = trial.user_attrs["before_metrics"]
    assert set(PRICE_METRICS) <= set(before)
    assert saved["before_metrics"]["mae"] == pytest.approx(before["mae"])
    copied = trialdir.read_jsonl(cfg.study_dir / "before_after.jsonl")
    assert [r["prediction_before"] for r in copied] == [r["prediction_before"] for r in rows]

    # The untrained base, measured once for the study, and the summary lines.
    baseline = study.user_attrs["baseline_metrics"]
    assert baseline["eval_loss"] > metrics["eval_loss"]  # 12 steps of training already help
    assert baseline["mae"] == pytest.approx(before["mae"])  # adapter disabled == the base
    text = out.getvalue()
    assert f"eval_loss: untrained {baseline['eval_loss']:.4g} -> best {metrics['eval_loss']:.4g}" in text
    assert f"best trial {trial.number}: mae {before['mae']:.4g} -> {metrics['mae']:.4g}" in text


def test_alpaca_text_example_runs_end_to_end(tmp_path, capsys):
    code = main(
        [
            "run",
            str(ROOT / "sweeps/alpaca-text.yaml"),
            "--results-dir",
            str(tmp_path),
            "budget.n_trials=1",
            "budget.max_steps=8",
            "budget.eval_steps=4",
            "dataset.max_train_rows=200",
            "dataset.max_eval_rows=16",
            "evaluation.samples=8",
            "parameters.per_device_train_batch_size={value: 8}",
            "parameters.gradient_accumulation_steps={value: 1}",
            "expect.perplexity=< 5000",  # 8 steps: the shipped threshold is for the full budget
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS perplexity" in printed and "1 passed, 0 failed" in printed
    trial = json.loads((tmp_path / "alpaca-text" / "trial-0000" / "metrics.json").read_text())
    m = trial["metrics"]
    for name in ("rouge1", "rouge2", "rougeL", "exact_match"):
        assert 0.0 <= m[name] <= 1.0, name
    assert 0.0 <= m["bleu"] <= 100.0
    assert 1.0 < m["perplexity"] < math.inf
    assert m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]))
    assert not any(k in m for k in ("mae", "hit_rate"))  # a text task has no price metrics
    rows = trialdir.read_generations(tmp_path / "alpaca-text" / "trial-0000")
    assert rows and rows[0]["prompt"].startswith("### Instruction:\n") and "prediction_before" in rows[0]
