"""Storage URL -> Optuna storage, sampler, pruner, and create-or-resume of the study; and the read-only
opening the reporting verbs use (open_existing, load, discover), which creates nothing.

Default storage: sqlite:///results/<name>/study.db. Other Optuna storages by URL (postgresql://, mysql://),
and `journal:PATH` (or a path ending in .log / .journal) for Optuna's file journal, which suits NFS.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.errors import StorageError
from harness.study import noise
from harness.study.sampler import make_sampler
from harness.sweepfile import space as search_space
from harness.sweepfile.schema import SweepConfig


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
        raise StorageError(
            f"storage {mask_url(url)!r}: a SQLite URL has three slashes: sqlite:///path/study.db"
        )
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
        if not os.access(parent, os.W_OK):
            raise StorageError(f"storage {url}: folder {parent} is not writable")


def use_wal(path: Path) -> None:
    """SQLite in write-ahead-log mode: at most one fsync per commit instead of several (none with the
    writer's synchronous=NORMAL, rdb.py; each trial.report is a commit), and readers (`sweep watch`,
    `status`) never block the running sweep. The mode is stored in the database file, so it is set
    once, by the writer."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
        con.execute("PRAGMA journal_mode=WAL")


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
                use_wal(path)
            elif not path.exists():
                raise StorageError(f"no study database at {path}")
        from harness.study.rdb import open_rdb

        # Several workers on one RDB (rdb.py): waits for SQLite's lock instead of failing, and a worker
        # that dies is noticed by its heartbeat, its trial re-queued with the same params (failures.py).
        return open_rdb(url, writer=create_dirs)
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


def make_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    """Intermediate values are reported at the training step, so resources are counted in steps."""
    p, b = cfg.early_terminate, cfg.budget
    if p.type == "none" or cfg.multi_objective:  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    if p.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps * b.eval_steps
        )
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_iter * b.eval_steps, max_resource=b.max_steps, reduction_factor=p.eta
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=p.min_iter * b.eval_steps, reduction_factor=p.eta
    )


def fingerprint(cfg: SweepConfig) -> str:
    """What a study must keep to be resumed meaningfully: its search space and objective."""
    space = {k: repr(v) for k, v in sorted(search_space.distributions(cfg.parameters).items())}
    what: dict[str, Any] = {"space": space, "metric": cfg.metric.model_dump()}
    if cfg.multi_objective:  # single-objective fingerprints stay as they were (existing studies resume)
        what["objectives"] = [m.model_dump() for m in cfg.objectives]
    body = json.dumps(what, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def open_study(cfg: SweepConfig, storage: optuna.storages.BaseStorage, url: str) -> optuna.Study:
    """Create the study, or resume it if the storage has one of this name with the same space and goal.
    Workers started together race to create it: the losers load the winner's."""
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=storage)
    except KeyError:
        existing = None
    if existing is None:
        try:
            return _create(cfg, storage)
        except optuna.exceptions.DuplicatedStudyError:
            existing = optuna.load_study(study_name=cfg.name, storage=storage)
    check_resumable(cfg, existing, url)
    return optuna.load_study(
        study_name=cfg.name, storage=storage, sampler=make_sampler(cfg), pruner=make_pruner(cfg)
    )


def _create(cfg: SweepConfig, storage: optuna.storages.BaseStorage) -> optuna.Study:
    study = optuna.create_study(
        study_name=cfg.name,
        storage=storage,
        sampler=make_sampler(cfg),
        pruner=make_pruner(cfg),
        directions=[m.goal for m in cfg.objectives],
    )
    study.set_user_attr("fingerprint", fingerprint(cfg))
    study.set_user_attr("metric", cfg.metric.name)
    if cfg.multi_objective:
        study.set_user_attr("metrics", [m.name for m in cfg.objectives])
    study.set_user_attr("task", cfg.task)
    config = cfg.model_dump(mode="json", exclude={"parameters"})
    if config.get("storage"):  # stored, exported and shown by reports: never with a password
        config["storage"] = mask_url(config["storage"])
    study.set_user_attr("config", config)
    return study


def check_resumable(cfg: SweepConfig, study: optuna.Study, url: str) -> None:
    attrs = study.user_attrs
    new_name = f"{cfg.name}-v2"
    how = f"start a new study with `name={new_name}` (or a new name: in the sweep file), or delete the study"
    have = list(zip(metric_names(study), goals(study), strict=True))
    want = [(m.name, m.goal) for m in cfg.objectives]
    # A study not created by harness has no metric names: its directions must still match.
    same_names = attrs.get("metric") is None or [n for n, _ in have] == [n for n, _ in want]
    if not same_names or [g for _, g in have] != [g for _, g in want]:
        shown = ", ".join(f"{n} ({g})" for n, g in have)
        asked = ", ".join(f"{n} ({g})" for n, g in want)
        raise StorageError(
            f"study {cfg.name!r} in {mask_url(url)} optimises {shown}, "
            f"but the sweep file asks for {asked}; {how}"
        )
    if attrs.get("fingerprint") not in (None, fingerprint(cfg)):
        raise StorageError(
            f"study {cfg.name!r} in {mask_url(url)} was created with a different search space; "
            f"resuming would mix incomparable trials. {how}"
        )


# ----------------------------------------------------------------------------------------------------
# Single- and multi-objective studies read the same way. A multi-objective study has no study.direction,
# trial.value or study.best_trial (Optuna raises); these helpers give the primary (first) objective's view.


def is_multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def goals(study: optuna.Study) -> list[str]:
    return [d.name.lower() for d in study.directions]


def metric_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names, in order (user attrs written by open_study)."""
    attrs = study.user_attrs
    names = attrs.get("metrics") or [attrs.get("metric") or "value"]
    if len(names) != len(study.directions):
        names = [f"value_{i}" for i in range(len(study.directions))]
    return list(names)


def primary_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """trial.value for one objective; the first objective's value for several."""
    values = trial.values
    return float(values[0]) if values else None


def pareto_numbers(study: optuna.Study) -> set[int]:
    """Trial numbers on the Pareto front (empty for a single-objective study)."""
    if not is_multi(study):
        return set()
    return {t.number for t in study.best_trials}


STATE_RANK = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3}
LAST_RANK = 4  # failed and anything else


def rank_key(study: optuna.Study) -> Callable[[FrozenTrial], tuple[bool, int, bool, float, int]]:
    """The one ranking rule: complete trials best first (multi-objective: Pareto-optimal ones first, then
    by the primary metric), then pruned, running, waiting, failed; ties by trial number. Repeats of a
    config (`sweep confirm`, harness.study.noise) come after every config the sampler chose: they are runs of
    a config already ranked, not competitors."""
    sign = -1.0 if goals(study)[0] == "maximize" else 1.0
    pareto = pareto_numbers(study)

    def key(t: FrozenTrial) -> tuple[bool, int, bool, float, int]:
        v = primary_value(t)
        value = sign * v if v is not None else math.inf
        return (
            noise.is_repeat(t),
            STATE_RANK.get(t.state, LAST_RANK),
            t.number not in pareto,
            value,
            t.number,
        )

    return key


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The winning config's original trial, or None (no exception, unlike optuna's study.best_trial).

    The best complete original by rank_key; when that config was confirmed (`sweep confirm`), the
    confirmed config with the best mean over its seeds instead (a lucky single run does not win by luck
    alone). Multi-objective: the Pareto-optimal trial best on the first (primary) metric."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values and not noise.is_repeat(t)]
    best = min(complete, key=rank_key(study), default=None)
    if best is None or is_multi(study):
        return best
    confirmed = noise.config_stats(trials)
    if best.number not in confirmed:
        return best
    maximize = goals(study)[0] == "maximize"
    top = min(confirmed.values(), key=lambda s: (-s.mean if maximize else s.mean, s.number))
    return next(t for t in complete if t.number == top.number)


def confirmed(study: optuna.Study, trial: FrozenTrial | None) -> noise.ConfigStats | None:
    """The seed statistics of `trial`'s config, when it was confirmed."""
    if trial is None:
        return None
    return noise.config_stats(study.get_trials(deepcopy=False)).get(trial.number)


def locate(target: str, results_dir: str = "results", storage: str | None = None) -> tuple[str, str]:
    """`sweep status/report/best TARGET`: a study name or a sweep file -> (storage URL, study name).

    Read-only: never creates a storage (reading must not break or block a running sweep)."""
    from harness.sweepfile.load import load_sweep

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
        raise StorageError(
            f"no study {name!r}: {url.removeprefix('sqlite:///')} does not exist (run `sweep run` first)"
        )
    return url, name


# ----------------------------------------------------------------------------------------------------
# Opening for the read-only verbs (status, list, report, compare, watch, dashboard, best). They run beside a
# sweep that writes, so they create nothing (not even an empty journal file) and write nothing.


def open_existing(url: str) -> optuna.storages.BaseStorage:
    """Open a storage that must already exist: reading must create nothing (not even an empty journal)."""
    check_url(url)
    journal = _journal_path(url)
    if journal is not None and not journal.exists():
        raise StorageError(f"no journal storage at {journal} (run `sweep run` first)")
    with warnings.catch_warnings():
        # RDBStorage's heartbeat argument is "experimental": noise for someone reading a report.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return open_storage(url, create_dirs=False)


def load_readonly(url: str, name: str) -> optuna.Study:
    storage = open_existing(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        have = f"; it holds: {', '.join(names)}" if names else "; it holds no study"
        raise StorageError(f"storage {mask_url(url)} has no study named {name!r}{have}") from None


def load(target: str, results_dir: str = "results", storage: str | None = None) -> optuna.Study:
    """`sweep watch/best TARGET`: a study name or sweep file -> the study, opened read-only."""
    return load_readonly(*locate(target, results_dir, storage))


def study_folder(study: optuna.Study, results_dir: str) -> Path:
    """results/<study>: where the trial folders are and the report goes.

    The --results-dir given now wins; the results_dir the study was created with is the fallback, so a
    study run with `results_dir: runs` in its sweep file still finds its trial folders."""
    here = Path(results_dir) / study.study_name
    stored = (study.user_attrs.get("config") or {}).get("results_dir")
    if not here.exists() and stored and (Path(stored) / study.study_name).exists():
        return Path(stored) / study.study_name
    return here


def discover(results_dir: str, storage: str | None) -> list[tuple[str, list[optuna.Study] | StorageError]]:
    """(storage URL, its studies or the error opening it) for --storage, or for every results/*/study.db."""
    if storage:
        urls = [storage]
    else:
        urls = [f"sqlite:///{p.as_posix()}" for p in sorted(Path(results_dir).glob("*/study.db"))]
    found: list[tuple[str, list[optuna.Study] | StorageError]] = []
    for url in urls:
        try:
            opened = open_existing(url)
            names = optuna.get_all_study_names(opened)
            found.append((url, [optuna.load_study(study_name=n, storage=opened) for n in names]))
        except StorageError as e:
            if storage:
                raise  # the one storage the user named: its error is the answer
            found.append((url, e))  # one broken database must not hide the others
    return found
