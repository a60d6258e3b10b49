"""Storage URL -> Optuna storage, and the read-only opening the reporting verbs use (open_existing,
load, locate, discover), which creates nothing.

Default storage: sqlite:///results/<name>/study.db. Other Optuna storages by URL (postgresql://, mysql://),
and `journal:PATH` (or a path ending in .log / .journal) for Optuna's file journal, which suits NFS.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from pathlib import Path

import optuna

from harness import compat
from harness.core import attrs, trialdir
from harness.errors import StorageError
from harness.sweepfile.schema import SweepConfig


def mask_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db, for anything printed."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def storage_url(cfg: SweepConfig, override: str | None = None) -> str:
    url = override or cfg.storage
    if url:
        return url
    return f"sqlite:///{trialdir.study_db(cfg.study_dir).as_posix()}"


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
        _check_sqlite_url(url, path)
        try:
            parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
        except OSError as e:  # a name too long for the file system, ...
            raise StorageError(f"storage {url}: {e.strerror or e}") from None
        if not os.access(parent, os.W_OK):
            raise StorageError(f"storage {url}: folder {parent} is not writable")


def _check_sqlite_url(url: str, path: Path) -> None:
    """The path SQLAlchemy will open is the path harness writes to: in a URL `?` starts the query and `%`
    an escape, so sqlite:///results/a?b/study.db would open results/a."""
    from sqlalchemy.engine import make_url

    try:
        opened = make_url(url).database
    except Exception:  # noqa: BLE001 - any URL SQLAlchemy cannot parse is the user's to fix
        opened = None
    if opened != str(path):
        raise StorageError(
            f"storage {url}: SQLAlchemy would open {opened!r}, not {str(path)!r} ('?', '#' and '%' mean "
            "something in a URL): choose a results folder and study name without them"
        )


SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""
CREATING_S = 2.0
"""How long a zero-byte study.db may stay empty: one being created by another worker (use_wal) gets its
header within microseconds; one that stays empty was truncated, and opening it would make it a new one."""


def check_sqlite_file(path: Path, reading: bool = False) -> None:
    """An existing study.db must be a SQLite database, and for the read-only verbs an Optuna one: opening
    anything else (a zero-byte file, a file that is not SQLite) would turn it into an empty study database
    and hide what happened to the old one. Nothing is opened or written here."""
    try:
        if not path.exists():
            return
        if path.is_dir():
            raise StorageError(f"study database {path} is a folder; expected a SQLite file (study.db)")
        deadline = time.monotonic() + CREATING_S
        while path.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise StorageError(f"storage {path}: cannot be read: {e.strerror or e}") from None
    if head != SQLITE_HEADER:
        what = "is empty (0 bytes)" if size == 0 else f"is not a SQLite database ({size:,} bytes)"
        raise StorageError(
            f"study database {path} {what}; harness neither reads nor overwrites it. If it held your "
            "study, restore it from a backup; otherwise move it away (the next `sweep run` creates a new "
            "study there), or give another --storage / results_dir"
        )
    problem = _not_a_study(path) if reading else None
    if problem is not None:
        raise StorageError(f"study database {path} {problem}")


def check_journal_end(path: Path) -> None:
    """A journal a writer appends to must end with a whole line. One cut short (a crash mid-write, a full
    disk) would have the next entry appended onto its end: one line no reader can parse, and every later
    read of the study fails. (Readers skip a partial last line: they need no check.) Another worker's
    append in progress ends within moments, so a partial line is given CREATING_S to complete."""
    deadline = time.monotonic() + CREATING_S
    try:
        while path.is_file() and path.stat().st_size:
            with path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) == b"\n":
                    return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return  # no journal yet, or an empty one
    except OSError as e:
        raise StorageError(f"journal {path}: cannot be read: {e.strerror or e}") from None
    raise StorageError(
        f"journal {path} ends in a partial line (a write cut short); appending to it would make the "
        "whole journal unreadable, so harness leaves it as it is. Delete the text after its last line "
        "break (the entry that was being written), then run again"
    )


def _not_a_study(path: Path) -> str | None:
    """Why a SQLite file holds no study to read (None: it does): damaged, or without Optuna's tables."""
    import sqlite3

    try:
        # A plain connection, as RDBStorage's: the file exists and is SQLite, so nothing is created, and
        # its close removes the -wal/-shm files it may make (a read-only one would leave them behind).
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
            found = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'")
            if found.fetchone() is not None:
                return None
    except sqlite3.DatabaseError as e:  # a file cut short, overwritten pages
        return (
            f"is damaged (SQLite: {e}); harness does not open it. Restore it from a backup, or see "
            "https://sqlite.org/recovery.html"
        )
    return (
        "is a SQLite database without Optuna's tables, so it holds no study (`sweep run` creates them); "
        "give the study.db of a sweep"
    )


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
                check_journal_end(journal)
                journal.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        if "://" not in url:
            raise StorageError(
                f"storage {shown!r} is not a storage URL: use sqlite:///path/study.db, "
                "postgresql://user:pass@host/db, or journal:path/study.log"
            )
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            check_sqlite_file(path, reading=not create_dirs)
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


def close(storage: optuna.storages.BaseStorage) -> None:
    """Close a storage's database connections now, not when they are collected: a SQLite connection keeps
    its -wal/-shm files beside study.db while it is open (a refused run must leave the folder as it was)."""
    engine = compat.rdb_engine(storage)
    if engine is not None:
        engine.dispose()


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:").removeprefix("//"))
    if "://" not in url and url.endswith((".log", ".journal")):
        return Path(url)
    return None


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
        url = storage or f"sqlite:///{trialdir.study_db(Path(results_dir) / name).as_posix()}"
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
    stored = attrs.config(study).get("results_dir")
    if not here.exists() and stored and (Path(stored) / study.study_name).exists():
        return Path(stored) / study.study_name
    return here


def discover(results_dir: str, storage: str | None) -> list[tuple[str, list[optuna.Study] | StorageError]]:
    """(storage URL, its studies or the error opening it) for --storage, or for every results/*/study.db."""
    if storage:
        urls = [storage]
    else:
        urls = [f"sqlite:///{p.as_posix()}" for p in sorted(Path(results_dir).glob(f"*/{trialdir.STUDY_DB}"))]
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
