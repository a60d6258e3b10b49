"""The `sweep` command: verbs only. Each parses its arguments and calls one function."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from rich.console import Console

from harness.errors import HarnessError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep", description="Hyperparameter sweeps for QLoRA fine-tuning.")
    sub = p.add_subparsers(dest="verb", required=True)

    run = sub.add_parser("run", help="run (or resume) the study of a sweep file")
    run.add_argument("file", help="sweep file, e.g. sweeps/pricer.yaml")
    run.add_argument("overrides", nargs="*", help="dotted overrides, e.g. budget.max_steps=20")
    run.add_argument("--n-trials", type=int, help="total trials in the study (same as budget.n_trials=N)")
    run.add_argument("--results-dir", help="where studies and trial folders go (default results/)")
    run.add_argument("--storage", help="Optuna storage URL (default sqlite under the results dir)")
    return p



def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from harness.config import load_sweep
    from harness.runner import check_failures, run_sweep, trials_table

    overrides = list(args.overrides)
    if args.n_trials is not None:
        overrides.append(f"budget.n_trials={args.n_trials}")
    if args.results_dir:
        overrides.append(f"results_dir={args.results_dir}")
    cfg = load_sweep(args.file, overrides)
    start = time.perf_counter()
    outcome = run_sweep(cfg, storage=args.storage, console=console)
    console.print(trials_table(outcome.study, cfg.metric.name, cfg.metric.goal))
    console.print(f"{outcome.ran} trial(s) run in {time.perf_counter() - start:.0f}s; results in {cfg.study_dir}/")
    check_failures(outcome, cfg)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    # Logs and CI are not terminals: give tables room instead of rich's 80-column default there.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True, highlight=False)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed a usage line
        return EXIT_USAGE if e.code else EXIT_OK
    handlers = {"run": cmd_run}
    try:
        return handlers[args.verb](args, console)
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume the study")
        return 130
    except HarnessError as e:
        from harness.runner import SweepStopped

        err.print(f"error: {e}", markup=False)
        return EXIT_FAILED if isinstance(e, SweepStopped) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
