"""Memory (and GPU) use of one trial, sampled in the background while it trains.

`ResourceMonitor` is a context manager: a daemon thread reads the process's current RSS every ~0.2 s and
keeps the peak; on CUDA the allocator's own peak counters are reset at the start and read at the end, and
utilisation is averaged over the samples. The figures go into the trial's user attrs (so `sweep watch` and
the report see them without opening files) and into its metrics.json under "resources".

Nothing here may fail a trial: every probe is guarded and a figure that cannot be measured is None.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from types import TracebackType
from typing import Any

from harness.core import attrs

MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int | None:
    """Resident set size now. /proc is one small read (cheap enough for 5 Hz); psutil elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - no probe available: the figure is simply unknown
        return None


def reset_kernel_peak() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) so it covers this trial only.

    Sampling every 0.2 s misses short spikes (one big temporary tensor); the kernel's own peak does not.
    Writing "5" to clear_refs resets only that counter (Linux >= 4.0); where it is not allowed we keep the
    sampled peak alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def kernel_peak_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cuda() -> Any | None:
    """torch.cuda when torch is already loaded and a GPU is there; never imports torch just to look."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not break a CPU trial
        return None


def cuda_start(cuda: Any) -> None:
    """Peaks of this trial only: the allocator's counters are process-wide otherwise."""
    for d in range(cuda.device_count()):
        try:
            cuda.reset_peak_memory_stats(d)
        except Exception:  # noqa: BLE001
            pass


def cuda_memory(cuda: Any) -> dict[str, float | None]:
    """Peak allocated (tensors) and reserved (allocator cache, what nvidia-smi shows) since cuda_start,
    summed over devices: a model spread with device_map over several GPUs uses all of them."""
    allocated = reserved = 0.0
    try:
        for d in range(cuda.device_count()):
            allocated += cuda.max_memory_allocated(d)
            reserved += cuda.max_memory_reserved(d)
    except Exception:  # noqa: BLE001
        return {attrs.CUDA_PEAK_ALLOCATED_MB: None, attrs.CUDA_PEAK_RESERVED_MB: None}
    return {
        attrs.CUDA_PEAK_ALLOCATED_MB: round(allocated / MB, 1),
        attrs.CUDA_PEAK_RESERVED_MB: round(reserved / MB, 1),
    }


def cuda_utilization(cuda: Any) -> float | None:
    """Mean GPU utilisation (%) over devices now; needs pynvml/amdsmi, so often unavailable."""
    util = getattr(cuda, "utilization", None)
    if util is None:
        return None
    try:
        values = [float(util(d)) for d in range(cuda.device_count())]
    except Exception:  # noqa: BLE001 - no NVML: utilisation is unknown, memory figures still count
        return None
    return sum(values) / len(values) if values else None


class ResourceMonitor:
    """`with ResourceMonitor() as m: train()` then `m.figures` (also returned by `stop()`)."""

    def __init__(self, interval: float = 0.2, cuda: Any | None = None) -> None:
        self.interval = interval
        self._cuda = cuda if cuda is not None else _cuda()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._peak = 0
        self._rss: int | None = None
        self._kernel_peak = False
        self._utils: list[float] = []
        self._util_ok = True
        self.figures: dict[str, float | None] = {}

    def start(self) -> ResourceMonitor:
        self._kernel_peak = reset_kernel_peak()
        if self._cuda is not None:
            cuda_start(self._cuda)
        self._sample()
        self._thread = threading.Thread(target=self._run, name="harness-resource-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        rss = current_rss_bytes()
        util = cuda_utilization(self._cuda) if self._cuda is not None and self._util_ok else None
        with self._lock:
            if rss is not None:
                self._rss = rss
                self._peak = max(self._peak, rss)
            if util is not None and math.isfinite(util):
                self._utils.append(util)
            elif self._cuda is not None:
                self._util_ok = False  # stop asking a driver that cannot answer, 5 times a second

    def snapshot(self) -> dict[str, float | None]:
        """The figures so far (the trial may still be running)."""
        with self._lock:
            peak = self._peak
            rss, utils = self._rss, list(self._utils)
        if self._kernel_peak:
            peak = max(peak, kernel_peak_bytes() or 0)
        out: dict[str, float | None] = {
            attrs.PEAK_RSS_MB: round(peak / MB, 1) if peak else None,
            attrs.RSS_MB: round(rss / MB, 1) if rss is not None else None,
            attrs.CUDA_PEAK_ALLOCATED_MB: None,
            attrs.CUDA_PEAK_RESERVED_MB: None,
            attrs.CUDA_UTIL: round(sum(utils) / len(utils), 1) if utils else None,
        }
        if self._cuda is not None:
            out.update(cuda_memory(self._cuda))
        return out

    def stop(self) -> dict[str, float | None]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval + 1)
        self._sample()
        self.figures = self.snapshot()
        return self.figures

    def __enter__(self) -> ResourceMonitor:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def measured(figures: dict[str, float | None]) -> dict[str, float]:
    """Only the figures that were measured, so tables skip what a CPU cannot know."""
    return {key: value for key, value in figures.items() if value is not None}


def record(trial: Any, figures: dict[str, float | None]) -> None:
    """Flat user attrs (peak_rss_mb, ...) while a trial runs (`sweep watch`); a finished trial's last
    figures go with its results in one storage call (objective.record)."""
    for key, value in measured(figures).items():
        try:
            trial.set_user_attr(key, value)
        except Exception:  # noqa: BLE001 - a storage hiccup on a side figure must not fail the trial
            pass
