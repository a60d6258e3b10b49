"""One trial on K ranks (training.distributed: ddp | fsdp, `--devices-per-worker K`): real `sweep run`
subprocesses with 2 gloo ranks on CPU, the builtin base at tiny sizes. What every figure is checked
against is read back from the trial folders and the study, never typed in."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers import ROOT, SWEEP, TINY, assert_one_requeued, sweep, sweep_cli
from optuna.trial import TrialState

from harness.core import ranks, trialdir
from harness.errors import HarnessError
from harness.study import failures, workers
from harness.sweepfile.load import load_sweep

DDP = ["training.distributed=ddp", "--devices-per-worker", "2"]


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def run(tmp_path: Path, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return sweep_cli(["run", str(SWEEP), *TINY, "--results-dir", str(tmp_path), *argv], ROOT, timeout=timeout)


def start(tmp_path: Path, *argv: str) -> subprocess.Popen[str]:
    """`run`'s command, started and streamed line by line (stdout and stderr together), for a test that
    signals the ranks while they train."""
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(SWEEP),
        *TINY,
        "--results-dir",
        str(tmp_path),
        *argv,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def launch(tmp_path: Path, *argv: str, stderr: int = subprocess.PIPE) -> list[subprocess.Popen[str]]:
    """What torchrun / srun do: 2 `sweep run` processes (ddp) with RANK / WORLD_SIZE / MASTER_PORT set."""
    cmd = [sys.executable, "-m", "harness.cli", "run", str(SWEEP), *TINY, "--results-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env |= {"WORLD_SIZE": "2", "MASTER_PORT": str(workers.free_port())}
    return [
        subprocess.Popen(
            [*cmd, "training.distributed=ddp", *argv],
            cwd=ROOT,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        for r in range(2)
    ]


def rank_pids(line: str, known: list[int]) -> list[int]:
    """w0's two rank pids from `sweep run`'s first line ("w0 pid 123+124"), else those known so far."""
    m = re.search(r"w0 pid (\d+)\+(\d+)", line)
    return [int(m.group(1)), int(m.group(2))] if m else known


def study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="pricer", storage=f"sqlite:///{tmp_path}/pricer/study.db")


# ----------------------------------------------------------------------------------------------------
# End to end


def test_ddp_sweep_trains_each_trial_on_two_ranks(tmp_path):
    out = run(tmp_path, *DDP, "--n-trials", "2")
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]  # 1: the file's expect: FAILs
    assert "× 2 ranks" in out.stdout and "Traceback" not in out.stderr
    s = study(tmp_path)
    done = s.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 2 and not s.get_trials(states=(TrialState.RUNNING,))
    for t in done:
        m = metrics(Path(t.user_attrs["trial_dir"]))
        assert m["world_size"] == 2 and t.user_attrs["world_size"] == 2
        assert m["value"] == min(h["eval_loss"] for h in m["history"]) == t.value
        # evals computed once, by rank 0: one history entry per eval step, not one per rank
        steps = [h["step"] for h in m["history"]]
        assert steps == sorted(set(steps)) == list(range(4, 13, 4))
    # only rank 0 speaks: one start line per trial
    assert len(re.findall(r"trial +\d+ start", out.stdout)) == 2


def test_fsdp_plain_lora_trains_a_trial_on_two_ranks(tmp_path):
    """`metric.goal=maximize` on eval_loss makes the first eval the best: every rank must score rank 0's
    restored best adapter (the generation forwards need all ranks, and would not line up otherwise)."""
    argv = ["training.distributed=fsdp", "model.quantization=none", "--devices-per-worker", "2"]
    out = run(tmp_path, *argv, "metric.goal=maximize", "--n-trials", "1")
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
    (t,) = study(tmp_path).get_trials(states=(TrialState.COMPLETE,))
    m = metrics(Path(t.user_attrs["trial_dir"]))
    assert m["world_size"] == 2 and m["value"] == t.value == max(h["eval_loss"] for h in m["history"])
    assert m["history"][-1]["eval_loss"] < m["history"][0]["eval_loss"]  # it learned
    assert m["best_step"] == m["history"][0]["step"] and "mae" in m["metrics"]  # scored on the best
    assert (tmp_path / "pricer" / "best-adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_ranks_started_by_a_launcher_join_and_only_rank_0_prints(tmp_path):
    """What torchrun / srun do: K `sweep run` processes with RANK / WORLD_SIZE / MASTER_PORT set."""
    procs = launch(tmp_path, "--n-trials", "1")
    (out0, err0), (out1, err1) = (p.communicate(timeout=300) for p in procs)
    assert procs[0].returncode in (0, 1) and procs[1].returncode == 0, out0[-3000:] + err0[-3000:] + err1
    assert "trial   0" in out0 and out1 == ""  # rank 1 trained, silently
    (t,) = study(tmp_path).get_trials(states=(TrialState.COMPLETE,))
    assert metrics(Path(t.user_attrs["trial_dir"]))["world_size"] == 2


ONE_POINT = [
    "search_space=null",
    "parameters.learning_rate=0.003",
    "training.lora_dropout=0",  # dropout draws differ per rank; the equivalence is about the batches
    "evaluation.samples=0",
    "--n-trials",
    "1",
]


@pytest.mark.slow
def test_two_ranks_of_batch_4_train_like_one_process_of_batch_8(tmp_path):
    """Same global batch, same data order, loss averaged over the same tokens: the eval histories agree
    within 2% (they agree to 4 digits here)."""
    one = run(tmp_path / "one", *ONE_POINT, "training.per_device_train_batch_size=8")
    two = run(tmp_path / "two", *ONE_POINT, "training.per_device_train_batch_size=4", *DDP)
    for out in (one, two):
        assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
    a = metrics(tmp_path / "one" / "pricer" / "trial-0000")
    b = metrics(tmp_path / "two" / "pricer" / "trial-0000")
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]]
    for x, y in zip(a["history"], b["history"], strict=True):
        assert abs(x["eval_loss"] - y["eval_loss"]) <= 0.02 * abs(x["eval_loss"]), (
            a["history"],
            b["history"],
        )


# ----------------------------------------------------------------------------------------------------
# Faults


@pytest.mark.slow
@pytest.mark.parametrize(
    "how",
    [["training.distributed=ddp"], ["training.distributed=fsdp", "model.quantization=none"]],
    ids=["ddp", "fsdp"],
)
def test_a_rank_killed_mid_trial_interrupts_it_and_the_next_run_retries_it(tmp_path, how):
    argv = [
        *how,
        "--devices-per-worker",
        "2",
        "budget.max_steps=40",
        "budget.eval_steps=4",
        "--n-trials",
        "2",
    ]
    proc = start(tmp_path, *argv)
    assert proc.stdout is not None
    pids: list[int] = []
    killed = False
    lines = []
    for line in proc.stdout:
        lines.append(line)
        pids = rank_pids(line, pids)
        checkpoint = trialdir.find_checkpoint(tmp_path / "pricer" / "trial-0000" / trialdir.CHECKPOINT)
        if not killed and " step " in line and checkpoint is not None:
            os.kill(pids[1], signal.SIGKILL)  # rank 1, mid-trial, after a checkpoint was written
            killed = True
    proc.wait(timeout=120)
    text = "".join(lines)
    assert killed and proc.returncode != 0, text[-3000:]
    assert "killed (SIGKILL)" in text, text[-3000:]
    s = study(tmp_path)
    assert not s.get_trials(states=(TrialState.RUNNING,)), "no rank may be left hanging on a RUNNING trial"
    (first,) = [t for t in s.trials if t.number == 0]
    assert first.user_attrs["fail_reason"] == failures.INTERRUPTED
    again = run(tmp_path, *argv, timeout=600)
    assert again.returncode in (0, 1), again.stdout[-3000:] + again.stderr[-3000:]
    s = study(tmp_path)
    assert not s.get_trials(states=(TrialState.RUNNING,))
    retries = [t for t in s.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("retry_of") == 0]
    assert len(retries) == 1 and retries[0].params == first.params
    assert retries[0].user_attrs["resume_from"] and "restarted" not in retries[0].user_attrs
    assert metrics(Path(retries[0].user_attrs["trial_dir"]))["world_size"] == 2


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_and_requeues_the_trial(tmp_path):
    """SIGTERM (what Ctrl-C becomes for the pool) to `sweep run`: every rank stops, the trial is queued."""
    argv = [*DDP, "budget.max_steps=40", "budget.eval_steps=4", "--n-trials", "2"]
    proc = start(tmp_path, *argv)
    assert proc.stdout is not None
    pids: list[int] = []
    lines = []
    for line in proc.stdout:
        lines.append(line)
        pids = rank_pids(line, pids)
        if " step " in line:  # a trial is training on both ranks
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=180)
    text = "".join(lines) + rest
    assert proc.returncode == 143, text[-3000:]
    for pid in pids:  # no rank left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert_one_requeued(study(tmp_path), text[-3000:])


@pytest.mark.slow
def test_ctrl_c_under_a_launcher_stops_both_ranks_and_requeues_the_trial(tmp_path):
    """torchrun on Ctrl-C sends SIGTERM to every rank at once: rank 0 still re-queues its trial."""
    argv = ["budget.max_steps=40", "budget.eval_steps=4", "--n-trials", "2"]
    procs = launch(tmp_path, *argv, stderr=subprocess.STDOUT)  # streamed: stdout and stderr together
    assert procs[0].stdout is not None
    lines = []
    for line in procs[0].stdout:
        lines.append(line)
        if " step " in line:  # both ranks are training
            for p in procs:
                p.send_signal(signal.SIGTERM)
            break
    text = "".join(lines) + "".join(p.communicate(timeout=180)[0] for p in procs)
    assert [p.returncode for p in procs] == [143, 143], text[-3000:]
    assert_one_requeued(study(tmp_path), text[-3000:])


def test_ranks_of_a_worker_are_stopped_when_one_dies():
    """The launcher's watch: a rank that exits non-zero gets its siblings one SIGTERM at once."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    group = [subprocess.Popen(sleeper), subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])]
    group[1].wait()
    seen: dict[int, float] = {}
    workers.watch([group], seen)
    assert group[0].wait(timeout=30) == -signal.SIGTERM
    assert workers._group_code([group[0].returncode, group[1].returncode]) == -signal.SIGTERM
    assert workers._group_code([0, -signal.SIGKILL]) == -signal.SIGKILL  # the killed rank is the news


def test_rank_0s_recipe_keeps_exactly_the_recipes_protocols():
    """run_sweep asks isinstance(recipe, MeasuresBaseline) etc.; the Leader wrapping must answer as the
    recipe would (statically: Python 3.12 looks protocol attributes up with getattr_static)."""
    import inspect

    from harness.core.spec import MeasuresBaseline, ReportsData, ReportsProvenance

    class Partial:
        def __call__(self, spec, on_eval):
            return "trained"

        def baseline(self):
            return {"eval_loss": 1.0}

    leader = ranks.Leader(Partial())
    assert isinstance(leader, MeasuresBaseline) and not isinstance(leader, (ReportsData, ReportsProvenance))
    assert inspect.getattr_static(leader, "baseline")() == {"eval_loss": 1.0}
    assert not inspect.getattr_static(leader, "data_report", None)
    assert leader(None, None) == "trained"  # no process group: nothing to tell, the recipe runs


# ----------------------------------------------------------------------------------------------------
# What cannot run here fails at load (exit 2, nothing written)


def plan(*overrides: str, k: int | None = 2, gpus: tuple[str, ...] = ()) -> int:
    return workers.plan_ranks(sweep(Path("/tmp/unused"), *overrides), workers.Pool(1, k), list(gpus))


def test_the_rank_plan_and_its_refusals(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert plan("training.distributed=ddp") == 2
    assert plan("training.distributed=none", k=None) == 1
    with pytest.raises(HarnessError, match="--devices-per-worker 2 or more"):
        plan("training.distributed=ddp", k=None)
    with pytest.raises(HarnessError, match="quantization: none"):
        plan("training.distributed=fsdp")  # the file's nf4 on CPU
    assert plan("training.distributed=fsdp", "model.quantization=none") == 2
    with pytest.raises(HarnessError, match="int8"):
        plan("training.distributed=fsdp", "model.quantization=int8", gpus=("0", "1"))
    dpo = load_sweep(ROOT / "sweeps/pricer-dpo.yaml", ["training.distributed=ddp"])
    with pytest.raises(HarnessError, match="trainer: sft"):
        workers.plan_ranks(dpo, workers.Pool(1, 2), [])
    with pytest.raises(HarnessError, match="sweep confirm STUDY"):
        plan("training.distributed=ddp", "confirm={top: 1, seeds: 1}")
    with pytest.raises(HarnessError, match="needs 4 CPU cores"):
        workers.worker_envs(2, [], cores=2, ranks=2)
    envs = workers.rank_envs({"OMP_NUM_THREADS": "1"}, 2, 29500)
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    # torchrun / srun: the launcher's environment decides K
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert ranks.follower() and plan("training.distributed=ddp", k=None) == 3
    with pytest.raises(HarnessError, match="is none"):
        plan("training.distributed=none", k=None)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert ranks.launched() and not ranks.follower() and ranks.world() == 2


@pytest.mark.parametrize(
    "argv,why",
    [
        (["training.distributed=ddp"], "--devices-per-worker 2 or more"),
        (["training.distributed=fsdp", "--devices-per-worker", "2"], "quantization: none"),
        (["training.distributed=ddp", "--devices-per-worker", "64"], "CPU cores"),
        (["--devices-per-worker", "2"], "set training.distributed=ddp"),
        (["parameters.distributed={values: [none, ddp]}"], "parameters.distributed: not a tunable setting"),
    ],
)
def test_combinations_that_cannot_run_here_fail_at_load(tmp_path, argv, why):
    out = run(tmp_path, *argv, timeout=120)
    assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "pricer" / "study.db").exists()  # nothing written
