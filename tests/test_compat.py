"""Every private optuna / transformers / trl name in harness.compat, checked on the installed libraries.

Each name is asserted where it lives (class, module, real storage instance) and each compat function runs
once on real objects: a SQLite and a journal storage in tmp_path, a real transformers Trainer on a tiny
torch module. Nothing here skips: after upgrading a library, a failure in this file names what moved.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
from helpers import ROOT
from optuna.trial import FrozenTrial, TrialState

from harness import compat
from harness.study import failures, rdb

optuna.logging.set_verbosity(optuna.logging.WARNING)

TRAINER_METHODS = {
    "_load_from_checkpoint": ["self", "resume_from_checkpoint", "model"],
    "_save_optimizer_and_scheduler": ["self", "output_dir"],
    "_save_rng_state": ["self", "output_dir"],
}


def test_importing_compat_imports_no_library():
    """harness.study must not pull in torch, harness.trial not optuna: compat imports them lazily."""
    libs = ["optuna", "torch", "transformers", "trl", "peft", "sqlalchemy"]
    code = f"import sys, harness.compat; print(sorted(m for m in {libs!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_a_moved_name_raises_a_runtime_error_naming_it_and_the_checked_version():
    with pytest.raises(compat.PrivateAPIMoved, match=r"object\._trial_id.*optuna 5\.1\.0") as e:
        compat.trial_id(object())  # type: ignore[arg-type]
    assert isinstance(e.value, RuntimeError) and not isinstance(e.value, AttributeError)
    assert f"optuna {optuna.__version__} has no" in str(e.value)
    with pytest.raises(compat.PrivateAPIMoved, match="Study._storage"):
        compat.study_storage(object())  # type: ignore[arg-type]
    with pytest.raises(compat.PrivateAPIMoved, match="Trainer._load_from_checkpoint.*transformers"):
        compat.skip_checkpoint_model_load(object())
    with pytest.raises(compat.PrivateAPIMoved, match="Trainer._save_rng_state"):
        compat.save_rng_state(object(), "nowhere")
    with pytest.raises(compat.PrivateAPIMoved, match="Trainer._save_optimizer_and_scheduler"):
        compat.save_optimizer_and_scheduler(object(), "nowhere")


# ----------------------------------------------------------------------------------------------------
# optuna


def test_optuna_private_names_exist():
    from optuna.storages import JournalStorage, RDBStorage, _CachedStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.storages.journal._storage import JournalOperation

    assert issubclass(_CachedStorage, optuna.storages.BaseStorage)
    assert callable(_create_scoped_session)
    assert hasattr(models, "TrialUserAttributeModel")
    params = list(inspect.signature(RDBStorage._set_trial_attr_without_commit).parameters)
    assert params == ["self", "session", "model_cls", "trial_id", "key", "value"]
    assert isinstance(JournalOperation.SET_TRIAL_USER_ATTR, int)
    assert callable(JournalStorage._sync_with_backend)
    assert importlib.import_module("optuna.study._optimize")._logger.name == compat.OPTIMIZE_LOGGER
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        grouped = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True)
    plain = optuna.samplers.TPESampler(seed=0)
    assert isinstance(plain._search_space, optuna.search_space.IntersectionSearchSpace)
    for name in compat.SAMPLER_CACHES:
        assert hasattr(plain, name), f"TPESampler.{name}"
        assert getattr(grouped, name) is not None, f"TPESampler(group=True).{name}"


def test_sqlite_storage_accessors_and_one_transaction_write(tmp_path):
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()

    held = compat.study_storage(study)
    assert isinstance(held, optuna.storages._CachedStorage)  # get_storage wraps an RDBStorage so
    assert compat.unwrap_cached_storage(held) is storage
    assert compat.unwrap_cached_storage(storage) is storage
    assert compat.rdb_engine(held) is storage.engine and compat.rdb_engine(storage) is storage.engine
    tid = compat.trial_id(trial)
    assert storage.get_trial(tid).number == trial.number
    frozen = study.get_trials(deepcopy=False)[0]
    assert compat.trial_id(frozen) == tid
    cached = compat.cached_frozen_trial(trial)
    assert isinstance(cached, FrozenTrial) and cached.number == trial.number

    commits: list[int] = []
    event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    attrs = {"a": 1, "b": {"x": [1, 2]}, "c": "three"}
    compat.rdb_set_user_attrs(storage, tid, attrs)
    assert len(commits) == 1
    assert storage.get_trial(tid).user_attrs == attrs


def test_journal_storage_accessors_and_one_append_write(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    log = tmp_path / "journal.log"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(log)))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()

    assert compat.study_storage(study) is storage  # not wrapped
    assert compat.unwrap_cached_storage(storage) is storage
    assert compat.rdb_engine(storage) is None
    assert isinstance(storage._replay_result.worker_id, str)
    assert isinstance(storage._backend, JournalFileBackend)
    with storage._thread_lock:
        pass

    tid = compat.trial_id(trial)
    lines = len(log.read_text().splitlines())
    attrs = {"a": 1, "b": {"x": [1, 2]}, "c": "three"}
    compat.journal_set_user_attrs(storage, tid, attrs)
    assert len(log.read_text().splitlines()) == lines + len(attrs)  # one entry per attr, as Optuna's own
    assert storage.get_trial(tid).user_attrs == attrs  # synced into this storage
    fresh = optuna.storages.JournalStorage(JournalFileBackend(str(log)))
    assert fresh.get_trial(tid).user_attrs == attrs  # and on disk


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_rdb_set_user_attrs_takes_the_batched_path(tmp_path, kind, monkeypatch):
    """harness.study.rdb.set_user_attrs really goes through compat (no silent public fallback)."""
    if kind == "sqlite":
        storage: optuna.storages.BaseStorage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    else:
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()

    def public_path(*a: object, **k: object) -> None:
        raise AssertionError("fell back to one public call per attr")

    monkeypatch.setattr(trial, "set_user_attr", public_path)
    rdb.set_user_attrs(trial, {"a": 1, "b": 2})
    assert trial.user_attrs == {"a": 1, "b": 2}  # through compat.cached_frozen_trial
    assert study.get_trials()[0].user_attrs == {"a": 1, "b": 2}


def test_the_optimize_logger_is_the_one_optuna_logs_failed_trials_to():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger(compat.OPTIMIZE_LOGGER)
    logger.addHandler(handler)
    try:
        study = optuna.create_study()
        study.optimize(lambda t: 1 / 0, n_trials=1, catch=(ZeroDivisionError,))
    finally:
        logger.removeHandler(handler)
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in records)


def _stale_running_trial(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    trial.set_user_attr("pid", 1)
    trial.set_user_attr("heartbeat", 0.0)  # older than GRACE_S: stale, whatever host
    return trial


def test_recovery_does_not_swallow_a_moved_trial_id(tmp_path, monkeypatch):
    """recover_interrupted catches a storage's refusal, never PrivateAPIMoved: with the id gone, the run
    must stop loudly instead of silently never recovering an interrupted trial again."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    _stale_running_trial(study)
    assert failures.recover_interrupted(study) == [0]  # the real path works...
    _stale_running_trial(study)

    def moved(trial: object) -> int:
        raise compat.PrivateAPIMoved("optuna has no FrozenTrial._trial_id")

    monkeypatch.setattr(compat, "trial_id", moved)
    with pytest.raises(compat.PrivateAPIMoved, match="_trial_id"):  # ...and a moved id is not swallowed
        failures.recover_interrupted(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(TrialState.RUNNING) == 1


def test_journal_heartbeat_uses_the_real_storage_and_id(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    with failures.heartbeat(trial, interval=60):
        pass
    assert isinstance(storage.get_trial(compat.trial_id(trial)).user_attrs["heartbeat"], float)


# ----------------------------------------------------------------------------------------------------
# transformers / trl


def test_trainer_private_methods_exist_and_train_resumes_through_load_from_checkpoint():
    import transformers
    import trl

    for name, params in TRAINER_METHODS.items():
        method = getattr(transformers.Trainer, name)
        assert list(inspect.signature(method).parameters) == params, name
        for cls in (trl.SFTTrainer, trl.DPOTrainer, trl.GRPOTrainer):
            assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name}"
    # skip_checkpoint_model_load shadows it on the instance: train() must call it through self.
    assert "self._load_from_checkpoint(" in inspect.getsource(transformers.Trainer.train)


def test_trainer_accessors_on_a_real_trainer(tmp_path):
    import torch
    import transformers

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), use_cpu=True, report_to="none", max_steps=2
    )
    trainer = transformers.Trainer(model=Tiny(), args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=2)
    out = tmp_path / "checkpoint"
    out.mkdir()
    compat.save_optimizer_and_scheduler(trainer, out)
    compat.save_rng_state(trainer, Path(out))
    names = {p.name for p in out.iterdir()}
    assert {"optimizer.pt", "scheduler.pt"} <= names and any(n.startswith("rng_state") for n in names)

    compat.skip_checkpoint_model_load(trainer)
    assert trainer._load_from_checkpoint(str(tmp_path / "no-such-checkpoint")) is None
    assert "_load_from_checkpoint" not in vars(transformers.Trainer(model=Tiny(), args=args))
