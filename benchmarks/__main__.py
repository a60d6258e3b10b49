"""`make bench`: run every benchmark in its own process, stream its output, then list the figures.

One process per benchmark: each starts from nothing loaded (no session fixtures or monkeypatches carried
over), and one crashing prints an ERROR line instead of stopping the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks import BENCHES
from benchmarks.common import LINE, ROOT, load_avg

NOISE = ("Loading weights", "gemm_4bit_forward", "Writing model shards")


def run_one(name: str) -> list[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"benchmarks.{name}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    figures, tail = [], []
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        if "\r" in line:
            line = line.rsplit("\r", 1)[-1]
        if any(n in line for n in NOISE) or "Warning" in line or line.strip().startswith("optuna_warn("):
            continue
        tail = [*tail[-30:], line]
        if LINE.match(line):
            figures.append(line)
        print(f"  {line}" if not LINE.match(line) else line, flush=True)
    code = proc.wait()
    print(f"  ({name}: {time.perf_counter() - t0:.0f}s)", flush=True)
    if code != 0 or not figures:
        print("\n".join(f"  | {t}" for t in tail[-15:]))
        figures.append(f"{name} exit_code={code} target<=0 ERROR  # see the output above")
    return figures


def main() -> int:
    t0 = time.perf_counter()
    print(f"benchmarks: {len(BENCHES)} files; {load_avg()}", flush=True)
    figures: list[str] = []
    for name in BENCHES:
        print(f"\n== {name}", flush=True)
        figures += run_one(name)
    print(f"\n== summary ({time.perf_counter() - t0:.0f}s; {load_avg()})")
    for line in figures:
        print(line)
    return 1 if any(" ERROR" in f for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
