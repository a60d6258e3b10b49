"""Experiment trackers: each trial becomes one W&B run or one TensorBoard log dir.

The sweep file picks one with `tracking: {backend: none | wandb | tensorboard, project, entity, tags}`.
The objective drives a `Tracker` through a trial: `start(spec)` once the params are known, `log_eval(step,
metrics)` at every eval, `finish(state, metrics)` when the trial ends COMPLETE, PRUNED or FAIL.

Tracking is a side channel: a tracker that fails (no login, no package, a full disk) must never fail a
trial. `make_tracker` therefore wraps every backend in `SafeTracker`, which turns any exception into one
warning and switches that tracker off for the rest of the sweep.

- W&B: runs grouped by study (`group` = study name, `job_type` = "sweep"), named trial-NNNN, config =
  sampled params, `eval/<metric>` per eval step, final metrics and `state` in the summary; FAIL finishes with
  exit code 1. Files go to results/<study>/wandb. Without WANDB_MODE and without a W&B login, runs are
  written offline (never an interactive login prompt in the middle of a sweep); `wandb sync` uploads them.
- TensorBoard: results/<study>/tb/trial-NNNN per trial, so `tensorboard --logdir results/<study>/tb` shows
  every trial side by side; `eval/<metric>` scalars, `final/<metric>` scalars and the HParams tab (params +
  session status). Written with torch's SummaryWriter, which needs the `tensorboard` package
  (`pip install 'harness[tensorboard]'`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Literal, Protocol

from harness.core import trialdir
from harness.core.spec import TrialSpec
from harness.sweepfile.schema import SweepConfig

log = logging.getLogger("harness.trial.tracking")

STATES = ("COMPLETE", "PRUNED", "FAIL")


class Tracker(Protocol):
    def start(self, spec: TrialSpec) -> None: ...

    def log_eval(self, step: int, metrics: dict[str, float]) -> None: ...

    def finish(self, state: str, metrics: dict[str, Any]) -> None: ...


class NullTracker:
    """backend: none."""

    def start(self, spec: TrialSpec) -> None:
        pass

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def finish(self, state: str, metrics: dict[str, Any]) -> None:
        pass


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Finite numbers only: trackers plot numbers, and NaN breaks TensorBoard's and W&B's axes."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


def _plain(value: Any) -> bool | int | float | str:
    """Config/hparam values: scalars as they are, anything else as text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ----------------------------------------------------------------------------------------------------
# W&B


class WandbTracker:
    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self.run: Any = None
        self.mode: Literal["offline"] | None = None
        self._mode_known = False

    def _mode(self, wandb: Any) -> Literal["offline"] | None:
        """WANDB_MODE wins; else online only with a stored key, so a sweep never waits at a login prompt."""
        if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
            return None
        try:
            logged_in = bool(wandb.login(prompt=False, verify=False))
        except TypeError:  # wandb without `prompt=`: only the environment can tell
            logged_in = False
        if not logged_in:
            log.warning(
                "W&B: no login found; writing runs offline under %s (upload later with `wandb sync`)",
                self.cfg.study_dir / "wandb",
            )
            return "offline"
        return None

    def start(self, spec: TrialSpec) -> None:
        import wandb

        cfg, t = self.cfg, self.cfg.tracking
        cfg.study_dir.mkdir(parents=True, exist_ok=True)
        if not self._mode_known:  # ask once per sweep, not once per trial
            self.mode, self._mode_known = self._mode(wandb), True
        config = {k: _plain(v) for k, v in spec.params.items()}
        config.update({"trial": spec.number, "seed": spec.seed})
        self.run = wandb.init(
            project=t.project or cfg.name,
            entity=t.entity,
            group=cfg.name,
            job_type="sweep",
            name=trialdir.trial_name(spec.number),
            config=config,
            tags=list(dict.fromkeys([*cfg.tags, *t.tags])),
            notes=cfg.description or None,
            dir=str(cfg.study_dir),  # wandb adds its own wandb/ folder: results/<study>/wandb/<run>
            mode=self.mode,
            # console="off": our progress lines stay on the terminal instead of being captured per run.
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log({f"eval/{k}": v for k, v in _numbers(metrics).items()}, step=step)

    def finish(self, state: str, metrics: dict[str, Any]) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        run.summary.update({**_numbers(metrics), "state": state})
        run.finish(exit_code=1 if state == "FAIL" else 0)

    def close(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            run.finish(exit_code=1)


# ----------------------------------------------------------------------------------------------------
# TensorBoard


def _hparams_summary(tag: str, **data: Any) -> Any:
    """An HParams-plugin summary (session start/end), built from tensorboard's protos directly:
    tensorboard.plugins.hparams.summary would import TensorFlow."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = HParamsPluginData(version=PLUGIN_DATA_VERSION, **data)
    meta = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


class TensorBoardTracker:
    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self.writer: Any = None
        self.last_step = 0

    def logdir(self, number: int) -> Path:
        return self.cfg.study_dir / "tb" / trialdir.trial_name(number)

    def start(self, spec: TrialSpec) -> None:
        from tensorboard.plugins.hparams.metadata import SESSION_START_INFO_TAG
        from tensorboard.plugins.hparams.plugin_data_pb2 import SessionStartInfo
        from torch.utils.tensorboard import SummaryWriter

        folder = self.logdir(spec.number)
        # A trial number is reused only when its study was deleted and created again; old event files
        # would otherwise be drawn as part of the new trial's curves.
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = SummaryWriter(log_dir=str(folder))
        self.last_step = 0
        info = SessionStartInfo(group_name=self.cfg.name, start_time_secs=time.time())
        for k, v in spec.params.items():
            v = _plain(v)
            if isinstance(v, bool):
                info.hparams[k].bool_value = v
            elif isinstance(v, (int, float)):
                info.hparams[k].number_value = float(v)
            else:
                info.hparams[k].string_value = v
        self.writer.file_writer.add_summary(_hparams_summary(SESSION_START_INFO_TAG, session_start_info=info))
        self.writer.flush()

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is None:
            return
        for k, v in _numbers(metrics).items():
            self.writer.add_scalar(f"eval/{k}", v, step)
        self.last_step = max(self.last_step, step)
        self.writer.flush()  # so `tensorboard` shows a running trial, and a killed one keeps its curve

    def finish(self, state: str, metrics: dict[str, Any]) -> None:
        from tensorboard.plugins.hparams.api_pb2 import Status
        from tensorboard.plugins.hparams.metadata import SESSION_END_INFO_TAG
        from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo

        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            for k, v in _numbers(metrics).items():
                writer.add_scalar(f"final/{k}", v, self.last_step)
            status = {"COMPLETE": "STATUS_SUCCESS", "PRUNED": "STATUS_ABORTED"}.get(state, "STATUS_FAILURE")
            end = SessionEndInfo(status=Status.Value(status), end_time_secs=time.time())
            writer.file_writer.add_summary(_hparams_summary(SESSION_END_INFO_TAG, session_end_info=end))
            writer.add_text("state", state, self.last_step)
        finally:
            writer.close()

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()


# ----------------------------------------------------------------------------------------------------
# Safety wrapper and factory


class SafeTracker:
    """Never lets tracking fail a trial: the first exception is reported once and the tracker is off."""

    def __init__(self, inner: Tracker, name: str) -> None:
        self.inner, self.name = inner, name
        self.enabled = True
        self.error: str | None = None
        self._open = False  # a run was started and not finished yet

    def _call(self, what: str, *args: Any) -> None:
        if not self.enabled:
            return
        try:
            getattr(self.inner, what)(*args)
        except Exception as e:  # noqa: BLE001 - any tracker error: warn once, carry on without it
            self.enabled = False
            self.error = f"{type(e).__name__}: {e}".strip()
            log.warning(
                "%s tracking disabled for the rest of this sweep (%s failed: %s)", self.name, what, self.error
            )
            close = getattr(self.inner, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - already reported; release what we can
                    pass

    def start(self, spec: TrialSpec) -> None:
        if self._open:  # the previous trial ended on a path that never reached finish()
            self.finish("FAIL", {})
        self._call("start", spec)
        self._open = self.enabled

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._call("log_eval", step, metrics)

    def finish(self, state: str, metrics: dict[str, Any]) -> None:
        if not self._open:  # finish is idempotent: every exit path may call it
            return
        self._open = False
        self._call("finish", state, metrics)


def make_tracker(cfg: SweepConfig) -> Tracker:
    backend = cfg.tracking.backend
    if backend == "wandb":
        return SafeTracker(WandbTracker(cfg), "W&B")
    if backend == "tensorboard":
        return SafeTracker(TensorBoardTracker(cfg), "TensorBoard")
    return NullTracker()
