"""The `sweep` command: verbs only. Each parses its arguments, calls one function and prints the result.

The logic lives in the module each verb imports: collect (run), status (status, list), report and compare
(report, compare), promote (best, train), watch (watch, dashboard). Those imports sit inside the verbs:
optuna, pandas and plotly cost about a second, which `sweep --help` and a mistyped flag should not pay.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from harness.core import interrupt
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.study.promote import Promoter

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
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N worker processes on the study (one GPU each, or the CPU cores split between them); "
        "`sweep run` in N terminals or on N machines sharing --storage does the same",
    )
    run.add_argument(
        "--devices-per-worker",
        "--gpus-per-worker",
        dest="devices_per_worker",
        type=int,
        metavar="K",
        help="devices per worker (default 1): GPUs each worker sees; with training.distributed=ddp|fsdp "
        "each trial trains on K ranks, one a device (on CPU: one a core)",
    )
    run.add_argument(
        "--recipe",
        metavar="MODULE:FUNCTION",
        help="train with this callable instead of the QLoRA recipe (a fake one in tests; see core/spec.py)",
    )
    run.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)  # set by --workers for each worker
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

    confirm = study_verb(
        "confirm", "re-train the best configs with more seeds: mean, spread and 95%% interval of each"
    )
    confirm.add_argument("--top", type=int, default=3, metavar="K", help="how many best configs (default 3)")
    confirm.add_argument(
        "--seeds", type=int, default=3, metavar="S", help="further seeds per config (default 3)"
    )
    confirm.add_argument(
        "--test", action="store_true", help="also score each repeat on the held-out test split (test_*)"
    )
    audit = study_verb("audit", "re-train the most promising pruned trials fully: would one have won?")
    audit.add_argument(
        "--pruned",
        type=int,
        default=2,
        metavar="K",
        help="how many pruned trials (default 2): those that "
        "were no worse than the largest share of the trials that reached the step each was cut at; each "
        "continues from its checkpoint if kept (early_terminate.keep_pruned_checkpoints), else from step 0",
    )
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

    convert = sub.add_parser(
        "convert",
        help="write a harness sweep file from a W&B sweep file (your script's names -> harness's)",
        description="Map a W&B sweep file's parameters (lr, lora-r, batch_size, ...), method, metric and "
        "early_terminate onto a harness sweep file; one line per parameter says what it became or why not, "
        "and what is not mapped stays in the file as a comment. The file is checked by loading it, then "
        "written atomically. Exit 0 written, 2 a user error (nothing is written).",
    )
    convert.add_argument("file", help="the W&B sweep file (a sweep.yaml with parameters:)")
    convert.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the harness sweep file to write"
    )
    convert.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    return p


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from harness.core.spec import import_recipe
    from harness.study.workers import Pool, WorkersError
    from harness.suite.session import run_path

    overrides = list(args.overrides)
    if args.n_trials is not None:
        overrides.append(f"budget.n_trials={args.n_trials}")
    if args.results_dir:
        overrides.append(f"results_dir={args.results_dir}")
    if args.workers < 1 or (args.workers > 1 and args.smoke):
        raise WorkersError(f"--workers {args.workers}: give 1 or more (and not with --smoke, a 1-trial run)")
    pool = Pool(args.workers, args.devices_per_worker, args.recipe, tuple(overrides), args.worker_id)
    return run_path(
        args.file,
        overrides,
        keyword=args.keyword,
        exitfirst=args.exitfirst,
        collect_only=args.collect_only,
        smoke=args.smoke,
        storage=args.storage,
        recipe=import_recipe(args.recipe, [Path.cwd()]) if args.recipe else None,
        pool=pool,
        console=console,
    )


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    from harness.results import status

    for item in status.status_report(args.study, args.results_dir or "results", args.storage):
        console.print(item, markup=False)
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from harness.results import status
    from harness.study import storage as st

    results_dir = args.results_dir or "results"
    found = st.discover(results_dir, args.storage)
    if not found:
        console.print(f"no studies in {results_dir}/ (run `sweep run` first)")
        return 0
    console.print(status.list_table(found))
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from harness.results import compare, report
    from harness.results.view import load_study_data

    formats = report.parse_formats(getattr(args, "format", None))
    targets = list(args.study)
    results_dir = args.results_dir or "results"
    if getattr(args, "trials", None):
        if len(targets) != 1:
            raise HarnessError("--trials compares trials of one study: give exactly one study")
        data = load_study_data(targets[0], results_dir, args.storage)
        _print_written(console, compare.write_trials_compare(data, args.trials, formats))
        return 0
    if getattr(args, "compare", False):
        return _compare(targets, results_dir, args.storage, formats, console)
    for target in targets:
        data = load_study_data(target, results_dir, args.storage)
        paths, importances, why = report.write_report(data, formats)
        report.print_summary(data, console, importances, why)
        _print_written(console, paths)
    return 0


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from harness.results import report

    formats = report.parse_formats(getattr(args, "format", None) or "md,html")
    return _compare(list(args.study), args.results_dir or "results", args.storage, formats, console)


def _compare(
    targets: list[str], results_dir: str, storage: str | None, formats: list[str], console: Console
) -> int:
    from harness.results import compare

    datas = compare.load_studies(targets, results_dir, storage)
    console.print(compare.best_table(datas))
    for line in compare.provenance_warnings(datas):
        console.print(line, markup=False, style="yellow", soft_wrap=True)
    _print_written(console, compare.write_compare(datas, compare.compare_dir(results_dir, datas), formats))
    return 0


def _print_written(console: Console, paths: Sequence[Path]) -> None:
    if paths:
        console.print("wrote " + ", ".join(str(p) for p in paths), markup=False)


def cmd_confirm(args: argparse.Namespace, console: Console) -> int:
    from harness.suite import confirm

    return confirm.confirm_target(
        args.study, args.top, args.seeds, args.results_dir or "results", args.storage, console, test=args.test
    )


def cmd_audit(args: argparse.Namespace, console: Console) -> int:
    from harness.suite import confirm

    return confirm.audit_target(args.study, args.pruned, args.results_dir or "results", args.storage, console)


def cmd_best(args: argparse.Namespace, console: Console) -> int:
    from harness.study import promote

    winner = promote.find_best(args.study, args.results_dir or "results", args.storage)
    promote.print_best(winner.study, winner.trial, winner.metric, winner.folder, console)
    if args.export:
        path = Path(args.export)
        promote.export_best(winner, path)
        console.print(f"wrote {path}; train it with: sweep train {path}", markup=False)
    return 0


def cmd_train(args: argparse.Namespace, console: Console, promoter: Promoter | None = None) -> int:
    """`promoter` stands in for the real fine-tune in tests."""
    from harness.study import promote
    from harness.sweepfile.load import load_sweep

    cfg = load_sweep(args.file, list(args.overrides))
    result, adapter_dir = promote.promote(cfg, console, promoter)
    console.print(promote.metrics_table(result, cfg.metric.name))
    console.print(promote.trained_line(cfg, result, adapter_dir), markup=False)
    return 0 if result.value is not None else 1


def cmd_watch(args: argparse.Namespace, console: Console) -> int:
    from harness.results import watch
    from harness.study import storage as st

    study = st.load(args.study, args.results_dir, args.storage)
    watch.follow(study, console, interval=args.interval, once=args.once)
    return 0


def cmd_dashboard(args: argparse.Namespace, console: Console) -> int:
    from harness.results import watch

    host = getattr(args, "host", None) or "127.0.0.1"
    port = int(getattr(args, "port", None) or 8080)
    watch.serve_dashboard(args.study, args.results_dir, args.storage, console, host, port)
    return 0


def cmd_convert(args: argparse.Namespace, console: Console) -> int:
    from harness.sweepfile.convert import convert_file

    out = Path(args.output)
    result = convert_file(Path(args.file), out, force=args.force)
    console.print(f"{args.file}: W&B sweep -> {out}", markup=False, highlight=False)
    for line in result.lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    kept = f", {len(result.unmapped)} kept as comments" if result.unmapped else ""
    console.print(
        f"wrote {out}: {len(result.mapped)} mapped{kept}; check it: sweep run {out} --collect-only",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # Logs and CI are not terminals: give tables room instead of rich's 80-column default there.
    from harness.core import ranks

    # One trial on K ranks (training.distributed): rank 0 speaks for all of them.
    quiet = ranks.follower()
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160, quiet=quiet)
    err = Console(stderr=True, highlight=False, quiet=quiet)
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
    try:
        with interrupt.installed():  # Ctrl-C / SIGTERM: at once, but never inside a storage write
            return globals()[f"cmd_{args.verb}"](args, console)  # each verb's function is cmd_<verb>
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated): the trial is queued for retry
        err.print("interrupted: run the same command again to resume")
        return 143 if isinstance(e, interrupt.Terminated) else 130
    except HarnessError as e:
        from harness.study.run import SweepStopped

        err.print(f"error: {e}", markup=False)
        return EXIT_FAILED if isinstance(e, SweepStopped) else EXIT_USAGE
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise  # our bug: the traceback
        # A path given on the command line (a sweep file, --results-dir, --storage) that no file system
        # holds: the user's to shorten, wherever it was first looked at.
        shown = str(e.filename)
        shown = shown if len(shown) <= 80 else f"{shown[:38]}...{shown[-38:]}"
        err.print(
            f"error: {shown!r}: a file or folder name is too long for the file system (at most 255 bytes "
            "a name, 4,095 a path); give a shorter path",
            markup=False,
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
