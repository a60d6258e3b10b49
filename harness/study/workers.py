"""`sweep run FILE --workers N`: N worker processes on one study, each its own `sweep run`.

The workers meet only in the storage and the results folder (design.md), exactly as N `sweep run`s started
by hand in N terminals do; this module adds what one command owes its user on top of that:

- devices: with GPUs, `--devices-per-worker K` (alias `--gpus-per-worker`, default 1) GPUs per worker
  through CUDA_VISIBLE_DEVICES; the CPU cores are split between the workers (torch reads OMP_NUM_THREADS
  at start), since small models scale badly across threads and N processes on one thread each beat one
  on N;
- ranks: with `training.distributed: ddp | fsdp` a worker is K processes, one per device (on CPU: one
  per core share), started here with RANK / WORLD_SIZE / MASTER_PORT (a free port per worker), each the
  same worker command (harness.core.ranks: rank 0 owns the trial). The ranks of a worker live and die
  together: when one exits, the others are stopped (SIGTERM) rather than left waiting in a collective;
- one combined progress display: every worker's lines, tagged `w0`, `w1`, ..., the trial counter
  being the study's, and identical error lines printed once;
- one exit code and one verdict: the sweep is judged (table, `expect:`) once all workers are done;
- Ctrl-C (or SIGTERM) stops all: each worker gets one SIGTERM and re-queues its trial, as a single
  `sweep run` does. Workers run in their own session, so a terminal's Ctrl-C reaches only this process,
  which then signals each worker once (a second signal could cut a worker's re-queueing short).
"""

from __future__ import annotations

import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.study.run import RunOutcome
    from harness.sweepfile.schema import SweepConfig

STOP_WAIT_S = 120.0
"""How long stopped workers get to re-queue their trials before they are killed."""
LINE = re.compile(r"^(trial\s+\d+ )\[\d+/\d+\] (\S+)")
FINISHED = ("done", "pruned", "failed")


class WorkersError(HarnessError):
    """--workers / --devices-per-worker / training.distributed that cannot be honoured on this machine."""


@dataclass(frozen=True)
class Pool:
    """How `sweep run` was asked to run: N workers, or (worker set) as one worker of someone's pool."""

    n: int = 1
    devices_per_worker: int | None = None
    recipe: str | None = None
    """`module:function` for the workers (`sweep run --recipe`), passed on to each."""
    overrides: tuple[str, ...] = ()
    """The dotted overrides `sweep run` was given (with --n-trials / --results-dir folded in)."""
    worker: int | None = None


# ----------------------------------------------------------------------------------------------------
# Devices


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPU ids this process may hand out: CUDA_VISIBLE_DEVICES if set (empty = none), else the
    GPUs nvidia-smi lists (no torch import: the pool itself never trains)."""
    seen: Mapping[str, str] = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in seen:
        return [g.strip() for g in seen["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def worker_envs(
    n: int, gpus: list[str], cores: int, gpus_per_worker: int | None = None, ranks: int = 1
) -> list[dict[str, str]]:
    """The environment each of `n` workers gets on top of this one's (devices and threads); `ranks`: the
    processes of each worker (training.distributed), which share its threads on CPU."""
    if n < 1:
        raise WorkersError(f"--workers {n}: give 1 or more")
    if gpus_per_worker is not None and gpus_per_worker < 1:
        raise WorkersError(f"--devices-per-worker {gpus_per_worker}: give 1 or more")
    if gpus_per_worker and not gpus and ranks == 1:
        raise WorkersError(
            f"--devices-per-worker {gpus_per_worker}: this machine shows no GPU (CUDA_VISIBLE_DEVICES or "
            "nvidia-smi); on CPU a worker spans several cores only as ranks of training.distributed: "
            "ddp or fsdp, else the workers share the cores: leave the option out"
        )
    per = gpus_per_worker or 1
    if gpus and n * per > len(gpus):
        raise WorkersError(
            f"--workers {n} with {per} GPU(s) each needs {n * per} GPUs; this machine has {len(gpus)} "
            f"({','.join(gpus)}): use --workers {max(1, len(gpus) // per)}"
        )
    if not gpus and ranks > 1 and n * ranks > cores:  # workers of one process each may share a core
        raise WorkersError(
            f"--workers {n} with {ranks} ranks each needs {n * ranks} CPU cores (one a rank); this "
            f"machine has {cores}: use --workers {max(1, cores // ranks)} or --devices-per-worker "
            f"{max(1, cores // n)}"
        )
    threads = str(max(1, cores // (n * ranks) if not gpus else cores // n))
    envs = []
    for i in range(n):
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[i * per : (i + 1) * per])
        envs.append(env)
    return envs


def plan_ranks(cfg: SweepConfig, pool: Pool | None, gpus: list[str]) -> int:
    """The ranks each worker's trials train on, checked at load (a WorkersError, exit 2, before anything
    is written): K with training.distributed (K from --devices-per-worker, or the launcher's WORLD_SIZE
    for a process started by torchrun/srun), else 1. What cannot run here is refused now, never mid-trial."""
    from harness.core import ranks

    how = cfg.training.distributed
    k = ranks.world() if ranks.launched() else (pool.devices_per_worker if pool else None) or 1
    where = "training.distributed"
    if how == "none":
        if ranks.launched():
            raise WorkersError(
                f"this process is rank {ranks.rank()} of {k} (RANK/WORLD_SIZE are set: torchrun, srun), but "
                f"{where} is none: set {where}=ddp or fsdp, or start one `sweep run` per worker"
            )
        if k > 1 and not gpus:
            raise WorkersError(
                f"--devices-per-worker {k}: this machine shows no GPU, and on CPU a trial spans several "
                f"cores only as ranks: set {where}=ddp (or fsdp), or leave the option out"
            )
        return 1
    if k < 2:
        raise WorkersError(
            f"{where}: {how} trains each trial on several ranks: give --devices-per-worker 2 or more (one "
            "rank a device; on CPU a core each), or launch the ranks yourself (torchrun --nproc-per-node K)"
        )
    if cfg.trainer != "sft":
        raise WorkersError(f"{where}: {how} runs trainer: sft; trainer: {cfg.trainer} trains on one device")
    if cfg.confirm is not None:
        raise WorkersError(
            f"{where}: {how} with confirm: (seed repeats right after the sweep) is not supported: leave "
            "confirm: out and run `sweep confirm STUDY` once the sweep is done"
        )
    quantized = {cfg.model.quantization} | {
        str(v) for name, spec in cfg.parameters.items() if name == "quantization" for v in spec.candidates()
    }
    if how == "fsdp" and quantized - {"none"}:
        which = ", ".join(sorted(quantized - {"none"}))
        if not gpus or "int8" in quantized:
            raise WorkersError(
                f"{where}: fsdp with model.quantization {which}: bitsandbytes' quantized weights cannot be "
                f"sharded {'on CPU' if not gpus else '(int8)'}; use model.quantization: none (plain LoRA) "
                "with fsdp, or training.distributed: ddp"
            )
    return k


def rank_envs(worker_env: dict[str, str], k: int, port: int) -> list[dict[str, str]]:
    """The environment of each of a worker's `k` ranks: who it is and where rank 0 listens."""
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(k)}
    return [
        {**worker_env, **base, "RANK": str(r), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": str(k)}
        for r in range(k)
    ]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def device_text(env: dict[str, str]) -> str:
    gpus = env.get("CUDA_VISIBLE_DEVICES")
    return f"cuda:{gpus}" if gpus else f"cpu×{env['OMP_NUM_THREADS']}"


# ----------------------------------------------------------------------------------------------------
# The pool


def worker_command(path: Path, storage: str | None, pool: Pool, i: int) -> list[str]:
    cmd = [sys.executable, "-m", "harness.cli", "run", str(path), *pool.overrides, "--worker-id", str(i)]
    if storage:
        cmd += ["--storage", storage]
    if pool.recipe:
        cmd += ["--recipe", pool.recipe]
    return cmd


def combined_exit(codes: list[int]) -> tuple[str, str]:
    """Workers' exit codes -> (status for the sweep's report, why) : user error > interrupted > failed."""
    if any(c == 2 for c in codes):
        return "error", ""
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if not bad:
        return "passed", ""
    why = []
    for i, c in bad:
        if c < 0:
            name = signal.Signals(-c).name if -c in signal.valid_signals() else str(-c)
            why.append(f"worker w{i} was killed ({name}); its trial is retried by the others or the next run")
        elif c in (130, 143):
            why.append(f"worker w{i} was interrupted; run the same command again to resume")
        elif c == 1:
            why.append(f"worker w{i} stopped after too many failed trials in a row")
        else:
            why.append(f"worker w{i} exited with {c}")
    return "failed", "; ".join(why)


class Output:
    """The workers' lines as one display: tagged, the study's trial counter, errors printed once."""

    def __init__(self, console: Console, err: Console, finished: int, total: int) -> None:
        self.console, self.err, self.finished, self.total = console, err, finished, total
        self.errors: list[str] = []

    def line(self, i: int, text: str) -> None:
        if text.startswith("error: "):
            if text not in self.errors:
                self.errors.append(text)
                self.err.print(text, markup=False, soft_wrap=True)
            return
        m = LINE.match(text)
        if m:
            word = m.group(2)
            self.finished += word in FINISHED
            counter = f"[{self.finished}/{self.total}] " if word in FINISHED else ""
            text = m.group(1) + counter + text[m.end(1) :].split("] ", 1)[1]
        self.console.print(f"w{i} {text}", markup=False, highlight=False, soft_wrap=True)


@dataclass
class PoolResult:
    """How the pool went: its outcome (None after a user error), the status and why (collect judges)."""

    outcome: RunOutcome | None
    status: str
    why: str


def run_pool(
    cfg: SweepConfig, path: Path, storage: str | None, pool: Pool, console: Console, err: Console
) -> PoolResult:
    """Start `pool.n` workers on `path`'s study, show their progress, wait for all of them."""
    from harness.study import failures
    from harness.study import storage as st
    from harness.study.run import RunOutcome

    gpus = visible_gpus()
    k = plan_ranks(cfg, pool, gpus)
    envs = worker_envs(pool.n, gpus, os.cpu_count() or 1, pool.devices_per_worker, k)
    url = st.storage_url(cfg, storage)
    st.check_url(url)
    before = _existing(url, cfg.name)
    start = time.perf_counter()
    groups = [
        [
            subprocess.Popen(
                worker_command(path, storage, pool, i),
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            for env in (rank_envs(worker_env, k, free_port()) if k > 1 else [worker_env])
        ]
        for i, worker_env in enumerate(envs)
    ]
    shown = ", ".join(
        f"w{i} pid {'+'.join(str(p.pid) for p in group)} {device_text(e)}"
        + (f" × {k} ranks" if k > 1 else "")
        for i, (group, e) in enumerate(zip(groups, envs, strict=True))
    )
    what = f"{pool.n} worker{'s' if pool.n > 1 else ''}"
    console.print(f"{cfg.name}: {what} on {st.mask_url(url)}: {shown}", markup=False, soft_wrap=True)
    done = failures.done(before) if before is not None else 0
    out = Output(console, err, done, cfg.budget.n_trials)
    codes = _follow(groups, out)
    status, why = combined_exit(codes)
    if status == "error":  # a user error: every worker met the same one, printed once above
        return PoolResult(None, status, "; ".join(e.removeprefix("error: ") for e in out.errors))
    study = st.load_readonly(url, cfg.name)
    ran = len(study.trials) - (len(before.trials) if before is not None else 0)
    stopped = any(c == 1 for c in codes)
    return PoolResult(RunOutcome(study, ran, stopped, time.perf_counter() - start), status, why)


def _existing(url: str, name: str):  # -> optuna.Study | None
    from harness.errors import StorageError
    from harness.study import storage as st

    try:
        return st.load_readonly(url, name)
    except StorageError:
        return None


def _follow(groups: list[list[subprocess.Popen[str]]], out: Output) -> list[int]:
    """Print the workers' lines as they come until all have exited; on Ctrl-C / SIGTERM stop them all
    (one SIGTERM each), still printing what they say while they re-queue, then re-raise. A worker of
    several ranks lives and dies as one (`watch`); its code is rank 0's, or a rank's that was killed."""
    lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
    procs = [(i, p) for i, group in enumerate(groups) for p in group]

    def pump(i: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((i, line.rstrip("\n")))
        lines.put((i, None))

    readers = [threading.Thread(target=pump, args=(i, p), daemon=True) for i, p in procs]
    for r in readers:
        r.start()
    seen: dict[int, float] = {}
    open_streams = len(procs)
    try:
        while open_streams:
            try:
                i, text = lines.get(timeout=0.5)  # a timeout keeps the wait interruptible by Ctrl-C
            except queue.Empty:
                text = ""
            if text is None:
                open_streams -= 1
            elif text:
                out.line(i, text)
            watch(groups, seen)
    except KeyboardInterrupt:
        stop([g[0] for g in groups], lines, out)  # rank 0s first: they re-queue while the others answer
        stop([p for g in groups for p in g[1:]], lines, out)
        raise
    return [_group_code([p.wait() for p in group]) for group in groups]


RANK_GRACE_S = 30.0
"""How long the other ranks of a worker whose rank 0 finished get to leave on their own."""


def watch(groups: list[list[subprocess.Popen[str]]], seen: dict[int, float]) -> None:
    """A rank that died (or a rank 0 that finished) ends its worker: the other ranks get one SIGTERM,
    instead of waiting in a collective for a rank that is gone (process-group timeout as the backstop).
    `seen`: group -> when rank 0 was seen done (inf once its ranks were stopped)."""
    for g, group in enumerate(groups):
        codes = [p.poll() for p in group]
        if len(group) < 2 or seen.get(g) == math.inf or None not in codes:
            continue
        if all(c in (None, 0) for c in codes):  # a follower that got stop leaves before rank 0 does
            if codes[0] is None:
                continue
            # rank 0 finished and sent stop: the others are on their way out
            if time.monotonic() - seen.setdefault(g, time.monotonic()) < RANK_GRACE_S:
                continue
        seen[g] = math.inf
        for p in group:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)


def _group_code(codes: list[int]) -> int:
    """One worker's exit code from its ranks': a rank killed by a signal other than our SIGTERM (the
    fault), else rank 0's (it owns the trial and the verdict)."""
    killed = [c for c in codes if c < 0 and c != -signal.SIGTERM]
    return killed[0] if killed else codes[0]


def stop(procs: list[subprocess.Popen[str]], lines: queue.Queue[tuple[int, str | None]], out: Output) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        try:
            i, text = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if text is not None:
            out.line(i, text)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
