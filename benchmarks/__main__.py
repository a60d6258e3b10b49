"""`make bench`: run every benchmark in its own process, stream its output, then list the figures.

The figures also go to benchmarks/last.json (figure, value, unit, target, pass, note, and the machine's
facts: cores, load, library versions, commit), written atomically; the run before is kept as prev.json
and the summary shows each figure's previous value beside the new one. Both files are git-ignored: they
describe one machine.

One process per benchmark: each starts from nothing loaded (no session fixtures or monkeypatches carried
over), and one crashing prints an ERROR line instead of stopping the rest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks import BENCHES
from benchmarks.common import LINE, ROOT, load_avg, machine_facts, parse_figure, write_json

LAST = ROOT / "benchmarks" / "last.json"
PREV = ROOT / "benchmarks" / "prev.json"

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
    before = previous()
    for line in figures:
        old = before.get(parse_figure(line)["figure"])
        print(line + (f"   (last run: {old})" if old is not None else ""))
    save(figures, time.perf_counter() - t0)
    return 1 if any(" ERROR" in f for f in figures) else 0


def previous() -> dict[str, str]:
    """figure -> value+unit of the last run (benchmarks/last.json), to print beside the new one."""
    try:
        data = json.loads(LAST.read_text())
    except (OSError, ValueError):
        return {}
    figures = [f for f in data.get("figures", []) if "figure" in f and f.get("value") is not None]
    return {f["figure"]: f"{f['value']}{f.get('unit', '')}" for f in figures}


def save(figures: list[str], seconds: float) -> None:
    if LAST.exists():
        LAST.replace(PREV)
    write_json(
        LAST,
        {
            "seconds": round(seconds),
            "machine": machine_facts(),
            "figures": [parse_figure(f) for f in figures],
        },
    )
    print(f"(figures written to {LAST.relative_to(ROOT)})")


if __name__ == "__main__":
    sys.exit(main())
