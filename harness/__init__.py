"""harness: hyperparameter sweeps for QLoRA fine-tuning, run like a test suite."""

from __future__ import annotations

from harness.errors import HarnessError

__all__ = ["HarnessError"]
__version__ = "0.1.0"
