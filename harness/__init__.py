"""harness: hyperparameter sweeps for QLoRA fine-tuning, run like a test suite.

The public API, importable from `harness`:
- `load_sweep(path, overrides)`: a sweep file -> a validated, frozen SweepConfig (harness.sweepfile);
- `run_sweep(cfg, storage=..., recipe=...)`: run or resume its study (harness.study);
- `TrialSpec`, `TrialResult`: what a recipe is given and returns (harness.core), for custom recipes;
- `register_baseline(task, name)`: add a task baseline (harness.tasks.baselines);
- `HarnessError`: every error a user can cause (exit 2 from the CLI).

Everything but HarnessError is imported on first use: `import harness.sweepfile` (or the pytest plugin)
must not pay for optuna or torch, and importing a submodule runs this file first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.core.spec import TrialResult, TrialSpec
    from harness.study.run import run_sweep
    from harness.sweepfile.load import load_sweep
    from harness.tasks.baselines import register as register_baseline

__all__ = ["HarnessError", "TrialResult", "TrialSpec", "load_sweep", "register_baseline", "run_sweep"]
__version__ = "0.1.0"

_LAZY = {
    "load_sweep": ("harness.sweepfile.load", "load_sweep"),
    "run_sweep": ("harness.study.run", "run_sweep"),
    "TrialSpec": ("harness.core.spec", "TrialSpec"),
    "TrialResult": ("harness.core.spec", "TrialResult"),
    "register_baseline": ("harness.tasks.baselines", "register"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)
