"""Helpers shared by the benchmarks: the result line, sweep configs, and the mid-size bench model.

Every benchmark prints exactly one line per figure, in this form (parsed by `benchmarks/__main__.py`):

    P1 overhead_share=3.2% target<=5% PASS
    P2 wall_ratio=0.61 target<=0.75 MISS  # reason, when one can be told
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `harness` importable from the repo root
    sys.path.insert(0, str(ROOT))

LINE = re.compile(r"^[A-Z]\d+[a-z]? \S+=\S+ target(<=|>=)\S+ (PASS|MISS|ERROR|SKIP)\b")
FIGURE = re.compile(
    r"^(?P<tag>[A-Z]\d+[a-z]?) (?P<name>\S+)=(?P<value>[-+0-9.eE]+|nan|inf|n/a)(?P<unit>[a-z%]*) "
    r"target(?P<op><=|>=)(?P<target>[-+0-9.eE]+)[a-z%]* (?P<status>PASS|MISS|ERROR|SKIP)"
    r"(?:\s+#\s*(?P<note>.*))?$"
)
# Same for both sides of every comparison. 1, not 2: with anything else running on a 2-core machine, two
# torch threads per process slow CPU training ~4x (measured here), which would swamp the ratios.
THREADS = 1

# The ~35M-parameter Llama for comparisons where loading must matter (P2, P5). Random init: timing and
# memory do not depend on the weights. intermediate_size must be a multiple of 64 (bitsandbytes' CPU
# 4-bit kernel packs whole 64-wide blocks per row; see harness/builtin/tiny_model.py).
BENCH_MODEL = {
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
}
BENCH_MODEL_VERSION = "llama-35m-v1"


def result_line(
    tag: str, name: str, value: float, unit: str, target: float, higher_is_better: bool, reason: str = ""
) -> str:
    """`P1 overhead_share=3.2% target<=5% PASS` (MISS plus `# reason` when the target is missed)."""
    ok = value >= target if higher_is_better else value <= target
    op = ">=" if higher_is_better else "<="
    line = f"{tag} {name}={_num(value)}{unit} target{op}{_num(target)}{unit} {'PASS' if ok else 'MISS'}"
    if not ok and reason:
        line += f"  # {reason}"
    return line


def _num(v: float) -> str:
    if v == 0 or abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def setup_torch() -> None:
    import torch

    torch.set_num_threads(THREADS)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_avg() -> str:
    one, five, _ = os.getloadavg()
    return f"load avg {one:.1f}/{five:.1f} on {os.cpu_count()} cores"


@contextmanager
def timed(box: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        box[key] = box.get(key, 0.0) + time.perf_counter() - t0


def sweep_command(results_dir: str | Path) -> list[str]:
    """`sweep run sweeps/pricer.yaml` into `results_dir`, as a fresh process (overrides go after it)."""
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        str(ROOT / "sweeps/pricer.yaml"),
        f"results_dir={results_dir}",
    ]


def sweep_config(results_dir: str | Path, *overrides: str) -> Any:
    """sweeps/pricer.yaml with overrides, results under `results_dir` (never the repo's results/)."""
    from harness.sweepfile.load import load_sweep

    return load_sweep(ROOT / "sweeps/pricer.yaml", [f"results_dir={results_dir}", *overrides])


def bench_cache_dir() -> Path:
    from harness.builtin.tiny_model import default_cache_dir

    return default_cache_dir() / "bench"


def ensure_bench_model() -> Path:
    """A ~35M-parameter random-init Llama with the builtin tokenizer, saved (safetensors) once."""
    return ensure_random_llama(BENCH_MODEL_VERSION, BENCH_MODEL)


def ensure_random_llama(version: str, dims: dict[str, Any], *, bf16: bool = False) -> Path:
    """A random-init Llama of `dims` with the builtin tokenizer, saved once under the bench cache
    (atomically: a temp folder, then a rename). `bf16`: built on the GPU when there is one, stored bf16."""
    from harness.builtin.tiny_model import ensure_tiny_model

    out = bench_cache_dir() / version
    if (out / "bench_meta.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(ensure_tiny_model())
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **{"num_key_value_heads": dims["num_attention_heads"], **dims},  # full attention unless dims say
    )
    torch.manual_seed(0)
    if bf16:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    else:
        model = LlamaForCausalLM(cfg)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    n = sum(p.numel() for p in model.parameters())
    (tmp / "bench_meta.json").write_text(json.dumps({"params": n, **dims}) + "\n")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def bench_model_params(path: Path) -> int:
    return int(json.loads((path / "bench_meta.json").read_text())["params"])


def parse_figure(line: str) -> dict[str, Any]:
    """A result line as a record for benchmarks/last.json: figure, value, unit, target, pass, note."""
    m = FIGURE.match(line.strip())
    if m is None:
        return {"line": line, "figure": line.split(" ", 2)[:2], "pass": False}
    value = m["value"]
    return {
        "figure": f"{m['tag']} {m['name']}",
        "value": float(value) if value not in ("n/a",) else None,
        "unit": m["unit"],
        "target": f"{m['op']}{m['target']}",
        "pass": m["status"] == "PASS",
        "status": m["status"],
        "note": m["note"] or "",
        "line": line,
    }


def machine_facts() -> dict[str, Any]:
    """What a figure depends on besides the code: so two runs of last.json can be compared fairly."""
    import platform
    import subprocess

    facts: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        facts["cpu"] = next(
            (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), ""
        )
    except OSError:
        pass
    from importlib import metadata

    for mod in ("torch", "transformers", "peft", "trl", "bitsandbytes", "optuna"):
        try:  # the installed version, without importing (and initialising) the library
            facts[mod] = metadata.version(mod)
        except metadata.PackageNotFoundError:  # a missing library is a fact too
            facts[mod] = None
    try:
        facts["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        pass
    torch = sys.modules.get("torch")  # only when already loaded: the summary process never loads torch
    try:
        facts["gpu"] = torch.cuda.get_device_name(0) if torch and torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        facts["gpu"] = None
    return facts


def write_json(path: Path, data: Any) -> None:
    """Atomic: a temp file in the same folder, then rename (a crash never leaves half a file)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
