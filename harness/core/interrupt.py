"""Ctrl-C and SIGTERM stop a run at once, but never in the middle of a storage write.

Python raises KeyboardInterrupt wherever the main thread is when the signal comes. Raised inside an Optuna
storage call (SQLAlchemy between its BEGIN IMMEDIATE and COMMIT), it can leave the process's SQLite
connection holding the write lock: the objective's own clean-up (fail reason, re-queue) and Optuna's FAIL
then all fail with "database is locked" and the trial stays RUNNING until a later run finds it stale.
Raised inside rich's console write, a line is printed twice. Raised inside a finalizer (`__del__`) or a
library's `except BaseException`, it is lost and the sweep goes on.

So the handler (`installed`):
- raises at once where that is safe: Terminated for SIGTERM (exit 143), KeyboardInterrupt for SIGINT;
- inside a storage or console call (a frame of PROTECTED on the main thread's stack) it delivers the same
  signal again REDELIVER_S later, by when the call is done;
- inside `deferred()` (a trial's clean-up and recording) it waits for the block to end, then redelivers;
- remembers the request: `check()` (each training step) raises it again if something swallowed it.

One request is delivered once: a second signal that lands in a protected call is dropped (press again).
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

REDELIVER_S = 0.02
"""How long a deferred interrupt waits before it is tried again: storage commits take milliseconds."""

_HARNESS = Path(__file__).resolve().parents[1]
PROTECTED = (
    "/sqlalchemy/",
    "/sqlite3/",
    "/optuna/storages/",
    "/optuna/study/_tell.py",
    "/rich/",
    str(_HARNESS / "compat.py"),  # the batched attr writes drive Optuna's storage session themselves
    str(_HARNESS / "study" / "rdb.py"),
)
"""Files whose frames on the stack mean "inside a storage write or a console write": a path part each."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so a running trial stops the same graceful way (exit 143)."""


class _State:
    requested: int | None = None  # the signal asked for, until the run ends
    delivered = False  # raised once already (check() raises it again only if it was swallowed)
    armed = False  # a redelivery is on its way
    depth = 0  # deferred() nesting


_state = _State()


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def protected(frame: FrameType | None) -> bool:
    """Whether `frame` or any caller of it runs code of PROTECTED."""
    while frame is not None:
        name = frame.f_code.co_filename.replace("\\", "/")
        if any(part in name for part in PROTECTED):
            return True
        frame = frame.f_back
    return False


def _redeliver(signum: int) -> None:
    if _state.armed:
        return
    _state.armed = True

    def again() -> None:
        _state.armed = False
        if _state.requested is None or _state.delivered:
            return  # delivered meanwhile, or the run is over (installed() left: a fresh state)
        if hasattr(signal, "pthread_kill"):
            # The signal again, to the main thread: it also wakes a blocking call (a sleep, a wait).
            signal.pthread_kill(threading.main_thread().ident or 0, signum)
        else:
            _thread.interrupt_main(signal.Signals(signum))

    timer = threading.Timer(REDELIVER_S, again)
    timer.daemon = True
    timer.start()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.delivered and _state.requested is not None and (_state.depth or protected(frame)):
        return  # a second signal while the first one's clean-up writes: dropped, not cutting them short
    _state.requested, _state.delivered = signum, False
    if _state.depth or protected(frame):
        if not _state.depth:
            _redeliver(signum)
        return  # deferred(): redelivered when the block ends
    _state.delivered = True
    raise _exception(signum)


def check() -> None:
    """Raise the interrupt asked for, if one was (and was swallowed on its way out): a safe point."""
    if _state.requested is not None and not _state.depth:
        _state.delivered = True
        raise _exception(_state.requested)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """No interrupt inside the block (a trial's clean-up and the recording of its result): one that
    comes is delivered once the block is left."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if not _state.depth and _state.requested is not None and not _state.delivered:
            _redeliver(_state.requested)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """The handler for SIGINT and SIGTERM for the block (a fresh request state); the old ones after it.
    Off the main thread (a test driving the CLI in a thread) signals cannot be handled: nothing is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _state
    _state = _State()
    previous: dict[int, Any] = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        _state = _State()
