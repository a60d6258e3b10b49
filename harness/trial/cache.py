"""The session cache: resources built once per worker process and shared by every trial and every sweep.

Scopes, like pytest's:
- session (this cache): the quantized base model, the tokenizer (harness.trial.base), the dataset splits
  and their tokenized forms (harness.trial.prepare). Keyed by exactly the settings they depend on, so two
  sweeps with the same model and data share them and a sweep with another model gets its own.
- trial (harness.trial.recipe): the LoRA adapter, optimizer, scheduler and Trainer, made and torn down
  per trial.

Reloading and re-quantizing the base for each trial is what makes `Trainer.hyperparameter_search` with
`model_init` slow; here a trial attaches a fresh adapter to the shared base and removes it afterwards.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

T = TypeVar("T")

_SESSION: dict[tuple[str, str], Any] = {}
BUILDS: Counter[str] = Counter()
"""How many times each session fixture was actually built in this process (tests check reuse)."""


def session_fixture(fn: Callable[..., T]) -> Callable[..., T]:
    """Memoize per process. The first argument is the key: exactly the settings the result depends on
    (so sweeps that differ elsewhere still share it); the other arguments are what it is built from."""

    @wraps(fn)
    def wrapper(key: dict[str, Any], *args: Any) -> T:
        cache_key = (fn.__name__, json.dumps(key, sort_keys=True, default=str))
        if cache_key not in _SESSION:
            BUILDS[fn.__name__] += 1
            _SESSION[cache_key] = fn(key, *args)
        return _SESSION[cache_key]

    return wrapper


def clear_session() -> None:
    _SESSION.clear()
