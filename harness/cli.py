"""The `sweep` command: verbs only. Each parses its arguments and calls one function."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from harness.errors import HarnessError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep", description="Hyperparameter sweeps for QLoRA fine-tuning.")
    sub = p.add_subparsers(dest="verb", required=True)

    run = sub.add_parser(
        "run",
        help="run (or resume) the study of a sweep file, or of every sweep file below a folder",
        description="Run sweeps pytest-style: each sweep's `expect:` block passes or fails; the run ends "
        "with 'N passed, N failed'. Exit 0 all passed, 1 a sweep failed, 2 a user error (e.g. a bad file).",
    )
    run.add_argument("file", help="sweep file (sweeps/pricer.yaml) or folder of sweep files (sweeps/)")
    run.add_argument("overrides", nargs="*", help="dotted overrides, e.g. budget.max_steps=20")
    run.add_argument("--n-trials", type=int, help="total trials in the study (same as budget.n_trials=N)")
    run.add_argument("--results-dir", help="where studies and trial folders go (default results/)")
    run.add_argument("--storage", help="Optuna storage URL (default sqlite under the results dir)")
    run.add_argument(
        "-k",
        dest="keyword",
        metavar="EXPR",
        help="only sweeps whose file name, study name or tags match, e.g. -k 'pricer and not slow'",
    )
    run.add_argument("-x", "--exitfirst", action="store_true", help="stop after the first failed sweep")
    run.add_argument("--collect-only", action="store_true", help="list the sweeps that would run")
    run.add_argument(
        "--smoke",
        action="store_true",
        help="1 trial of 4 steps on a tiny eval, in <results-dir>/.smoke/ (never touches the real study)",
    )

    def study_verb(name: str, help: str, many: bool = False) -> argparse.ArgumentParser:
        v = sub.add_parser(name, help=help)
        v.add_argument("study", nargs="+" if many else None, help="study name or sweep file")
        v.add_argument("--results-dir", default="results")
        v.add_argument("--storage", help="Optuna storage URL (default sqlite under the results dir)")
        return v

    status = sub.add_parser("status", help="trials so far: state, params, best metric, ETA")
    status.add_argument("study", nargs="?", help="study name or sweep file (default: every study)")
    status.add_argument("--results-dir", default="results")
    status.add_argument("--storage")
    lst = sub.add_parser("list", help="studies in a results dir or storage")
    lst.add_argument("--results-dir", default="results")
    lst.add_argument("--storage")

    report = study_verb(
        "report", "trial tables and plots -> results/<study>/report.{md,html,csv,parquet}", many=True
    )
    report.add_argument("--compare", action="store_true", help="compare several studies side by side")
    report.add_argument("--trials", nargs="+", type=int, help="compare chosen trials of one study")
    report.add_argument("--format", default="md,html,csv,parquet", help="comma-separated output formats")
    study_verb("compare", "several studies side by side (same as report --compare)", many=True)

    best = study_verb("best", "the winning config; --export writes a standalone training file")
    best.add_argument(
        "--export", metavar="FILE", help="write the best config as a sweep file for `sweep train`"
    )
    train = sub.add_parser(
        "train", help="one full fine-tune of a config (promotion), evaluated on the test split"
    )
    train.add_argument("file", help="a config exported by `sweep best --export`, or any sweep file")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=1000")

    watch = study_verb("watch", "live terminal view of a running sweep")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    watch.add_argument("--once", action="store_true", help="draw once and exit")
    study_verb("dashboard", "start optuna-dashboard on the study's storage ([dashboard] extra)")
    return p


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from harness.collect import run_path

    overrides = list(args.overrides)
    if args.n_trials is not None:
        overrides.append(f"budget.n_trials={args.n_trials}")
    if args.results_dir:
        overrides.append(f"results_dir={args.results_dir}")
    return run_path(
        args.file,
        overrides,
        keyword=args.keyword,
        exitfirst=args.exitfirst,
        collect_only=args.collect_only,
        smoke=args.smoke,
        storage=args.storage,
        console=console,
    )


def _call(module: str, function: str, args: argparse.Namespace, console: Console) -> int:
    """Verbs live in the module that owns their logic; imported lazily so `sweep --help` stays fast."""
    import importlib

    return int(getattr(importlib.import_module(module), function)(args, console))


def main(argv: Sequence[str] | None = None) -> int:
    # Logs and CI are not terminals: give tables room instead of rich's 80-column default there.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True, highlight=False)
    parser = _parser()
    try:
        # Overrides may come after options (`run f.yaml --n-trials 3 budget.max_steps=20`): argparse leaves
        # those positionals unparsed, so collect any `key=value` leftovers as overrides.
        args, extra = parser.parse_known_args(argv)
        if extra and (
            not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra)
        ):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if extra:
            args.overrides = [*args.overrides, *extra]
    except SystemExit as e:  # argparse already printed a usage line
        return EXIT_USAGE if e.code else EXIT_OK
    handlers = {
        "run": cmd_run,
        "status": lambda a, c: _call("harness.report", "cmd_status", a, c),
        "list": lambda a, c: _call("harness.report", "cmd_list", a, c),
        "report": lambda a, c: _call("harness.report", "cmd_report", a, c),
        "compare": lambda a, c: _call("harness.report", "cmd_compare", a, c),
        "best": lambda a, c: _call("harness.promote", "cmd_best", a, c),
        "train": lambda a, c: _call("harness.promote", "cmd_train", a, c),
        "watch": lambda a, c: _call("harness.watch", "cmd_watch", a, c),
        "dashboard": lambda a, c: _call("harness.watch", "cmd_dashboard", a, c),
    }
    previous = _stop_on_sigterm()
    try:
        return handlers[args.verb](args, console)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): the trial is queued for retry
        err.print("interrupted: run the same command again to resume")
        return 143 if isinstance(e, Terminated) else 130
    except HarnessError as e:
        from harness.runner import SweepStopped

        err.print(f"error: {e}", markup=False)
        return EXIT_FAILED if isinstance(e, SweepStopped) else EXIT_USAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so a running trial stops the same graceful way (exit 143)."""


def _stop_on_sigterm() -> Any:
    """SIGTERM -> Terminated in the main thread; returns the handler to restore (None off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())
