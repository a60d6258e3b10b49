"""An Optuna RDB storage that many `sweep run` processes can share (SQLite, PostgreSQL, MySQL).

SQLite takes one writer at a time. Out of the box, a second process opening the same study.db gets
"database is locked" (pysqlite waits 5 s, then gives up), and two processes can both read a trial as
RUNNING and both fail it (pysqlite only begins a transaction at the first write, so Optuna's
check-then-update of a trial's state is not atomic between processes): two retries of one trial. So the
writer's SQLite connections here wait up to BUSY_TIMEOUT_S for the lock, and every transaction starts
with BEGIN IMMEDIATE: it holds the write lock from its first read, which makes each check-then-update
atomic. PostgreSQL and MySQL need neither (row locks; Optuna reads trials FOR UPDATE there).

Creating the schema is not atomic either (two processes may both see no table and both create it, or
both insert the version row): opening is retried a few times on those transient errors.
"""

from __future__ import annotations

import time
from typing import Any

import optuna

from harness import compat

BUSY_TIMEOUT_S = 120.0
"""How long a SQLite writer waits for the lock: far longer than any commit here takes, even with many
workers; a wait that long means a stuck process, and the error then names the database."""
HEARTBEAT_S, GRACE_S = 30, 120
"""Optuna's heartbeat on RDB storages: a worker records one every HEARTBEAT_S while it runs a trial; a
RUNNING trial without one for GRACE_S is declared dead (another host's worker was lost) and retried."""
OPEN_ATTEMPTS = 8
TRANSIENT = ("locked", "busy", "already exists", "duplicate key", "unique constraint", "deadlock")


def open_rdb(url: str, *, writer: bool = True) -> optuna.storages.RDBStorage:
    """RDBStorage for `url`, tuned for several workers (module docstring); readers (`sweep status`,
    `watch`) get the plain deferred transactions, so looking at a study never takes its write lock."""
    from harness.study.failures import RetryStale

    sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": BUSY_TIMEOUT_S}} if sqlite else {}
    for attempt in range(OPEN_ATTEMPTS):
        try:
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryStale(max_retry=3),
            )
            break
        except Exception as e:  # noqa: BLE001 - only transient ones are retried; the rest re-raised
            if attempt == OPEN_ATTEMPTS - 1 or not is_transient(e):
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt))
    if sqlite and writer:
        immediate_transactions(storage.engine)
    return storage


def is_transient(e: BaseException) -> bool:
    """A lock or a lost creation race, which the same call a moment later gets past."""
    text = f"{type(e).__name__} {e} {e.__cause__ or ''}".lower()
    return any(word in text for word in TRANSIENT)


def immediate_transactions(engine: Any) -> None:
    """BEGIN IMMEDIATE for every transaction of this engine (SQLAlchemy's documented pysqlite recipe:
    take BEGIN away from the driver, emit our own), and synchronous=NORMAL on its WAL database."""
    from sqlalchemy import event

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        # The writer's database is in WAL mode (study.use_wal). There, synchronous=NORMAL fsyncs at
        # checkpoints instead of at every commit: still never corrupt, and a killed process loses nothing;
        # only a power cut or OS crash can drop the last commits, which leaves the study resumable (the
        # trial they belonged to is found interrupted and retried). A trial makes ~20 commits: ~30% of
        # the storage time per trial here (P7).
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    engine.dispose()  # the connections made while opening predate the hooks


def sqlite_busy_timeout(storage: Any) -> float | None:
    """The busy timeout a storage's SQLite connections use (None if not SQLite): for the tests and docs."""
    engine = compat.rdb_engine(storage)
    if engine is None or engine.dialect.name != "sqlite":
        return None
    with engine.connect() as conn:
        return float(conn.exec_driver_sql("PRAGMA busy_timeout").scalar()) / 1000.0


def set_user_attrs(trial: Any, attrs: dict[str, Any]) -> None:
    """Write several trial user attrs in one storage call, as `trial.set_user_attr` each would.

    Optuna's public API commits one attr per call: on SQLite each is a transaction with its own fsync, and
    a trial ends with a dozen of them (objective.record). Here: RDB storages get one transaction (Optuna's
    own per-attr upsert, committed once); the journal gets one append of all the entries (its log format
    holds one attr per entry, so they are appended together). Any other storage, or an Optuna whose
    batched-write internals moved (harness.compat; tests/test_compat.py fails first), falls back to one
    public call per attr. The trial's id and its cached view are needed either way: those raise."""
    if not attrs:
        return
    storage: Any = getattr(trial, "storage", None)
    written = False
    if storage is not None:
        trial_id = compat.trial_id(trial)  # outside the try: a moved id is an error, not a fallback
        backend = compat.unwrap_cached_storage(storage)  # the RDBStorage an RDB study wraps
        try:
            written = _batched(backend, trial_id, attrs)
        except (compat.PrivateAPIMoved, AttributeError, ImportError, TypeError):
            written = False  # batched-write internals changed: the public path below still works
    if not written:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    compat.cached_frozen_trial(trial).user_attrs.update(attrs)  # what trial.user_attrs reads later


def _batched(backend: Any, trial_id: int, attrs: dict[str, Any]) -> bool:
    if isinstance(backend, optuna.storages.RDBStorage):
        compat.rdb_set_user_attrs(backend, trial_id, attrs)
        return True
    if isinstance(backend, optuna.storages.JournalStorage):
        compat.journal_set_user_attrs(backend, trial_id, attrs)
        return True
    return False
