"""Create the study, or resume it: a study resumes only with the same search space and objectives."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna

from harness.core import attrs
from harness.errors import StorageError
from harness.study import ranking, space
from harness.study.sampler import make_pruner, make_sampler
from harness.study.storage import mask_url
from harness.sweepfile.schema import SweepConfig


def fingerprint(cfg: SweepConfig) -> str:
    """What a study must keep to be resumed meaningfully: its search space and objective."""
    dists = {k: repr(v) for k, v in sorted(space.distributions(cfg.parameters).items())}
    what: dict[str, Any] = {"space": dists, "metric": cfg.metric.model_dump()}
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
    study.set_user_attr(attrs.FINGERPRINT, fingerprint(cfg))
    study.set_user_attr(attrs.METRIC, cfg.metric.name)
    if cfg.multi_objective:
        study.set_user_attr(attrs.METRICS, [m.name for m in cfg.objectives])
    study.set_user_attr(attrs.TASK, cfg.task)
    config = cfg.model_dump(mode="json", exclude={"parameters"})
    if config.get("storage"):  # stored, exported and shown by reports: never with a password
        config["storage"] = mask_url(config["storage"])
    study.set_user_attr(attrs.CONFIG, config)
    return study


def check_resumable(cfg: SweepConfig, study: optuna.Study, url: str) -> None:
    stored = study.user_attrs
    new_name = f"{cfg.name}-v2"
    how = f"start a new study with `name={new_name}` (or a new name: in the sweep file), or delete the study"
    have = list(zip(ranking.metric_names(study), ranking.goals(study), strict=True))
    want = [(m.name, m.goal) for m in cfg.objectives]
    # A study not created by harness has no metric names: its directions must still match.
    same_names = attrs.metric(stored) is None or [n for n, _ in have] == [n for n, _ in want]
    if not same_names or [g for _, g in have] != [g for _, g in want]:
        shown = ", ".join(f"{n} ({g})" for n, g in have)
        asked = ", ".join(f"{n} ({g})" for n, g in want)
        raise StorageError(
            f"study {cfg.name!r} in {mask_url(url)} optimises {shown}, "
            f"but the sweep file asks for {asked}; {how}"
        )
    if stored.get(attrs.FINGERPRINT) not in (None, fingerprint(cfg)):
        raise StorageError(
            f"study {cfg.name!r} in {mask_url(url)} was created with a different search space; "
            f"resuming would mix incomparable trials. {how}"
        )
