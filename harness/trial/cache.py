"""The session cache: resources built once per worker process and shared by every trial and every sweep.

Scopes, like pytest's:
- session (this cache): the quantized base model, the tokenizer (harness.trial.base), the dataset splits
  and their tokenized forms (harness.trial.prepare). Keyed by exactly the settings they depend on, so two
  sweeps with the same model and data share them and a sweep with another model gets its own.
- trial (harness.trial.recipe): the LoRA adapter, optimizer, scheduler and Trainer, made and torn down
  per trial.

Reloading and re-quantizing the base for each trial is what makes `Trainer.hyperparameter_search` with
`model_init` slow; here a trial attaches a fresh adapter to the shared base and removes it afterwards.
A fixture called with `keep=N` holds at most N results of its own at once (the bases, one per searched
quantization: memory is what QLoRA is for), dropping the least recently used before it builds another.
"""

from __future__ import annotations

import gc
import json
from collections import Counter, OrderedDict
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

T = TypeVar("T")

_SESSION: OrderedDict[tuple[str, str], Any] = OrderedDict()  # least recently used first
BUILDS: Counter[str] = Counter()
"""How many times each session fixture was actually built in this process (tests check reuse)."""


def session_fixture(fn: Callable[..., T]) -> Callable[..., T]:
    """Memoize per process. The first argument is the key: exactly the settings the result depends on
    (so sweeps that differ elsewhere still share it); the other arguments are what it is built from."""

    @wraps(fn)
    def wrapper(key: dict[str, Any], *args: Any, keep: int | None = None) -> T:
        cache_key = (fn.__name__, json.dumps(key, sort_keys=True, default=str))
        if cache_key in _SESSION:
            _SESSION.move_to_end(cache_key)
            return _SESSION[cache_key]
        if keep is not None:
            _evict(fn.__name__, keep - 1)  # first: the memory of the dropped ones is what the new one needs
        BUILDS[fn.__name__] += 1
        _SESSION[cache_key] = fn(key, *args)
        return _SESSION[cache_key]

    return wrapper


def _evict(name: str, room: int) -> None:
    """Drop `name`'s least recently used results until at most `room` remain."""
    held = [k for k in _SESSION if k[0] == name]
    for k in held[: max(len(held) - room, 0)]:
        del _SESSION[k]
    if len(held) > room:
        gc.collect()


def held(name: str) -> int:
    """How many results of fixture `name` the session holds now."""
    return sum(1 for k in _SESSION if k[0] == name)


def clear_session() -> None:
    _SESSION.clear()
