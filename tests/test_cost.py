"""Cost accounting: every trial's cost record (metrics.json and user attr), the study's sums recomputed from
the trial folders, and `budget.device_hours` stopping a sweep from starting new trials."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from helpers import FakeRecipe, sweep, sweep_cli
from optuna.trial import TrialState

from harness.core import attrs, trialdir
from harness.core.cost import DEVICE_HOUR_S, TrialCost
from harness.results import cost, report, status
from harness.results import view as studyview
from harness.study import failures
from harness.study.objective import StopAtDeviceHours
from harness.study.run import run_sweep

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def saved_cost(cfg, number: int) -> dict:
    return json.loads((trialdir.trial_dir(cfg.study_dir, number) / "metrics.json").read_text())["cost"]


def md_cost_rows(text: str) -> dict[str, list[str]]:
    """report.md's cost table: first cell -> the other cells."""
    section = text.split("## Cost", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()]
    header, body = rows[0], rows[2:]
    assert header[:3] == ["trials", "n", "device-s"]
    return {r[0]: r[1:] for r in body}


@pytest.fixture
def mixed(tmp_path):
    """6 trials: complete, pruned (median, first eval), and one that raised."""
    cfg = sweep(
        tmp_path,
        "budget.n_trials=6",
        "budget.eval_steps=20",
        "early_terminate.type=median",
        "early_terminate.n_startup_trials=2",
        "early_terminate.n_warmup_steps=0",
    )
    study = run_sweep(cfg, recipe=FakeRecipe().failing({3: RuntimeError("boom")})).study
    return cfg, study


def test_every_trial_records_its_cost_in_metrics_json_and_its_user_attrs(mixed):
    cfg, study = mixed
    states = {t.state for t in study.trials}
    assert states == set(FINISHED)  # the fixture covers every way a trial ends
    for t in study.trials:
        saved = saved_cost(cfg, t.number)
        assert saved == attrs.cost(t)  # the same record in both places
        record = TrialCost.from_dict(saved)
        assert record is not None and record.devices == 1  # the fake recipe trains on this process only
        assert saved["device_s"] == round(saved["wall_s"] * saved["devices"], 3)
        assert saved["wall_s"] > 0 and saved["peak_memory_mb"] == t.user_attrs[attrs.PEAK_RSS_MB]
        assert saved["tokens"] is None  # the fake recipe counts none: unknown, not 0
        if t.state == TrialState.FAIL:
            assert saved["steps"] == 0  # it raised before its first eval
        else:
            assert saved["steps"] == t.user_attrs[attrs.STEPS_RUN]  # pruned: up to where it stopped


def test_study_totals_equal_the_sums_of_the_trials_metrics_json(mixed, tmp_path):
    cfg, study = mixed
    saved = {t.number: saved_cost(cfg, t.number) for t in study.trials}
    total = sum(c["device_s"] for c in saved.values())
    by_state = {s: sum(saved[t.number]["device_s"] for t in study.trials if t.state == s) for s in FINISHED}
    # Until the best value was first reached: every trial that ended before or with that one.
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    first = min(
        (t for t in study.trials if t.state == TrialState.COMPLETE and t.value == best.value),
        key=lambda t: t.datetime_complete,
    )
    until = sum(
        saved[t.number]["device_s"] for t in study.trials if t.datetime_complete <= first.datetime_complete
    )

    sc = cost.collect(study)
    assert sc.total.trials == 6 and sc.total.device_s == pytest.approx(total, abs=1e-9)
    assert sc.total.steps == sum(c["steps"] for c in saved.values())
    assert sc.total.peak_memory_mb == max(c["peak_memory_mb"] for c in saved.values())
    assert sc.best == first.number and sc.to_best is not None
    assert sc.to_best.device_s == pytest.approx(until, abs=1e-9)

    data = studyview.load_study_data("pricer", str(tmp_path))
    report.write_report(data, ["md", "html"])
    rows = md_cost_rows((cfg.study_dir / "report.md").read_text())
    assert rows["all trials"][:2] == ["6", f"{total:.1f}"]
    assert rows["all trials"][2] == f"{total / DEVICE_HOUR_S:.4f}"
    for s in FINISHED:
        n = sum(t.state == s for t in study.trials)
        assert rows[s.name.lower()][:2] == [str(n), f"{by_state[s]:.1f}"]
    assert rows[f"until the best (trial {first.number})"][1] == f"{until:.1f}"
    assert 'id="cost"' in (cfg.study_dir / "report.html").read_text()

    line = next(x for x in status.status_lines(study, "url") if x.strip().startswith("cost:"))
    assert f"({total:.1f} device-s) in 6 trial(s)" in line
    assert f"until the best (trial {first.number}): {until:.1f} device-s" in line


def test_an_interrupted_trial_records_the_time_it_spent(tmp_path):
    cfg = sweep(tmp_path, "budget.n_trials=3")
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, recipe=FakeRecipe(fail={1: KeyboardInterrupt()}))
    study = optuna.load_study(study_name="pricer", storage=f"sqlite:///{cfg.study_dir}/study.db")
    t1 = study.trials[1]
    assert attrs.fail_reason(t1) == "interrupted"
    saved = json.loads((trialdir.trial_dir(cfg.study_dir, 1) / "metrics.json").read_text())
    assert saved["fail_reason"] == "interrupted" and saved["cost"] == attrs.cost(t1)
    assert saved["cost"]["wall_s"] > 0
    retry = study.get_trials(states=(TrialState.WAITING,))[0]
    assert attrs.COST not in retry.user_attrs  # the retry starts its own record: nothing counted twice
    assert cost.collect(study).by_state["FAIL"].trials == 1


def test_a_tiny_device_hours_budget_stops_the_sweep_after_its_first_trial(tmp_path):
    args = ["run", "sweeps/pricer.yaml", "--recipe", "helpers:steady_recipe"]
    sets = [f"results_dir={tmp_path / 'results'}", "budget.n_trials=4", "budget.device_hours=1e-9"]
    root = Path(__file__).resolve().parents[1]
    out = sweep_cli([*args, *sets, "budget.max_steps=60"], root, path=(root / "tests",))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "budget.device_hours=1e-09 spent" in out.stdout and "no new trial started" in out.stdout
    study = optuna.load_study(study_name="pricer", storage=f"sqlite:///{tmp_path}/results/pricer/study.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert re.search(r"^cost: .* in 1 trial\(s\)", out.stdout, re.M)  # the end-of-run line

    again = sweep_cli(
        [*args, *sets, "budget.max_steps=60"], root, path=(root / "tests",)
    )  # spent: the rerun starts none
    assert again.returncode == 0 and "no new trial started" in again.stdout
    assert len(optuna.load_study(study_name="pricer", storage=study._storage).trials) == 1


def test_the_budget_counts_every_workers_trials_running_ones_too(tmp_path, monkeypatch):
    """Another worker's running trial counts its time so far: its record only comes when it ends."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    finished = study.ask()
    finished.set_user_attr(attrs.COST, TrialCost(2.5, 2, 10, 100, None).to_dict())
    study.tell(finished, 1.0)
    assert StopAtDeviceHours(5.0 / DEVICE_HOUR_S).spent_s(study) == 5.0  # 2.5 s x 2 devices
    assert not StopAtDeviceHours(5.1 / DEVICE_HOUR_S).spent(study)
    running = study.ask()  # running, no record yet
    time.sleep(0.2)
    assert StopAtDeviceHours(5.1 / DEVICE_HOUR_S).spent(study)
    assert StopAtDeviceHours(None).spent_s(study) >= 5.2 and not StopAtDeviceHours(None).spent(study)
    # A trial on 2 ranks spends 2 device-seconds a second; mark_start says how many it started on.
    monkeypatch.setattr(failures, "group_size", lambda: 2)
    failures.mark_start(running, tmp_path / "trial-0001")
    assert running.user_attrs[attrs.WORLD_SIZE] == 2
    (seen,) = study.get_trials(states=(TrialState.RUNNING,))
    elapsed = (datetime.now() - seen.datetime_start).total_seconds()
    assert StopAtDeviceHours(None).spent_s(study) >= 5.0 + 2 * elapsed


def test_a_real_trial_records_its_real_tokens_over_every_accumulation_micro_batch(tiny, monkeypatch):
    """The builtin model, one trial: metrics.json's cost has wall time, devices, the steps it ran and
    the non-padding tokens of every micro-batch the Trainer trained on, counted here independently at the
    collator (attention_mask: 1 on a real token, 0 on padding)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    batches: list[tuple[int, int]] = []
    collate = DataCollatorForLanguageModeling.torch_call

    def counting(self, examples):
        out = collate(self, examples)
        batches.append((int(out["attention_mask"].sum()), out["input_ids"].numel()))
        return out

    monkeypatch.setattr(DataCollatorForLanguageModeling, "torch_call", counting)
    cfg = tiny(
        "budget.n_trials=1",
        "budget.max_steps=4",
        "budget.eval_steps=2",
        "evaluation.samples=0",
        "training.gradient_accumulation_steps=2",
        "parameters.per_device_train_batch_size={values: [4]}",
    )
    study = run_sweep(cfg).study
    (t,) = study.trials
    saved = saved_cost(cfg, 0)
    assert saved == attrs.cost(t) and t.state == TrialState.COMPLETE
    assert saved["devices"] == 1 and saved["steps"] == 4 and saved["wall_s"] > 0
    # accelerate's loader collates one batch ahead (to know the last one): the trained ones come first.
    trained = batches[: 4 * 2]  # every micro-batch of every optimizer step
    assert len(batches) in (8, 9)
    assert saved["tokens"] == sum(real for real, _ in trained)
    assert saved["tokens"] < sum(padded for _, padded in trained)  # padding is not counted
    assert saved["peak_memory_mb"] == t.user_attrs[attrs.PEAK_RSS_MB] > 0


@pytest.mark.slow
def test_a_retry_resumed_from_a_checkpoint_counts_only_what_it_trained(tiny, monkeypatch):
    """Ctrl-C at the step-8 eval (its checkpoint is step 4's): the interrupted trial records the steps and
    tokens up to its last eval, the retry the steps and tokens from its checkpoint on, recounted at the
    collator; together, every step once."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from harness.study.run import real_recipe

    batches: list[int] = []
    collate = DataCollatorForLanguageModeling.torch_call

    def counting(self, examples):
        out = collate(self, examples)
        batches.append(int(out["attention_mask"].sum()))
        return out

    monkeypatch.setattr(DataCollatorForLanguageModeling, "torch_call", counting)
    cfg = tiny(
        "budget.n_trials=1", "budget.max_steps=8", "parameters.per_device_train_batch_size={values: [4]}"
    )
    real = real_recipe(cfg)

    def interrupted_at_step_8(spec, on_eval):
        def hook(step, metrics):
            if spec.number == 0 and step == 8:
                raise KeyboardInterrupt
            return on_eval(step, metrics)

        return real(spec, hook)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, recipe=interrupted_at_step_8)
    first = list(batches)
    batches.clear()
    study = run_sweep(cfg, recipe=interrupted_at_step_8).study
    t0, t1 = study.trials
    assert attrs.fail_reason(t0) == "interrupted" and t1.state == TrialState.COMPLETE
    c0, c1 = saved_cost(cfg, 0), saved_cost(cfg, 1)
    assert c0 == attrs.cost(t0) and c1 == attrs.cost(t1)
    assert c0["steps"] == 4 and c0["tokens"] == sum(first[:4])  # up to its last eval (step 4)
    assert c1["steps"] == 4 and c1["tokens"] == sum(batches[:4])  # steps 5-8, from the checkpoint on
    assert c0["tokens"] + c1["tokens"] == sum(first[:8])  # the same rows in the same order: each once


@pytest.mark.slow
def test_dpo_and_grpo_trials_record_their_real_tokens(tmp_path, monkeypatch):
    """DPO: the attention masks of its chosen+rejected training batches (recounted at the collator; its
    evals, batches of another size, left out). GRPO: trl counts each prompt and completion's tokens."""
    from helpers import DPO_TINY, ROOT
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from harness.sweepfile.load import load_sweep

    train_rows = 2 * 8  # per_device_train_batch_size 8 (the sweep file's): chosen then rejected rows
    batches: list[tuple[int, int]] = []
    collate = DataCollatorForPreference.torch_call

    def counting(self, examples):
        out = collate(self, examples)
        batches.append((out["input_ids"].shape[0], int(out["attention_mask"].sum())))
        return out

    monkeypatch.setattr(DataCollatorForPreference, "torch_call", counting)
    budget = ["budget.n_trials=1", "budget.max_steps=4", "budget.eval_steps=4", "evaluation.batch_size=16"]
    for trainer, extra in (("dpo", []), ("grpo", ["training.max_completion_length=6"])):
        cfg = load_sweep(
            ROOT / f"sweeps/pricer-{trainer}.yaml",
            [f"results_dir={tmp_path / trainer}", *DPO_TINY, *budget, *extra],
        )
        batches.clear()
        (t,) = run_sweep(cfg).study.trials
        saved = saved_cost(cfg, 0)
        assert t.state == TrialState.COMPLETE and saved == attrs.cost(t) and saved["steps"] == 4
        if trainer == "dpo":
            trained = [real for rows, real in batches if rows == train_rows][:4]
            assert len(trained) == 4 and saved["tokens"] == sum(trained)
        else:
            per_step = cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps
            longest = cfg.training.max_seq_length + cfg.training.max_completion_length
            assert 0 < saved["tokens"] <= 4 * per_step * longest


def test_the_trials_table_has_each_trials_device_seconds_and_tokens(mixed, tmp_path):
    cfg, study = mixed
    frame = studyview.load_study_data("pricer", str(tmp_path)).frame
    for t in study.trials:
        row = frame[frame["number"] == t.number].iloc[0]
        assert row["device_s"] == saved_cost(cfg, t.number)["device_s"]
    assert frame["tokens"].isna().all()  # the fake recipe counts none: missing, never 0
