"""What one trial spent: wall time x devices (device-seconds), optimizer steps, training tokens, peak memory.

One record per trial, the same dict in its metrics.json (`cost`) and its user attr `trial_cost`
(harness.study.objective writes both when the trial ends, whatever way it ends), so a study's totals
(harness.results.cost) can be recomputed from the trial folders. Every figure is this run's own: a retry
resumed from a checkpoint counts the steps and tokens it trained itself, not the interrupted trial's.
No optuna, torch or pandas here: core sits below study, trial and results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.core import attrs

DEVICE_HOUR_S = 3600.0


@dataclass(frozen=True)
class TrialCost:
    wall_s: float
    """The trial's wall time in its worker: from its first line to its result, or to the failure or the
    interruption that ended it. Loading the base and measuring baselines belong to no trial."""
    devices: int
    """The devices (data-parallel ranks) it trained on: TrialResult.world_size; a trial that failed before
    its recipe could say: this process's torch.distributed world size (1 without one)."""
    steps: int | None
    """Optimizer steps this run took; a trial that failed or was interrupted: up to its last eval."""
    tokens: int | None
    """Real (non-padding) tokens it trained on, over every accumulation micro-batch; None from a recipe
    that does not count them. A failed or interrupted trial: up to its last eval."""
    peak_memory_mb: float | None
    """The device's peak: CUDA memory reserved (summed over devices) on a GPU, else the process's peak
    RSS (harness.trial.monitor)."""

    @property
    def device_s(self) -> float:
        """wall_s x devices, rounded to ms: what `budget.device_hours` and the report sum."""
        return round(self.wall_s * self.devices, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "devices": self.devices,
            "device_s": self.device_s,
            "steps": self.steps,
            "tokens": self.tokens,
            "peak_memory_mb": self.peak_memory_mb,
        }

    @classmethod
    def from_dict(cls, d: Any) -> TrialCost | None:
        """The record back from a user attr or metrics.json; None when it is absent or not one."""
        if not isinstance(d, Mapping) or not _num(d.get("wall_s")):
            return None
        devices = d.get("devices")
        return cls(
            wall_s=float(d["wall_s"]),
            devices=int(devices) if isinstance(devices, (int, float)) else 1,
            steps=int(d["steps"]) if _num(d.get("steps")) else None,
            tokens=int(d["tokens"]) if _num(d.get("tokens")) else None,
            peak_memory_mb=float(d["peak_memory_mb"]) if _num(d.get("peak_memory_mb")) else None,
        )


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def measure(
    wall_s: float,
    devices: int,
    steps: int | None,
    tokens: int | None,
    resources: Mapping[str, float | None],
) -> TrialCost:
    """The record of one trial; `resources` are its ResourceMonitor figures (harness.trial.monitor)."""
    peak = resources.get(attrs.CUDA_PEAK_RESERVED_MB)
    if peak is None:
        peak = resources.get(attrs.PEAK_RSS_MB)
    return TrialCost(
        wall_s=round(max(0.0, wall_s), 3),
        devices=max(1, int(devices)),
        steps=None if steps is None else max(0, int(steps)),
        tokens=None if tokens is None else max(0, int(tokens)),
        peak_memory_mb=None if peak is None else float(peak),
    )


def hours_text(device_s: float) -> str:
    """`0.0123 device-hours (44.3 device-s)`: both, since a small sweep is seconds and a real one hours."""
    return f"{device_s / DEVICE_HOUR_S:.4g} device-hours ({device_s:.1f} device-s)"
