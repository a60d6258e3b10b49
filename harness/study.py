"""Storage URL -> Optuna storage, sampler, pruner, and create-or-resume of the study.

Default storage: sqlite:///results/<name>/study.db. Other Optuna storages by URL (postgresql://, mysql://),
and `journal:PATH` (or a path ending in .log / .journal) for Optuna's file journal, which suits NFS.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from harness import search_space
from harness.config import SweepConfig
from harness.errors import StorageError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db, for anything printed."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def storage_url(cfg: SweepConfig, override: str | None = None) -> str:
    url = override or cfg.storage
    if url:
        return url
    return f"sqlite:///{(cfg.study_dir / 'study.db').as_posix()}"


def check_url(url: str) -> None:
    """The URL's form, checked before anything is created (bad input must write nothing)."""
    if _journal_path(url) is not None:
        return
    scheme = url.split("://", 1)[0] if "://" in url else ""
    known = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
    if not scheme or scheme.split("+", 1)[0] not in known:
        raise StorageError(
            f"storage {mask_url(url)!r} is not a storage URL Optuna can open: use sqlite:///path/study.db, "
            "postgresql://user:pass@host/db, mysql://..., or journal:path/study.log"
        )
    if scheme == "sqlite" and not url.startswith("sqlite:///"):
        raise StorageError(f"storage {url!r}: a SQLite URL has three slashes: sqlite:///path/study.db")
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
        if not os.access(parent, os.W_OK):
            raise StorageError(f"storage {url}: folder {parent} is not writable")


def open_storage(url: str, create_dirs: bool = True) -> optuna.storages.BaseStorage:
    """Open (and for files, create) the storage; every failure is one StorageError with a masked URL."""
    shown = mask_url(url)
    journal = _journal_path(url)
    try:
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend

            if create_dirs:
                journal.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        if "://" not in url:
            raise StorageError(
                f"storage {shown!r} is not a storage URL: use sqlite:///path/study.db, "
                "postgresql://user:pass@host/db, or journal:path/study.log"
            )
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if create_dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.exists():
                raise StorageError(f"no study database at {path}")
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    except StorageError:
        raise
    except PermissionError as e:
        raise StorageError(f"storage {shown}: cannot write there ({e.strerror})") from None
    except Exception as e:  # sqlalchemy/driver errors carry the URL; never echo it unmasked
        reason = mask_url(str(e).splitlines()[0]) if str(e) else type(e).__name__
        raise StorageError(f"cannot open storage {shown}: {reason}") from None


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:").removeprefix("//"))
    if "://" not in url and url.endswith((".log", ".journal")):
        return Path(url)
    return None


def make_sampler(cfg: SweepConfig, n_existing: int) -> optuna.samplers.BaseSampler:
    # Offset the seed by the trials already in the study: a resumed run must not replay the random
    # start-up samples of the first run, yet the same history still gives the same next params.
    seed = cfg.seed + 7919 * n_existing
    if cfg.method == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, cfg.budget.n_trials))
    if cfg.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.method == "grid":
        return optuna.samplers.GridSampler(search_space.grid(cfg.parameters), seed=seed)
    if cfg.method == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if cfg.method == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise AssertionError(cfg.method)


def make_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    """Intermediate values are reported at the training step, so resources are counted in steps."""
    p, b = cfg.early_terminate, cfg.budget
    if p.type == "none":
        return optuna.pruners.NopPruner()
    if p.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps * b.eval_steps
        )
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_iter * b.eval_steps, max_resource=b.max_steps, reduction_factor=p.eta
        )
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_iter * b.eval_steps, reduction_factor=p.eta)


def fingerprint(cfg: SweepConfig) -> str:
    """What a study must keep to be resumed meaningfully: its search space and objective."""
    space = {k: repr(v) for k, v in sorted(search_space.distributions(cfg.parameters).items())}
    body = json.dumps({"space": space, "metric": cfg.metric.model_dump()}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def open_study(cfg: SweepConfig, storage: optuna.storages.BaseStorage, url: str) -> optuna.Study:
    """Create the study, or resume it if the storage has one of this name with the same space and goal."""
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        check_resumable(cfg, existing, url)
        n = len(existing.trials)
        return optuna.load_study(
            study_name=cfg.name, storage=storage, sampler=make_sampler(cfg, n), pruner=make_pruner(cfg)
        )
    study = optuna.create_study(
        study_name=cfg.name,
        storage=storage,
        sampler=make_sampler(cfg, 0),
        pruner=make_pruner(cfg),
        direction=cfg.metric.goal,
    )
    study.set_user_attr("fingerprint", fingerprint(cfg))
    study.set_user_attr("metric", cfg.metric.name)
    study.set_user_attr("task", cfg.task)
    study.set_user_attr("config", cfg.model_dump(mode="json", exclude={"parameters"}))
    return study


def check_resumable(cfg: SweepConfig, study: optuna.Study, url: str) -> None:
    attrs = study.user_attrs
    new_name = f"{cfg.name}-v2"
    how = f"start a new study with `name={new_name}` (or a new name: in the sweep file), or delete the study"
    if attrs.get("metric") not in (None, cfg.metric.name) or study.direction.name.lower() != cfg.metric.goal:
        raise StorageError(
            f"study {cfg.name!r} in {mask_url(url)} optimises {attrs.get('metric')} "
            f"({study.direction.name.lower()}), but the sweep file asks for {cfg.metric.name} "
            f"({cfg.metric.goal}); {how}"
        )
    if attrs.get("fingerprint") not in (None, fingerprint(cfg)):
        raise StorageError(
            f"study {cfg.name!r} in {mask_url(url)} was created with a different search space; "
            f"resuming would mix incomparable trials. {how}"
        )


def count(study: optuna.Study, states: tuple[TrialState, ...] = FINISHED) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def summarize(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state.name] = by_state.get(t.state.name, 0) + 1
    best = None
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
    return {"n": len(trials), "by_state": by_state, "best": best}


def locate(target: str, results_dir: str = "results", storage: str | None = None) -> tuple[str, str]:
    """`sweep status/report/best TARGET`: a study name or a sweep file -> (storage URL, study name).

    Read-only: never creates a storage (reading must not break or block a running sweep)."""
    from harness.config import load_sweep

    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        cfg = load_sweep(path, [f"results_dir={results_dir}"] if results_dir != "results" else [])
        url = storage_url(cfg, storage)
        name = cfg.name
    else:
        from harness.errors import check_name

        name = check_name(target, "study name")
        url = storage or f"sqlite:///{(Path(results_dir) / name / 'study.db').as_posix()}"
    check_url(url)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise StorageError(f"no study {name!r}: {url.removeprefix('sqlite:///')} does not exist (run `sweep run` first)")
    return url, name


def load(target: str, results_dir: str = "results", storage: str | None = None) -> optuna.Study:
    url, name = locate(target, results_dir, storage)
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, create_dirs=False))
    except KeyError:
        raise StorageError(f"storage {mask_url(url)} has no study named {name!r}") from None
