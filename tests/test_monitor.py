"""ResourceMonitor: real RSS sampling on this machine; CUDA paths against monkeypatched torch.cuda."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from helpers import FakeRecipe, sweep

from harness.core import attrs, trialdir
from harness.study.run import run_sweep
from harness.trial import monitor
from harness.trial.monitor import ResourceMonitor

MB = 1024 * 1024


@pytest.mark.parametrize("kernel_peak", [True, False], ids=["vmhwm", "sampled-only"])
def test_peak_rss_rises_with_a_200mb_allocation(monkeypatch, kernel_peak):
    if not kernel_peak:  # the sampling thread alone must see it too (where clear_refs is not allowed)
        monkeypatch.setattr(monitor, "reset_kernel_peak", lambda: False)
    before = monitor.current_rss_bytes()
    assert before is not None and before > 0
    with ResourceMonitor(interval=0.05) as m:
        block = b"\x01" * (200 * MB)  # written, so every page is resident (unlike calloc'd zeros)
        deadline = (
            time.monotonic() + 10
        )  # a loaded machine may delay the sampling thread; never a timing assert
        while (during := m.snapshot())["rss_mb"] < before / MB + 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        del block
    assert during["rss_mb"] >= before / MB + 150
    assert m.figures["peak_rss_mb"] >= before / MB + 150
    assert m.figures["rss_mb"] < m.figures["peak_rss_mb"] - 100  # freed again: current != peak
    assert m.figures["cuda_peak_allocated_mb"] is None  # no GPU here, and no guessing


def test_a_monitor_started_after_the_spike_does_not_report_it():
    """The peak is per trial: earlier allocations in the same process do not count."""
    block = b"\x01" * (200 * MB)
    del block
    with ResourceMonitor(interval=0.05) as m:
        time.sleep(0.1)
    assert m.figures["peak_rss_mb"] < m.figures["rss_mb"] + 100


class FakeCuda:
    """torch.cuda's memory and utilisation API, two devices."""

    def __init__(self, util_error: bool = False) -> None:
        self.resets: list[int] = []
        self.util_calls = 0
        self.util_error = util_error

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return 2

    def reset_peak_memory_stats(self, d: int) -> None:
        self.resets.append(d)

    def max_memory_allocated(self, d: int) -> int:
        return (1000 + d * 500) * MB

    def max_memory_reserved(self, d: int) -> int:
        return (1200 + d * 500) * MB

    def utilization(self, d: int) -> int:
        self.util_calls += 1
        if self.util_error:
            raise ModuleNotFoundError("pynvml does not seem to be installed")
        return 80 + 10 * d


def test_cuda_figures_are_summed_over_devices_and_utilisation_averaged():
    cuda = FakeCuda()
    monitor.cuda_start(cuda)
    assert cuda.resets == [0, 1]
    assert monitor.cuda_memory(cuda) == {"cuda_peak_allocated_mb": 2500.0, "cuda_peak_reserved_mb": 2900.0}
    assert monitor.cuda_utilization(cuda) == 85.0
    with ResourceMonitor(interval=0.02, cuda=cuda) as m:
        time.sleep(0.1)
    assert m.figures["cuda_peak_allocated_mb"] == 2500.0
    assert m.figures["cuda_peak_reserved_mb"] == 2900.0
    assert m.figures["cuda_util"] == 85.0


def test_cuda_without_nvml_reports_memory_but_no_utilisation():
    cuda = FakeCuda(util_error=True)
    assert monitor.cuda_utilization(cuda) is None
    with ResourceMonitor(interval=0.02, cuda=cuda) as m:
        time.sleep(0.15)
    assert m.figures["cuda_util"] is None and m.figures["cuda_peak_reserved_mb"] == 2900.0
    assert cuda.util_calls <= 2  # stops asking a driver that cannot answer

    broken = SimpleNamespace(device_count=lambda: 1, max_memory_allocated=lambda d: 1 / 0)
    assert monitor.cuda_memory(broken) == {"cuda_peak_allocated_mb": None, "cuda_peak_reserved_mb": None}


def test_torch_cuda_is_used_when_available(monkeypatch):
    torch = pytest.importorskip("torch")
    fake = FakeCuda()
    for name in (
        "is_available",
        "device_count",
        "reset_peak_memory_stats",
        "max_memory_allocated",
        "max_memory_reserved",
        "utilization",
    ):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    assert monitor._cuda() is torch.cuda
    with ResourceMonitor(interval=0.02) as m:
        time.sleep(0.05)
    assert fake.resets == [0, 1]
    assert m.figures["cuda_peak_allocated_mb"] == 2500.0 and m.figures["cuda_util"] == 85.0

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert monitor._cuda() is None


def test_figures_go_to_user_attrs_and_metrics_json(tmp_path):
    cfg = sweep(tmp_path, "budget.max_steps=40", "budget.n_trials=2")
    recipe = FakeRecipe(base=1.0, lr_weight=0.0, decay=0.0)  # eval_loss 1.0 at every eval of every trial
    study = run_sweep(cfg, recipe=recipe).study
    for t in study.trials:
        assert t.user_attrs["peak_rss_mb"] > 0 and t.user_attrs["rss_mb"] > 0
        assert "cuda_peak_allocated_mb" not in t.user_attrs  # unmeasured figures are left out
        saved = json.loads((trialdir.trial_dir(cfg.study_dir, t.number) / "metrics.json").read_text())
        assert saved["state"] == "COMPLETE" and saved["value"] == 1.0  # what write_result put there stays
        assert saved["resources"]["peak_rss_mb"] == t.user_attrs["peak_rss_mb"]
        assert set(saved["resources"]) == set(attrs.RESOURCES)


def test_record_never_raises():
    class Broken:
        def set_user_attr(self, k, v):
            raise RuntimeError("database is locked")

    monitor.record(Broken(), {"peak_rss_mb": 1.0, "cuda_util": None})
