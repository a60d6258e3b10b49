"""Trackers with the fake recipe: real W&B (offline) and TensorBoard files, read back and checked."""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from helpers import fake_recipe, sweep
from optuna.trial import TrialState

from harness.core import trialdir
from harness.core.spec import TrialResult, TrialSpec
from harness.study.run import run_sweep
from harness.trial import tracking

TWO = "budget.n_trials=2"


# ----------------------------------------------------------------------------------------------------
# W&B offline: read the run files wandb-core writes (LevelDB-log framing around protobuf Records).


def wandb_records(path: Path) -> list[Any]:
    """Records of an offline `run-*.wandb` file. wandb >= 0.2x has no Python reader any more, but the
    format is stable: a 7-byte header, then 32 KiB blocks of (crc u32, length u16, type u8, payload)
    chunks, FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pos, buf, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if n == 0 and kind == 0:
            break
        buf += data[pos : pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """Offline, silent, and nothing written to the home directory."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_offline_wandb_sweep_leaves_one_grouped_run_per_trial(tmp_path, wandb_offline):
    cfg = sweep(tmp_path, TWO, "tracking.backend=wandb", "tracking.tags=[nightly]")
    study = run_sweep(cfg, recipe=fake_recipe).study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2

    files = sorted((cfg.study_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2, files
    seen = {}
    for f in files:
        recs = wandb_records(f)
        run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
        assert run.run_group == "pricer" and run.job_type == "sweep" and run.project == "pricer"
        assert "nightly" in run.tags and "pricer" in run.tags
        number = int(run.display_name.removeprefix("trial-"))
        trial = study.trials[number]
        config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
        assert config["trial"] == number
        assert {k: config[k] for k in trial.params} == pytest.approx(trial.params)

        history = {}
        for r in recs:
            if r.WhichOneof("record_type") == "history":
                items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
                history[r.history.step.num] = items["eval/eval_loss"]
        assert history == pytest.approx(dict(trial.intermediate_values))

        summary = {}
        for r in recs:
            if r.WhichOneof("record_type") == "summary":
                for u in r.summary.update:
                    summary["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
        assert summary["state"] == "COMPLETE"
        assert summary["eval_loss"] == pytest.approx(trial.value)
        assert summary["peak_rss_mb"] > 0  # resource figures travel with the final metrics
        exit_rec = next(r.exit for r in recs if r.WhichOneof("record_type") == "exit")
        assert exit_rec.exit_code == 0
        seen[number] = True
    assert sorted(seen) == [0, 1]


def test_a_failed_trial_finishes_its_wandb_run_with_exit_code_1(tmp_path, wandb_offline):
    def crash(spec, on_eval):
        on_eval(20, {"eval_loss": 1.0})
        raise RuntimeError("out of memory")

    cfg = sweep(tmp_path, "tracking.backend=wandb", "budget.n_trials=1")
    study = run_sweep(cfg, recipe=crash).study
    assert study.trials[0].state == TrialState.FAIL
    (f,) = (cfg.study_dir / "wandb").glob("offline-run-*/run-*.wandb")
    recs = wandb_records(f)
    assert next(r.exit for r in recs if r.WhichOneof("record_type") == "exit").exit_code == 1
    states = [
        json.loads(u.value_json)
        for r in recs
        if r.WhichOneof("record_type") == "summary"
        for u in r.summary.update
        if u.key == "state"
    ]
    assert states == ["FAIL"]


def test_without_a_login_wandb_writes_offline_instead_of_prompting(
    tmp_path, wandb_offline, monkeypatch, caplog
):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    cfg = sweep(tmp_path, "tracking.backend=wandb", "budget.n_trials=1")
    with caplog.at_level(logging.WARNING, logger="harness.trial.tracking"):
        study = run_sweep(cfg, recipe=fake_recipe).study
    assert study.trials[0].state == TrialState.COMPLETE
    assert any("no login found" in r.getMessage() for r in caplog.records)
    assert len(list((cfg.study_dir / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


# ----------------------------------------------------------------------------------------------------
# TensorBoard


def test_tensorboard_sweep_writes_one_event_file_per_trial(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = sweep(tmp_path, TWO, "tracking.backend=tensorboard")
    study = run_sweep(cfg, recipe=fake_recipe).study
    for trial in study.trials:
        folder = cfg.study_dir / "tb" / f"trial-{trial.number:04d}"
        events = list(folder.glob("events.out.tfevents.*"))
        assert len(events) == 1, events
        acc = EventAccumulator(str(folder))
        acc.Reload()
        scalars = {e.step: e.value for e in acc.Scalars("eval/eval_loss")}
        assert scalars == pytest.approx(dict(trial.intermediate_values))
        assert acc.Scalars("final/eval_loss")[-1].value == pytest.approx(trial.value)

        content = acc.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        assert start.session_start_info.group_name == "pricer"
        hparams = dict(start.session_start_info.hparams)
        assert set(hparams) == set(trial.params)
        assert hparams["learning_rate"].number_value == pytest.approx(trial.params["learning_rate"])
        end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
        assert end.session_end_info.status == 1  # STATUS_SUCCESS


# ----------------------------------------------------------------------------------------------------
# Never fail a trial because of tracking


class Recording:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_on = fail_on
        self.closed = False

    def _do(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] == self.fail_on:
            raise RuntimeError(f"tracker broke in {call[0]}")

    def start(self, spec: TrialSpec) -> None:
        self._do("start", spec.number)

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._do("log_eval", step)

    def finish(self, state: str, metrics: dict[str, Any]) -> None:
        self._do("finish", state)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("fail_on", ["start", "log_eval", "finish"])
def test_a_tracker_that_raises_does_not_fail_the_trial(tmp_path, monkeypatch, caplog, fail_on):
    inner = Recording(fail_on)
    monkeypatch.setattr(tracking, "make_tracker", lambda cfg: tracking.SafeTracker(inner, "test"))
    with caplog.at_level(logging.WARNING, logger="harness.trial.tracking"):
        study = run_sweep(sweep(tmp_path, "budget.n_trials=3"), recipe=fake_recipe).study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    warnings = [r for r in caplog.records if "tracking disabled" in r.getMessage()]
    assert len(warnings) == 1 and fail_on in warnings[0].getMessage()
    assert inner.calls[-1][0] == fail_on  # disabled after the first error: no further calls
    assert inner.closed


def test_a_broken_tensorboard_folder_only_disables_tracking(tmp_path, caplog):
    pytest.importorskip("tensorboard")
    cfg = sweep(tmp_path, TWO, "tracking.backend=tensorboard")
    cfg.study_dir.mkdir(parents=True)
    (cfg.study_dir / "tb").write_text("a file where the log folder should be")
    with caplog.at_level(logging.WARNING, logger="harness.trial.tracking"):
        study = run_sweep(cfg, recipe=fake_recipe).study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sum("TensorBoard tracking disabled" in r.getMessage() for r in caplog.records) == 1


def test_every_exit_path_finishes_the_run(tmp_path, monkeypatch):
    inner = Recording()
    monkeypatch.setattr(tracking, "make_tracker", lambda cfg: tracking.SafeTracker(inner, "test"))

    def mixed(spec, on_eval):
        if spec.number == 1:
            raise RuntimeError("boom")
        if spec.number == 2:
            on_eval(20, {"eval_loss": 1.0})
            return TrialResult(1.0, {"eval_loss": 1.0}, 20, 20, 0.01, pruned=True)
        if spec.number == 3:
            return TrialResult(math.nan, {"eval_loss": math.nan}, 20, 20, 0.01)
        return fake_recipe(spec, on_eval)

    study = run_sweep(sweep(tmp_path, "budget.n_trials=4"), recipe=mixed).study
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "PRUNED", "FAIL"]
    finishes = [c[1] for c in inner.calls if c[0] == "finish"]
    assert finishes == ["COMPLETE", "FAIL", "PRUNED", "FAIL"]
    starts = [c[1] for c in inner.calls if c[0] == "start"]
    assert starts == [0, 1, 2, 3]
    assert ("log_eval", 20) in inner.calls


def test_safe_tracker_closes_a_run_left_open_and_finish_is_idempotent():
    inner = Recording()
    safe = tracking.SafeTracker(inner, "test")
    spec = type("S", (), {"number": 5})()
    safe.start(spec)  # type: ignore[arg-type]
    safe.start(spec)  # type: ignore[arg-type]  # the previous trial never reached finish()
    safe.finish("COMPLETE", {})
    safe.finish("COMPLETE", {})
    assert [c[:2] for c in inner.calls] == [
        ("start", 5),
        ("finish", "FAIL"),
        ("start", 5),
        ("finish", "COMPLETE"),
    ]


def test_default_is_no_tracking(tmp_path):
    cfg = sweep(tmp_path, TWO)
    assert cfg.tracking.backend == "none"
    assert isinstance(tracking.make_tracker(cfg), tracking.NullTracker)
    run_sweep(cfg, recipe=fake_recipe)
    assert not (cfg.study_dir / "wandb").exists() and not (cfg.study_dir / "tb").exists()
    assert (trialdir.trial_dir(cfg.study_dir, 0) / "metrics.json").exists()


# ----------------------------------------------------------------------------------------------------
# One real tiny QLoRA trial: the training log on disk, the TensorBoard curve, the memory figures.


def test_a_real_tiny_trial_logs_training_and_eval_lines(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = sweep(
        tmp_path,
        "budget.n_trials=1",
        "budget.max_steps=4",
        "budget.eval_steps=2",
        "dataset.max_eval_rows=8",
        "evaluation.samples=2",
        "tracking.backend=tensorboard",
    )
    study = run_sweep(cfg).study  # the real recipe: 4-bit base, LoRA, SFTTrainer, evaluation
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")

    lines = trialdir.read_jsonl(trialdir.trial_dir(cfg.study_dir, 0) / "log.jsonl")
    train = [r for r in lines if "loss" in r and not r.get("eval")]
    evals = [r for r in lines if r.get("eval")]
    assert [r["step"] for r in train] == [2, 4]
    for r in train:
        assert math.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["learning_rate"] > 0
    assert [r["step"] for r in evals] == [2, 4]
    assert all(math.isfinite(r["eval_loss"]) and r["perplexity"] > 1 for r in evals)

    acc = EventAccumulator(str(cfg.study_dir / "tb" / "trial-0000"))
    acc.Reload()
    curve = {e.step: e.value for e in acc.Scalars("eval/eval_loss")}
    assert curve == pytest.approx({r["step"]: r["eval_loss"] for r in evals}, rel=1e-5)
    assert trial.user_attrs["peak_rss_mb"] > 100  # a model and a trainer live in this process
