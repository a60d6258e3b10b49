"""Ctrl-C / SIGTERM (harness.core.interrupt): at once, but never inside a storage write, and never lost.

The signals are real (signal.raise_signal on this process), so is the storage (our SQLite RDB storage):
what the handler sees is what it sees when a pool stops a worker in the middle of a trial's writes.
"""

from __future__ import annotations

import io
import signal
import sqlite3
import sys
import time
from pathlib import Path

import optuna
import pytest
import rich.console
from sqlalchemy import event

from harness import compat
from harness.core import interrupt
from harness.core.interrupt import Terminated
from harness.study import rdb


def wait_for_interrupt(seconds: float = 10.0) -> None:
    """Sleep until the redelivered interrupt comes (it is raised out of here), at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_signal_outside_any_write_is_raised_at_once():
    with interrupt.installed():
        with pytest.raises(Terminated):
            signal.raise_signal(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt) as caught:
            signal.raise_signal(signal.SIGINT)
        assert not isinstance(caught.value, Terminated)  # Ctrl-C exits 130, SIGTERM 143 (cli.main)


def test_a_signal_inside_a_storage_write_waits_for_the_write_to_commit(tmp_path: Path):
    """SIGTERM between SQLAlchemy's BEGIN IMMEDIATE and its COMMIT: raised there, it left the write lock
    held and the trial's re-queue and FAIL then met "database is locked" (a trial left RUNNING). Now the
    write commits, the interrupt comes right after, and the database is free."""
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=rdb.open_rdb(url))
    trial = study.ask()
    engine = compat.rdb_engine(compat.study_storage(study))
    sent: list[bool] = []

    def signal_mid_transaction(conn) -> None:  # runs inside SQLAlchemy, after BEGIN IMMEDIATE
        if not sent:
            sent.append(True)
            signal.raise_signal(signal.SIGTERM)

    event.listen(engine, "begin", signal_mid_transaction)
    with interrupt.installed():
        try:
            trial.set_user_attr("written", 1)  # the write is not cut short...
        except Terminated:
            pytest.fail("the interrupt was raised inside the storage write")
        assert sent
        with pytest.raises(Terminated):  # ...and the interrupt is not lost
            wait_for_interrupt()
    event.remove(engine, "begin", signal_mid_transaction)

    again = optuna.load_study(study_name="s", storage=url)
    assert again.trials[0].user_attrs == {"written": 1}
    with sqlite3.connect(tmp_path / "study.db", timeout=0) as con:  # no wait: nobody holds the lock
        con.execute("BEGIN IMMEDIATE")
        con.rollback()


def test_an_interrupt_something_swallowed_is_raised_at_the_next_check():
    """A KeyboardInterrupt raised inside a finalizer or a library's `except BaseException` is gone; the
    request is not: each training step's check raises it again."""
    with interrupt.installed():
        interrupt.check()  # nothing asked: nothing raised
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pass  # what the library did
        with pytest.raises(Terminated):
            interrupt.check()


def test_deferred_holds_an_interrupt_until_the_block_ends():
    with interrupt.installed():
        with interrupt.deferred():
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.2)  # longer than a redelivery: still nothing inside the block
            interrupt.check()  # not a safe point while deferred
            finished = True
        assert finished
        with pytest.raises(KeyboardInterrupt):
            wait_for_interrupt()


def test_a_redelivered_interrupt_wakes_a_blocking_wait():
    """Deferred, then redelivered as a real signal to the main thread: a sleep (or a wait on a worker)
    right after the protected call is cut short, not finished first."""
    with interrupt.installed():
        with interrupt.deferred():
            signal.raise_signal(signal.SIGTERM)
        started = time.monotonic()
        with pytest.raises(Terminated):
            time.sleep(60)
        assert time.monotonic() - started < 30


def test_a_second_signal_during_the_clean_up_does_not_cut_it_short():
    """The first signal is delivered; the clean-up it starts runs deferred; a second one then is dropped
    (the pool signals each worker once; a user can press again)."""
    with interrupt.installed():
        with pytest.raises(Terminated):
            signal.raise_signal(signal.SIGTERM)
        with interrupt.deferred():
            signal.raise_signal(signal.SIGTERM)
        time.sleep(0.2)  # no redelivery comes


def test_the_handlers_before_are_back_afterwards():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with interrupt.installed():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_protected_frames_are_those_of_the_storage_and_console_libraries():
    """Code called back from inside rich (a renderable being printed) is inside a console write."""
    seen = []

    class Probe:
        def __rich_console__(self, console, options):
            seen.append(interrupt.protected(sys._getframe()))
            return iter(())

    assert not interrupt.protected(sys._getframe())  # a test's own frames
    rich.console.Console(file=io.StringIO()).print(Probe())
    assert seen == [True]
