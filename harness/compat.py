"""Every private optuna / transformers / trl name harness relies on, and nowhere else.

Why: a few things harness needs have no public API (the storage a study writes to, a trial's storage id,
one-transaction attr writes, the Trainer's "save resumable state without the model"). Private names move
between releases without notice. When one does, this module is the one place to look and to fix: each
name is one small function or constant here, with the library version it was last checked on, and the
rest of harness calls these instead of touching `obj._name` itself.

How it is guarded: tests/test_compat.py checks every name below on the real, installed libraries (a real
sqlite and journal storage, the real Trainer class) and runs every function here once. It fails, never
skips, when a name moved: upgrading a library and running that one file (a few seconds) says what broke.
At run time a moved name raises PrivateAPIMoved (a RuntimeError naming the attribute, the installed
version and the version it was checked on) instead of being taken for something else; callers must not
catch it, except where a public fallback exists and is documented (harness.study.rdb.set_user_attrs).

Imports: none of optuna / torch / transformers / trl at module level (each function imports what it
needs), so harness.study never pulls in torch and harness.trial never pulls in optuna by importing this.

Checked on: optuna 5.1.0 (5.x), transformers 5.25.0 (5.x), trl 1.16.0 (1.x: SFTTrainer, DPOTrainer and
GRPOTrainer inherit the Trainer methods below without overriding them).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage, JournalStorage, RDBStorage
    from optuna.trial import FrozenTrial

OPTUNA_CHECKED = "5.1.0"
TRANSFORMERS_CHECKED = "5.25.0"
TRL_CHECKED = "1.16.0"


class PrivateAPIMoved(RuntimeError):
    """A private third-party name harness relies on is not where harness.compat expects it.

    A RuntimeError on purpose, not an AttributeError: `getattr(x, name, default)` and `except
    AttributeError` must not be able to turn it into a silent default."""


def _moved(lib: str, checked: str, name: str) -> PrivateAPIMoved:
    try:
        installed = importlib.metadata.version(lib)
    except importlib.metadata.PackageNotFoundError:
        installed = "(not installed)"
    return PrivateAPIMoved(
        f"{lib} {installed} has no {name}, a private name harness relies on (checked on {lib} {checked}). "
        "A release moved it: update harness/compat.py (tests/test_compat.py names every such name)."
    )


def _private(obj: Any, attr: str, lib: str, checked: str, name: str) -> Any:
    """obj.attr, or PrivateAPIMoved naming `name` (Class.attr) if it is gone."""
    try:
        return getattr(obj, attr)
    except AttributeError:
        raise _moved(lib, checked, name) from None


# ----------------------------------------------------------------------------------------------------
# optuna (checked on 5.1.0)

OPTIMIZE_LOGGER = "optuna.study._optimize"
"""optuna 5.1.0: the logger (module optuna.study._optimize) that logs "Trial N failed ..." with the
traceback; harness.study.run filters KeyboardInterrupt tracebacks out of it."""

SAMPLER_CACHES = ("_search_space", "_group_decomposed_search_space")
"""optuna 5.1.0: TPESampler's incremental search-space caches (an IntersectionSearchSpace, and a
_GroupDecomposedSearchSpace or None); CmaEsSampler, NSGAIISampler, NSGAIIISampler and GridSampler have
`_search_space` too. harness.study.sampler hands them from one trial's sampler to the next."""


def study_storage(study: optuna.Study) -> BaseStorage:
    """optuna 5.1.0: `Study._storage`, the storage the study reads and writes (a `_CachedStorage` around
    an RDBStorage, or the JournalStorage itself)."""
    return _private(study, "_storage", "optuna", OPTUNA_CHECKED, "Study._storage")


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """optuna 5.1.0: `Trial._trial_id` / `FrozenTrial._trial_id`, the id storage calls take (not the
    trial's number). Raises PrivateAPIMoved if it is gone: never catch that."""
    value = _private(trial, "_trial_id", "optuna", OPTUNA_CHECKED, f"{type(trial).__name__}._trial_id")
    if not isinstance(value, int):
        raise _moved("optuna", OPTUNA_CHECKED, f"{type(trial).__name__}._trial_id as an int")
    return value


def cached_frozen_trial(trial: optuna.Trial) -> FrozenTrial:
    """optuna 5.1.0: `Trial._cached_frozen_trial`, the FrozenTrial whose user_attrs `trial.user_attrs`
    returns (a copy of) for the rest of the trial."""
    return _private(trial, "_cached_frozen_trial", "optuna", OPTUNA_CHECKED, "Trial._cached_frozen_trial")


def unwrap_cached_storage(storage: Any) -> Any:
    """optuna 5.1.0: the RDBStorage an `optuna.storages._CachedStorage` wraps (its `_backend`); any other
    storage (or object) as it is. A study opened on an RDBStorage holds it wrapped so (get_storage)."""
    try:
        from optuna.storages import _CachedStorage
    except ImportError:
        raise _moved("optuna", OPTUNA_CHECKED, "optuna.storages._CachedStorage") from None
    if not isinstance(storage, _CachedStorage):
        return storage
    return _private(storage, "_backend", "optuna", OPTUNA_CHECKED, "_CachedStorage._backend")


def rdb_engine(storage: Any) -> Any:
    """The SQLAlchemy engine of an RDBStorage, also when a _CachedStorage wraps it; None for any other
    storage. (`RDBStorage.engine` is public; the unwrapping is not.)"""
    return getattr(unwrap_cached_storage(storage), "engine", None)


def rdb_set_user_attrs(storage: RDBStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    """All `attrs` as user attrs of the trial in ONE transaction: what `RDBStorage.set_trial_user_attr`
    does per attr, committed once. optuna 5.1.0: `optuna.storages._rdb.storage._create_scoped_session`,
    `optuna.storages._rdb.models.TrialUserAttributeModel`, `RDBStorage._set_trial_attr_without_commit`."""
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        raise _moved(
            "optuna", OPTUNA_CHECKED, "optuna.storages._rdb.storage._create_scoped_session / _rdb.models"
        ) from None
    model = _private(
        models, "TrialUserAttributeModel", "optuna", OPTUNA_CHECKED, "_rdb.models.TrialUserAttributeModel"
    )
    set_attr = _private(
        storage,
        "_set_trial_attr_without_commit",
        "optuna",
        OPTUNA_CHECKED,
        "RDBStorage._set_trial_attr_without_commit",
    )
    with _create_scoped_session(storage.scoped_session, True) as session:
        for key, value in attrs.items():
            set_attr(session, model, trial_id, key, value)


def journal_set_user_attrs(storage: JournalStorage, trial_id: int, attrs: dict[str, Any]) -> None:
    """All `attrs` as user attrs of the trial in ONE append to the journal (one log entry per attr, as
    `JournalStorage.set_trial_user_attr` writes them, appended together). optuna 5.1.0:
    `optuna.storages.journal._storage.JournalOperation`, `JournalStorage._thread_lock`,
    `JournalStorage._replay_result` (its `worker_id`), `JournalStorage._backend` (the journal backend, whose
    `append_logs` is public), `JournalStorage._sync_with_backend`."""
    try:
        from optuna.storages.journal._storage import JournalOperation
    except ImportError:
        raise _moved("optuna", OPTUNA_CHECKED, "optuna.storages.journal._storage.JournalOperation") from None
    op = _private(
        JournalOperation,
        "SET_TRIAL_USER_ATTR",
        "optuna",
        OPTUNA_CHECKED,
        "JournalOperation.SET_TRIAL_USER_ATTR",
    )
    lock = _private(storage, "_thread_lock", "optuna", OPTUNA_CHECKED, "JournalStorage._thread_lock")
    replay = _private(storage, "_replay_result", "optuna", OPTUNA_CHECKED, "JournalStorage._replay_result")
    backend = _private(storage, "_backend", "optuna", OPTUNA_CHECKED, "JournalStorage._backend")
    sync = _private(
        storage, "_sync_with_backend", "optuna", OPTUNA_CHECKED, "JournalStorage._sync_with_backend"
    )
    with lock:
        worker = replay.worker_id
        logs = [
            {"op_code": op, "worker_id": worker, "trial_id": trial_id, "user_attr": {key: value}}
            for key, value in attrs.items()
        ]
        backend.append_logs(logs)
        sync()


# ----------------------------------------------------------------------------------------------------
# transformers (checked on 5.25.0; trl 1.16.0's trainers inherit these from transformers.Trainer)


def skip_checkpoint_model_load(trainer: Any) -> None:
    """transformers 5.25.0: `Trainer._load_from_checkpoint(resume_from_checkpoint, model=None)`, which
    `Trainer.train(resume_from_checkpoint=...)` calls to load the model's weights, replaced on this one
    trainer by a no-op. train() still restores optimizer, scheduler, RNG and step from the checkpoint."""
    if not callable(getattr(type(trainer), "_load_from_checkpoint", None)):
        raise _moved("transformers", TRANSFORMERS_CHECKED, "Trainer._load_from_checkpoint")
    trainer._load_from_checkpoint = lambda *a, **k: None


def save_optimizer_and_scheduler(trainer: Any, output_dir: str | Path) -> None:
    """transformers 5.25.0: `Trainer._save_optimizer_and_scheduler(output_dir)`, the optimizer and LR
    scheduler in the layout train(resume_from_checkpoint=...) reads (optimizer.pt, scheduler.pt)."""
    save = _private(
        trainer,
        "_save_optimizer_and_scheduler",
        "transformers",
        TRANSFORMERS_CHECKED,
        "Trainer._save_optimizer_and_scheduler",
    )
    save(str(output_dir))


def save_rng_state(trainer: Any, output_dir: str | Path) -> None:
    """transformers 5.25.0: `Trainer._save_rng_state(output_dir)`, the python/numpy/torch RNG states in
    the layout train(resume_from_checkpoint=...) reads (rng_state.pth)."""
    save = _private(
        trainer, "_save_rng_state", "transformers", TRANSFORMERS_CHECKED, "Trainer._save_rng_state"
    )
    save(str(output_dir))
