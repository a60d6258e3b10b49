"""One trial on K ranks (torch.distributed, `training.distributed: ddp | fsdp`): who this process is, the
process group, and what rank 0 tells the others.

Rank 0 owns the Optuna trial (samples, reports, prunes, writes storage and the trial folder), as in
Optuna's TorchDistributedTrial; the other ranks never open the storage. They run `follow`: wait for the
next trial's spec (or stop), train it with the same recipe, and take every stop decision (prune, early
stop, a failed eval) from rank 0 by broadcast (`decide`). After each trial every rank says how it went
(`agree`), so a trial one rank failed fails on all of them and the next trial starts in step.

The environment says who is who: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, set by
`sweep run --devices-per-worker K` (harness.study.workers launches the K ranks), by torchrun, or from
srun's SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID. torch is imported only when a group is started.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from harness.errors import TrialFailed

TIMEOUT_ENV = "HARNESS_DIST_TIMEOUT_S"
TIMEOUT_S = 1800.0
"""How long a rank waits in a collective before giving up: the backstop when a rank dies under a
launcher that does not stop the others (torchrun's does; harness's own does at once). Long enough for
rank 0's evals and generation while the others wait for its decision."""
LAUNCHED_BY = ("RANK", "SLURM_PROCID")
_FALLBACK = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID"}


def _env(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    seen = os.environ if env is None else env
    value = seen.get(name, seen.get(_FALLBACK.get(name, ""), ""))
    return int(value) if value.strip().isdigit() else default


def rank(env: Mapping[str, str] | None = None) -> int:
    return _env("RANK", 0, env)


def world(env: Mapping[str, str] | None = None) -> int:
    """The ranks of this worker's trials: 1 unless a launcher (harness, torchrun, srun) started several."""
    return max(1, _env("WORLD_SIZE", 1, env))


def local_rank(env: Mapping[str, str] | None = None) -> int:
    return _env("LOCAL_RANK", rank(env), env)


def launched(env: Mapping[str, str] | None = None) -> bool:
    """This process is one rank of several, started by a launcher: it joins, it does not launch."""
    return world(env) > 1


def follower() -> bool:
    return launched() and rank() > 0


def start() -> None:
    """Join the launcher's process group (once per process): nccl on CUDA, gloo on CPU. Before any
    Trainer exists, so accelerate finds the group and shards the batches over it."""
    if not launched():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # srun sets neither: one host unless told
    os.environ.setdefault("MASTER_PORT", "29500")  # torchrun's default
    if cuda:
        torch.cuda.set_device(local_rank())
    timeout = float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S))
    dist.init_process_group(
        "nccl" if cuda else "gloo", rank=rank(), world_size=world(), timeout=timedelta(seconds=timeout)
    )


def group_size() -> int:
    """The ranks of the torch.distributed group this process trains in, 1 without one: what one optimizer
    step spans (trial steps, a trial's devices). Never imports torch just to look: no group without it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return 1
    dist = torch.distributed
    return int(dist.get_world_size()) if dist.is_available() and dist.is_initialized() else 1


def active() -> bool:
    return group_size() > 1


def share(obj: Any = None) -> Any:
    """Rank 0's `obj`, on every rank (pickled: a TrialSpec, a decision, a message)."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class RankLost(KeyboardInterrupt):
    """A rank of this trial is gone (killed, crashed): the trial is interrupted, not failed. Raised like
    Ctrl-C so the objective re-queues it (harness.study.failures) and this rank stops too: its process
    group cannot be used again; the next `sweep run` retries the trial from its checkpoint."""


def lost_peer(e: BaseException) -> bool:
    """An error a collective raised because another rank went away (gloo: connection closed or reset;
    any backend: a timeout)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not launched():
        return False
    backend_error = getattr(torch.distributed, "DistBackendError", ())
    text = str(e).lower()
    words = ("connection closed", "connection reset", "broken pipe", "timed out", "gloo", "nccl")
    return isinstance(e, backend_error) or (isinstance(e, RuntimeError) and any(w in text for w in words))


def agree(error: str | None) -> list[str | None]:
    """Every rank's outcome of the trial just run (None = fine), on every rank."""
    if not active():
        return [error]
    import torch.distributed as dist

    outcomes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, error)
    return outcomes


STOP = "stop"
FAILED = "failed"


def decide(leader: Callable[[], bool]) -> bool:
    """A decision rank 0 makes alone (`leader()`: True = stop training), on every rank. An exception on
    rank 0 is sent as FAILED, so the others end the trial with it instead of waiting for a collective
    that never comes."""
    if not active():
        return leader()
    if rank() == 0:
        try:
            stop = leader()
        except Exception as e:
            share((FAILED, f"{type(e).__name__}: {e}"))
            raise
        share((STOP, stop))
        return stop
    kind, value = share()
    if kind == FAILED:
        raise TrialFailed(f"rank 0: {value}")
    return bool(value)


class Leader:
    """Rank 0's recipe: each trial's spec goes to the other ranks before rank 0 trains it, and a trial any
    rank failed fails here (rank 0's own exception first). Everything else is the recipe's own."""

    def __init__(self, recipe: Any, lockstep: bool = False) -> None:
        self.recipe, self.lockstep = recipe, lockstep
        # The recipe's optional protocols (harness.core.spec: MeasuresBaseline, ReportsData, ...), rank
        # 0's alone, set on the instance rather than found by __getattr__: isinstance() checks of runtime
        # protocols look attributes up statically from Python 3.12 on.
        from harness.core import spec

        optional = (
            spec.MeasuresBaseline,
            spec.ReportsData,
            spec.ReportsDroppedRows,
            spec.ReportsProvenance,
            spec.MeasuresTaskBaselines,
        )
        # Of those, measuring the base runs forwards: with fsdp every rank runs them with rank 0.
        together = spec.MeasuresBaseline.baseline.__name__
        for protocol in optional:
            for name in [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]:
                found = getattr(recipe, name, None)
                if callable(found):
                    setattr(
                        self, name, self._together(name, found) if name == together and lockstep else found
                    )

    @staticmethod
    def _together(name: str, found: Callable[[], Any]) -> Callable[[], Any]:
        def together() -> Any:  # fsdp: measuring the base needs every rank's shard
            share(("call", name))
            return found()

        return together

    def __call__(self, spec: Any, on_eval: Any) -> Any:
        share(("trial", spec))
        try:
            result = self.recipe(spec, on_eval)
        except Exception as e:
            if lost_peer(e):
                raise RankLost(str(e)) from e
            agree(f"{type(e).__name__}: {e}")
            raise
        others = [(i, why) for i, why in enumerate(agree(None)) if why is not None]
        if others:
            i, why = others[0]
            raise TrialFailed(f"rank {i}: {why}")
        return result

    def stop(self) -> None:
        """The sweep is over for this worker: the followers leave `follow`. Never raises (it runs on the
        way out of errors too; a lost group just means they are gone already)."""
        try:
            share(None)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def follow(recipe: Any) -> int:
    """A non-zero rank's sweep: train each spec rank 0 sends, until it sends None; returns the trials
    trained. Rank 0's decisions reach the recipe through `decide`; nothing here touches the storage."""
    trained = 0
    while True:
        try:
            message = share()
        except Exception as e:
            raise RankLost(str(e)) from e
        if message is None:
            return trained
        kind, spec = message
        if kind == "call":  # rank 0 measures the base (fsdp): the same forwards here
            try:
                getattr(recipe, spec)()
            except Exception as e:
                if lost_peer(e):
                    raise RankLost(str(e)) from e
            continue
        error: str | None = None
        try:
            recipe(spec, lambda step, metrics: False)
        except Exception as e:
            if lost_peer(e):
                raise RankLost(str(e)) from e
            error = f"{type(e).__name__}: {e}"
        agree(error)
        trained += 1
