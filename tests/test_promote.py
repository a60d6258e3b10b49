"""`sweep best --export` and `sweep train` with a fake recipe; the real fine-tune is marked `slow`."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import io
import json
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, journal, reporting_recipe, sweep
from rich.console import Console

from harness.cli import cmd_train, main
from harness.core import attrs, trialdir
from harness.core.cost import TrialCost, hours_text
from harness.core.spec import TrialResult, TrialSpec
from harness.errors import ConfigError, HarnessError
from harness.study import promote
from harness.study.run import run_sweep
from harness.sweepfile.load import load_sweep


def swept(tmp_path: Path, n: int = 4, storage: str | None = None, recipe=reporting_recipe):
    """A journal study of `n` fake trials (the report tests' fake: generations, mae, a train log)."""
    cfg = sweep(tmp_path, f"budget.n_trials={n}", "early_terminate.type=none")
    return run_sweep(cfg, storage=storage or journal(tmp_path), recipe=recipe).study


def console() -> Console:
    return Console(file=io.StringIO(), width=200, highlight=False)


def test_best_export_writes_a_valid_config_with_the_best_params(tmp_path, capsys):
    study = swept(tmp_path)
    best = study.best_trial
    out = tmp_path / "best.yaml"
    url = journal(tmp_path)
    argv = ["best", "pricer", "--results-dir", str(tmp_path), "--storage", url, "--export", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"best trial {best.number}" in printed and f"{best.value:.6g}" in printed
    assert f"trial-{best.number:04d}" in printed

    text = out.read_text()
    assert text.startswith(f"# Best trial {best.number} of study 'pricer': eval_loss = {best.value:.6g}")
    cfg = load_sweep(out)  # validates
    assert cfg.name == "pricer-best" and cfg.budget.n_trials == 1 and cfg.search_space is None
    p = best.params
    t = cfg.training
    assert (t.r, t.learning_rate, t.lora_dropout, t.lr_scheduler_type) == (
        p["r"],
        p["learning_rate"],
        p["lora_dropout"],
        p["lr_scheduler_type"],
    )
    assert (t.warmup_ratio, t.per_device_train_batch_size, t.gradient_accumulation_steps) == (
        p["warmup_ratio"],
        p["per_device_train_batch_size"],
        p.get("gradient_accumulation_steps", 1),  # not tuned by the default sweep: the schema default
    )
    assert (t.optim, t.weight_decay) == (p["optim"], p["weight_decay"])
    assert t.lora_alpha == p["lora_alpha_multiple"] * p["r"]
    assert {k: s.value for k, s in cfg.parameters.items()} == p
    assert all(s.kind == "constant" for s in cfg.parameters.values())
    # Everything else is the study's own config: same model, data, metric, evaluation.
    stored = study.user_attrs["config"]
    assert cfg.model.model_dump(mode="json") == stored["model"]
    assert cfg.evaluation.model_dump(mode="json") == stored["evaluation"]
    assert cfg.metric.name == "eval_loss" and cfg.train.max_steps == stored["train"]["max_steps"]
    # It trains exactly the winning settings when run as a sweep, too.
    rerun = run_sweep(cfg, storage=url, recipe=reporting_recipe).study
    assert rerun.study_name == "pricer-best" and rerun.trials[0].params == p
    assert rerun.trials[0].value == pytest.approx(best.value)


def test_best_on_sqlite_prints_without_export(tmp_path, capsys):
    cfg = sweep(tmp_path, "budget.n_trials=2", "budget.max_steps=40")
    study = run_sweep(cfg, recipe=reporting_recipe).study
    assert main(["best", "pricer", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"pricer: best trial {study.best_trial.number}" in out
    assert not list(tmp_path.glob("*.yaml"))


def test_best_without_a_complete_trial_is_a_user_error(tmp_path, capsys):
    def boom(spec, on_eval):
        raise RuntimeError("boom")

    swept(tmp_path, n=1, recipe=boom)
    assert main(["best", "pricer", "--results-dir", str(tmp_path), "--storage", journal(tmp_path)]) == 2
    assert "no complete trial yet" in capsys.readouterr().err
    assert main(["best", "nope", "--results-dir", str(tmp_path)]) == 2


def fake_promoter(calls: list):
    """Records what `sweep train` asks for and returns validation + test metrics like the real one."""

    def run(spec: TrialSpec, adapter_dir: Path) -> TrialResult:
        calls.append((spec, adapter_dir))
        adapter_dir.mkdir(parents=True)
        (adapter_dir / "adapter_model.safetensors").write_bytes(b"fake")
        history = [{"step": s, "eval_loss": 2.0 - s / 1000} for s in range(50, 201, 50)]
        metrics = {"eval_loss": 1.8, "perplexity": 6.05, "test_eval_loss": 1.9, "test_mae": 12.5}
        return TrialResult(1.8, metrics, 200, 200, 3.0, history)

    return run


def test_train_runs_one_fine_tune_with_the_promotion_budget(tmp_path):
    swept(tmp_path)
    out = tmp_path / "best.yaml"
    url = journal(tmp_path)
    main(["best", "pricer", "--results-dir", str(tmp_path), "--storage", url, "--export", str(out)])
    exported = load_sweep(out)
    calls: list = []
    args = argparse.Namespace(file=str(out), overrides=["train.max_steps=200", "train.eval_steps=50"])
    shown = console()
    assert cmd_train(args, shown, promoter=fake_promoter(calls)) == 0
    ((spec, adapter_dir),) = calls
    assert spec.number == -1
    assert spec.sweep.budget.max_steps == 200 and spec.sweep.budget.eval_steps == 50
    assert spec.params == {k: s.value for k, s in exported.parameters.items()}
    assert spec.training == exported.training  # the exported settings, unchanged by re-applying params
    folder = tmp_path / "pricer-best" / "promoted"
    assert spec.output_dir == folder and adapter_dir == folder / "adapter"
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["state"] == "COMPLETE" and saved["metrics"]["test_mae"] == 12.5
    assert json.loads((folder / "params.json").read_text())["training"]["r"] == exported.training.r
    assert [h["step"] for h in trialdir.read_eval_history(folder)] == [50, 100, 150, 200]
    text = shown.file.getvalue()
    row = next(line for line in text.splitlines() if "eval_loss" in line and "1.9" in line)
    assert "1.8" in row  # validation and test side by side
    assert "mae" in text and "12.5" in text
    # Its cost, recorded as a trial's is (harness.core.cost): the steps it ran, on one device, and printed.
    spent = TrialCost.from_dict(saved["cost"])
    assert spent is not None and (spent.steps, spent.devices) == (200, 1) and spent.device_s == spent.wall_s
    assert saved["resources"][attrs.PEAK_RSS_MB] > 0
    assert f"pricer-best: cost: {hours_text(spent.device_s)}, 200 steps, peak memory" in text


def test_train_with_an_output_dir_and_a_single_value_list(tmp_path):
    sweep_file = tmp_path / "one.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "one",
                "results_dir": str(tmp_path),
                "parameters": {"r": {"values": [4]}, "learning_rate": {"value": 0.002}},
                "train": {"output_dir": str(tmp_path / "out"), "max_steps": 100},
            }
        )
    )
    calls: list = []
    args = argparse.Namespace(file=str(sweep_file), overrides=[])
    assert cmd_train(args, console(), promoter=fake_promoter(calls)) == 0
    spec = calls[0][0]
    assert (spec.training.r, spec.training.learning_rate, spec.sweep.budget.max_steps) == (4, 0.002, 100)
    assert (tmp_path / "out" / "metrics.json").exists()


def test_train_refuses_a_search_range(tmp_path):
    args = argparse.Namespace(file=str(ROOT / "sweeps/pricer.yaml"), overrides=[f"results_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="still a search range.*sweep best"):
        cmd_train(args, console(), promoter=fake_promoter([]))
    assert not (tmp_path / "pricer").exists()  # nothing written


def test_export_refuses_a_study_without_stored_config(tmp_path):
    import optuna

    study = optuna.create_study(study_name="bare")
    study.optimize(lambda t: t.suggest_float("learning_rate", 1e-4, 1e-2), n_trials=2)
    with pytest.raises(HarnessError, match="no stored sweep config"):
        promote.export_config(study, study.best_trial)


def _promotion_missing() -> str:
    """What `sweep train` needs that is not there: empty when all is (a failure, never a skip, else)."""
    if importlib.util.find_spec("harness.builtin.tiny_model") is None:
        return "harness.builtin.tiny_model is missing"
    from harness.trial.recipe import finetune

    missing = {"save_adapter_to", "test_rows"} - set(inspect.signature(finetune).parameters)
    return f"recipe.finetune lacks {', '.join(sorted(missing))}" if missing else ""


def test_promotion_needs_are_there():
    """Not slow: the parts the slow real fine-tune below relies on exist (it used to skip without them)."""
    assert not _promotion_missing(), _promotion_missing()


@pytest.mark.slow
def test_train_real_fine_tune_saves_a_safetensors_adapter_and_test_metrics(tmp_path):
    assert not _promotion_missing(), _promotion_missing()
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "results_dir": str(tmp_path),
                "dataset": {"max_train_rows": 64, "max_eval_rows": 16},
                "evaluation": {"samples": 4, "max_new_tokens": 4},
                "training": {"per_device_train_batch_size": 8},
                "parameters": {"r": 4, "learning_rate": 0.001},
                "train": {"max_steps": 6, "eval_steps": 3},
            }
        )
    )
    args = argparse.Namespace(file=str(cfg_file), overrides=[])
    assert cmd_train(args, console()) == 0
    folder = tmp_path / "tiny" / "promoted"
    assert (folder / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    saved = json.loads((folder / "metrics.json").read_text())
    metrics = saved["metrics"]
    assert metrics["test_eval_loss"] > 0 and "test_mae" in metrics
    assert saved["cost"]["steps"] == saved["steps_run"] and saved["cost"]["tokens"] > 0
