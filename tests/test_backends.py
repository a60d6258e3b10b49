"""model.backend: unsloth is refused at load, before anything is written, on a machine that cannot run it:
without its package (this one), with a quantization Unsloth does not load, and without a CUDA GPU (a stand-in
package on the path: found by the check, never imported). The CUDA path itself needs a GPU (README)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, sweep_cli

SWEEP = str(ROOT / "sweeps/pricer.yaml")


def fake_unsloth(tmp_path: Path) -> Path:
    """An `unsloth` package that fails loudly if imported: the checks must find it without importing."""
    pkg = tmp_path / "site" / "unsloth"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('harness imported unsloth before its checks')\n")
    return pkg.parent


def refused(tmp_path: Path, *overrides: str, path: tuple[Path, ...] = ()) -> str:
    out = tmp_path / "results"
    proc = sweep_cli(
        ["run", SWEEP, f"results_dir={out}", "model.backend=unsloth", "--n-trials", "1", *overrides],
        tmp_path,
        path=path,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    assert not list(out.rglob("study.db")) and not list(out.rglob("trial-*")), "a refused run wrote a study"
    return " ".join(text.split())


def test_unsloth_without_its_package_is_refused_at_load(tmp_path: Path) -> None:
    text = refused(tmp_path)
    assert "model.backend: unsloth is not installed here" in text
    assert "pip install 'harness[unsloth]'" in text


def test_unsloth_without_cuda_is_refused_before_loading_anything(tmp_path: Path) -> None:
    text = refused(tmp_path, path=(fake_unsloth(tmp_path),))
    assert "model.backend unsloth needs a CUDA GPU" in text
    assert "imported unsloth" not in text


@pytest.mark.parametrize(
    "overrides",
    [("model.quantization=fp4",), ("parameters.quantization.values=[nf4,fp4]",)],
    ids=["fixed", "searched"],
)
def test_unsloth_refuses_a_quantization_it_cannot_load(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    text = refused(tmp_path, *overrides, path=(fake_unsloth(tmp_path),))
    assert "model.quantization fp4: Unsloth loads nf4, int8, none" in text


def test_unsloth_with_several_ranks_per_trial_is_refused(tmp_path: Path) -> None:
    text = refused(tmp_path, "training.distributed=ddp", path=(fake_unsloth(tmp_path),))
    assert "Unsloth trains a trial on one GPU" in text
