"""Fault injection: run the default sweep (tiny budgets, real QLoRA recipe), SIGKILL it at random moments,
re-run the same command until the study is done, and check nothing was lost.

    .venv/bin/python scripts/fault_inject.py [--kills 10] [--trials 6] [--seed 0] [--min 3 --max 12]

Prints kills, trials, retried trials, retries resumed from a checkpoint, and wall time. The checks (no
COMPLETE trial lost or changed, no RUNNING/WAITING trial left, exactly n_trials COMPLETE+PRUNED, retries
with the interrupted trial's params) are the ones tests/test_crash.py makes with 3 kills.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_crash import kill_and_resume  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min", type=float, default=3.0, help="shortest delay before a kill (s)")
    p.add_argument("--max", type=float, default=12.0, help="longest delay before a kill (s)")
    p.add_argument("--keep", help="results folder to keep (default: a temporary one)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.keep) if a.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        figures = kill_and_resume(folder, a.trials, a.kills, random.Random(a.seed), (a.min, a.max))
    print(json.dumps(figures))
    print(
        f"{figures['kills']} kills; {figures['trials']} trials in the study, {figures['counted']} "
        f"COMPLETE+PRUNED (n_trials={a.trials}); {figures['retried']} retried, "
        f"{figures['resumed_from_checkpoint']} resumed from a checkpoint; {figures['wall_s']}s wall time; "
        "all checks passed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
