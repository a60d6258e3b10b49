"""Failures are data: interrupted trials are retried, failed ones are recorded and never re-run as-is.

Kinds of trial end, and how each counts toward `budget.n_trials`:
- COMPLETE, PRUNED: count.
- FAIL with a `fail_reason` (an exception, OOM after its retry, non-finite loss, a duplicate of a failed
  config): counts; the sweep goes on, and `budget.max_failures` in a row stops it.
- FAIL by interruption (`fail_reason: interrupted`: SIGKILL, SIGTERM, Ctrl-C, a lost heartbeat; or no
  `fail_reason` at all, which only Optuna's heartbeat check produces): does NOT count. The trial is
  re-queued with its original parameters (user attrs `retry_of`, `resume_from`), and the retry resumes
  from the interrupted trial's last checkpoint. So a run killed any number of times and re-run until done
  ends with exactly n_trials counted trials.

Who notices an interruption:
- Ctrl-C / SIGTERM: the objective itself, on its way out (it is still running).
- SIGKILL, single worker (the default; SQLite or journal file): the next `sweep run`. Each trial records
  `pid`, `host` and the process start time; a RUNNING trial of this host whose process is gone is stale.
- Several workers on one host: any of them, after each of its trials (`SharedBudget`), by the same pid
  check; so the survivors of a SIGKILL retry the trial without waiting for a heartbeat.
- Several workers sharing an RDB storage: Optuna's heartbeat (rdb.py) after its grace period, with
  `RetryStale` re-queuing the trial the same way. The journal file has no Optuna heartbeat: a worker
  writes user attr `heartbeat` (a timestamp) every HEARTBEAT_S while it trains (`heartbeat`), and a
  RUNNING trial whose last one is older than GRACE_S is stale, whatever host ran it. A RUNNING trial
  from another host is never touched by the pid check; only a heartbeat can declare it dead.
Never two retries of one trial: whoever recovers a trial first flips it to FAIL, and the storage lets only
one flip succeed (row locks on PostgreSQL, BEGIN IMMEDIATE on SQLite, the journal's total order).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from harness import compat
from harness.core import attrs, trialdir
from harness.core.ranks import group_size
from harness.errors import TrialFailed

INTERRUPTED = "interrupted"
SPARE = "spare: no seed repeat was left to run"
"""A trial `sweep confirm` asked for after another worker took the last repeat: no training, no budget."""
HEARTBEAT_S, GRACE_S = 30.0, 120.0
"""The journal storage's heartbeat: written every HEARTBEAT_S; stale after GRACE_S (covers clock skew
between hosts and a storage write delayed by a busy NFS server)."""
OWNERLESS_S = 20.0
"""A RUNNING trial that has not said who runs it yet: killed between its creation and the objective's first
line, or just created by a live worker that is about to say so. Only this old is it taken for dead."""


def reason(e: BaseException) -> str:
    """The fail_reason stored on a trial: the message alone for our own errors, else 'Type: message'."""
    if isinstance(e, TrialFailed):
        return str(e)[:2000]
    return f"{type(e).__name__}: {e}".strip()[:2000]


def is_oom(e: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (a RuntimeError subclass) or the host's MemoryError."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"


def halve_batch(training: Any) -> dict[str, int] | None:
    """The OOM retry: half the per-device batch, double accumulation (same effective batch)."""
    bs = training.per_device_train_batch_size
    if bs < 2:
        return None
    return {
        "per_device_train_batch_size": bs // 2,
        "gradient_accumulation_steps": 2 * training.gradient_accumulation_steps,
    }


# ----------------------------------------------------------------------------------------------------
# Budget


def is_interrupted(t: FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and t.user_attrs.get(attrs.FAIL_REASON, INTERRUPTED) == INTERRUPTED


REPEAT_KEYS = (attrs.REPEAT_OF, attrs.REPEAT_INDEX, attrs.SEED, attrs.DATA_SEED, attrs.AUDIT_OF)
"""What makes a trial a seed repeat or an audit of another (harness.study.confirm); a retry keeps them."""


def is_rerun(stored: attrs.Source) -> bool:
    """A seed repeat (`sweep confirm`, user attr `repeat_of`) or an audit of a pruned trial (`sweep audit`,
    `audit_of`): a re-run of a config the sampler already chose."""
    given = attrs.of(stored)
    return attrs.REPEAT_OF in given or attrs.AUDIT_OF in given


def counts(t: FrozenTrial) -> bool:
    """Does this trial use up one of budget.n_trials? (See the module docstring.) Seed repeats and audits
    (is_rerun) never do: they re-run a config, they do not search."""
    if is_rerun(t) or attrs.fail_reason(t) == SPARE:
        return False
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and not is_interrupted(t)


def done(study: optuna.Study) -> int:
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


# ----------------------------------------------------------------------------------------------------
# Who runs a trial


def _start_time(pid: int) -> str | None:
    """Process start time (clock ticks since boot) from /proc: guards against a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def owner() -> dict[str, Any]:
    pid = os.getpid()
    return {
        attrs.PID: pid,
        attrs.HOST: socket.gethostname(),
        attrs.PID_START: _start_time(pid),
        attrs.DEVICE: device(),
    }


def device() -> str:
    """What this process trains on, from what decided it: CUDA_VISIBLE_DEVICES (harness.study.workers sets one
    per worker) or torch, if the recipe has loaded it; else the CPU and its torch thread count."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return f"cuda:{visible}"
    torch = sys.modules.get("torch")
    if torch is not None and visible is None and torch.cuda.is_available():
        return "cuda"
    threads = torch.get_num_threads() if torch is not None else os.environ.get("OMP_NUM_THREADS")
    return f"cpu×{threads}" if threads else "cpu"


def mark_start(trial: optuna.Trial, trial_dir: Path) -> None:
    """First thing a trial does: say who runs it, on how many ranks and where its folder is (for the
    stale check, the retry and the device-hours a running trial is spending)."""
    ranks = group_size()
    stored = {**owner(), attrs.TRIAL_DIR: str(trial_dir), **({attrs.WORLD_SIZE: ranks} if ranks > 1 else {})}
    for k, v in stored.items():
        trial.set_user_attr(k, v)


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    return start is None or _start_time(pid) in (None, start)


def is_stale(t: FrozenTrial, now: float | None = None) -> bool:
    """A RUNNING trial whose process is gone (this host), whose journal heartbeat stopped (any host), or
    that never said who runs it (OWNERLESS_S)."""
    if t.state != TrialState.RUNNING:
        return False
    now = time.time() if now is None else now
    stored = t.user_attrs
    if attrs.PID not in stored:
        started = t.datetime_start.timestamp() if t.datetime_start else now
        return now - started > OWNERLESS_S
    beat = stored.get(attrs.HEARTBEAT)
    if isinstance(beat, (int, float)) and now - beat > GRACE_S:
        return True
    if stored.get(attrs.HOST) != socket.gethostname():
        return False  # another machine's trial: only a heartbeat can tell
    if stored[attrs.PID] == os.getpid():
        return False
    return not _alive(int(stored[attrs.PID]), stored.get(attrs.PID_START))


# ----------------------------------------------------------------------------------------------------
# Re-queuing


def checkpoint_of(t: FrozenTrial | dict[str, Any]) -> str | None:
    """The checkpoint a retry of `t` should resume from: its own if it wrote one, else the one it had
    itself resumed from (killed before its first eval), else none."""
    stored = t if isinstance(t, dict) else t.user_attrs
    own = trialdir.checkpoint_dir(Path(stored[attrs.TRIAL_DIR])) if stored.get(attrs.TRIAL_DIR) else None
    if own is not None and trialdir.find_checkpoint(own) is not None:
        older = stored.get(attrs.RESUME_FROM)
        if older and Path(older) != own:
            trialdir.remove_checkpoint(Path(older))  # superseded by the newer one: keep disk bounded
        return str(own)
    older = stored.get(attrs.RESUME_FROM)
    return older if older and trialdir.find_checkpoint(Path(older)) is not None else None


def retry_attrs(number: int, user_attrs: dict[str, Any]) -> dict[str, Any]:
    out = {attrs.RETRY_OF: number, attrs.RESUME_FROM: checkpoint_of(user_attrs)}
    # Same seed (and a repeat stays a repeat): the resumed run continues the same random streams.
    out.update({k: user_attrs[k] for k in REPEAT_KEYS if k in user_attrs})
    return out


def requeue(study: optuna.Study, number: int, params: dict[str, Any], user_attrs: dict[str, Any]) -> None:
    """Queue a retry with the same params (fixed via enqueue, so the sampler is not asked)."""
    study.enqueue_trial(params, user_attrs=retry_attrs(number, user_attrs), skip_if_exists=False)


def recover_interrupted(study: optuna.Study) -> list[int]:
    """At `sweep run` start: RUNNING trials whose process died become FAIL 'interrupted' and are re-queued."""
    storage = compat.study_storage(study)
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t):
            continue
        # Outside the try: an Optuna that moved the trial id (compat.PrivateAPIMoved) must stop the run,
        # not pass for "another worker got there first" and silently never recover a trial again.
        trial_id = compat.trial_id(t)
        try:
            storage.set_trial_user_attr(trial_id, attrs.FAIL_REASON, INTERRUPTED)
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except Exception:  # noqa: BLE001 - another worker finished or recovered it first
            continue
        if t.user_attrs.get(attrs.TRIAL_DIR):
            shutil.rmtree(trialdir.adapter_dir(Path(t.user_attrs[attrs.TRIAL_DIR])), ignore_errors=True)
        if t.params:
            requeue(study, t.number, t.params, t.user_attrs)
        recovered.append(t.number)
    return recovered


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial, interval: float = HEARTBEAT_S) -> Iterator[None]:
    """While a trial trains on the journal storage: user attr `heartbeat` = now, every `interval` s. RDB
    storages have Optuna's own heartbeat (rdb.py), so nothing is written there."""
    from optuna.storages import JournalStorage

    storage = compat.study_storage(trial.study)
    if not isinstance(storage, JournalStorage):
        yield
        return
    stop = threading.Event()

    trial_id = compat.trial_id(trial)  # here, not in the thread: a moved name raises to the trial

    def beat() -> None:
        while True:
            try:  # the storage itself (thread-safe), not the Trial object the main thread is using
                storage.set_trial_user_attr(trial_id, attrs.HEARTBEAT, time.time())
            except Exception:  # noqa: BLE001 - the trial ended meanwhile (or the file is busy): next beat
                pass
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class SharedBudget:
    """After each trial: recover dead workers' trials, then stop once the study's budget is spent.

    `budget.n_trials` is the study's, not a worker's: a worker stops when the counted trials plus the ones
    running now reach it and no retry is waiting. Workers that see the budget open at the same moment may
    each start one more, so a study of W workers can end with up to W - 1 over; `over()` says how many."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials
        self.recovered: list[int] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.recovered += recover_interrupted(study)
        if self.spent(study):
            study.stop()

    def spent(self, study: optuna.Study) -> bool:
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING and not is_rerun(t) for t in trials):
            return False  # a retry (or an enqueued config) is owed: someone must run it (re-runs: confirm)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        return sum(counts(t) for t in trials) + running >= self.n_trials

    def over(self, study: optuna.Study) -> int:
        return max(0, done(study) - self.n_trials)


class RetryStale(RetryHeartbeatStaleTrialCallback):
    """Optuna's heartbeat retry (several workers on one RDB storage), plus our retry_of/resume_from."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        t = copy.deepcopy(trial)
        t.user_attrs = retry_attrs(trial.number, trial.user_attrs)
        super().__call__(study, t)


# ----------------------------------------------------------------------------------------------------
# A config that failed is not run again as-is


def duplicate_of_failed(study: optuna.Study, params: dict[str, Any], number: int) -> int | None:
    """The number of an earlier trial with these exact params that failed for a real reason (not an
    interruption, not itself a duplicate). Its rerun would fail the same way, so it is skipped: recorded
    as FAIL 'duplicate of failed trial N' without training. It uses a budget slot and counts toward
    max_failures, so a tiny search space whose every config fails cannot loop forever."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        why = t.user_attrs.get(attrs.FAIL_REASON, INTERRUPTED)
        if t.number == number or why == INTERRUPTED or why.startswith("duplicate of failed trial"):
            continue
        if _same(t.params, params):
            return t.number
    return None


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, float) and isinstance(w, float):
            if not math.isclose(v, w, rel_tol=1e-12, abs_tol=0.0):
                return False
        elif v != w:
            return False
    return True
