"""`sweep watch STUDY`: a live terminal view of a sweep; `sweep dashboard STUDY`: optuna-dashboard on it.

The view is computed from the storage alone (harness.study.load opens it without creating anything), so it
works from another shell or over SSH while `sweep run` writes, and reading cannot disturb the sweep: each
refresh is a few short read queries, and a refresh that fails (a busy or briefly locked database) is shown
as a note and retried, never raised.

`collect(study)` turns the storage into a `View` (plain data, testable); `render(view)` draws it with rich.
On a terminal the frame is redrawn in place (rich Live); otherwise (a log file, `| tee`) a new frame is
printed only when something changed, so the log stays readable.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness import study as st
from harness.errors import HarnessError

BLOCKS = "▁▂▃▄▅▆▇█"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def sparkline(values: list[float], width: int = 24) -> str:
    """The last `width` values as unicode blocks, scaled between their own min and max."""
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return BLOCKS[0] * len(vals)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((v - lo) / (hi - lo) * top)] for v in vals)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def fmt_resources(attrs: dict[str, Any]) -> str:
    """What the trial's ResourceMonitor stored (harness.monitor), in one short phrase."""
    parts = []
    if attrs.get("rss_mb") is not None:
        parts.append(f"rss {attrs['rss_mb']:.0f} MB")
    if attrs.get("peak_rss_mb") is not None:
        parts.append(f"peak {attrs['peak_rss_mb']:.0f} MB")
    if attrs.get("cuda_peak_allocated_mb") is not None:
        gpu = f"gpu {attrs['cuda_peak_allocated_mb'] / 1024:.1f} GB"
        if attrs.get("cuda_peak_reserved_mb") is not None:
            gpu += f" ({attrs['cuda_peak_reserved_mb'] / 1024:.1f} reserved)"
        parts.append(gpu)
    if attrs.get("cuda_util") is not None:
        parts.append(f"util {attrs['cuda_util']:.0f}%")
    return " · ".join(parts)


def duration_s(t: FrozenTrial) -> float | None:
    """Wall time of a finished trial (storage timestamps; the recipe's own duration_s as a fallback)."""
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    d = t.user_attrs.get("duration_s")
    return float(d) if isinstance(d, (int, float)) else None


@dataclass
class Running:
    number: int
    step: int | None
    value: float | None
    curve: list[float]
    elapsed_s: float | None
    attrs: dict[str, Any]


@dataclass
class View:
    name: str
    metric: str
    goal: str
    n_trials: int | None
    max_steps: int | None
    counts: dict[str, int]
    running: list[Running] = field(default_factory=list)
    best: FrozenTrial | None = None
    mean_s: float | None = None
    eta_s: float | None = None
    recent: list[FrozenTrial] = field(default_factory=list)
    note: str = ""

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s.name, 0) for s in FINISHED)

    @property
    def done(self) -> bool:
        return not self.running and self.n_trials is not None and self.finished >= self.n_trials

    def signature(self) -> tuple[Any, ...]:
        """What a new plain-text frame is printed for: states and reported steps, not the clock."""
        return (
            tuple(sorted(self.counts.items())),
            tuple((r.number, r.step) for r in self.running),
            self.note,
        )


def collect(study: optuna.Study, now: datetime | None = None) -> View:
    now = now or datetime.now()  # optuna stores naive local times
    attrs = study.user_attrs
    config = attrs.get("config") or {}
    budget = config.get("budget") or {}
    metric = attrs.get("metric") or (config.get("metric") or {}).get("name") or "value"
    goal = st.goals(study)[0]
    trials = study.get_trials(deepcopy=False)

    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1

    running = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        steps = sorted(t.intermediate_values)
        running.append(
            Running(
                number=t.number,
                step=steps[-1] if steps else None,
                value=t.intermediate_values[steps[-1]] if steps else None,
                curve=[t.intermediate_values[s] for s in steps],
                elapsed_s=(now - t.datetime_start).total_seconds() if t.datetime_start else None,
                attrs=dict(t.user_attrs),
            )
        )

    complete = [t for t in trials if t.state == TrialState.COMPLETE and st.primary_value(t) is not None]
    best = None
    if complete:
        best = st.best_trial(study)  # multi-objective: the Pareto-optimal trial best on the first metric

    finished = [t for t in trials if t.state in FINISHED]
    durations = [d for d in (duration_s(t) for t in finished) if d is not None]
    mean_s = sum(durations) / len(durations) if durations else None
    n_trials = budget.get("n_trials")
    eta = None
    if mean_s is not None and isinstance(n_trials, int):
        # Trials not started yet take a mean duration each; a running one, what the mean leaves of it.
        remaining = max(0, n_trials - len(finished))
        waiting = max(0, remaining - len(running))
        eta = mean_s * waiting + sum(max(0.0, mean_s - (r.elapsed_s or 0.0)) for r in running[:remaining])

    return View(
        name=study.study_name,
        metric=metric,
        goal=goal,
        n_trials=n_trials if isinstance(n_trials, int) else None,
        max_steps=budget.get("max_steps"),
        counts=counts,
        running=running,
        best=best,
        mean_s=mean_s,
        eta_s=eta,
        recent=sorted(finished, key=lambda t: t.number)[-8:],
    )


def render(view: View, interval: float | None = None) -> RenderableType:
    c = view.counts
    total = f"/{view.n_trials}" if view.n_trials is not None else ""
    head = Text.assemble(
        (view.name, "bold"),
        f"  {view.metric} ({view.goal})  ",
        (f"{view.finished}{total} finished", "bold"),
        f"  ·  {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} failed, "
        f"{c.get('RUNNING', 0)} running",
    )
    lines: list[RenderableType] = [head]

    if view.done:
        eta = Text("ETA   done", style="green")
    elif view.eta_s is not None:
        left = max(0, (view.n_trials or 0) - view.finished)
        eta = Text(
            f"ETA   ~{fmt_duration(view.eta_s)}  ({left} left × mean {fmt_duration(view.mean_s)} per trial)"
        )
    else:
        eta = Text("ETA   - (no finished trial yet)")
    lines.append(eta)

    if view.best is not None:
        b = view.best
        params = "  ".join(f"{k}={_num(v)}" for k, v in b.params.items())
        lines.append(
            Text.assemble(
                "best  ",
                (f"{view.metric} {_num(st.primary_value(b))}", "bold green"),
                f"  trial {b.number}  {params}",
            )
        )
    else:
        lines.append(Text("best  - (no complete trial yet)"))

    for r in view.running:
        step = (
            f"step {r.step}" + (f"/{view.max_steps}" if view.max_steps else "")
            if r.step is not None
            else "no eval yet"
        )
        value = f"{view.metric} {_num(r.value)}" if r.value is not None else ""
        res = fmt_resources(r.attrs)
        lines.append(
            Text.assemble(
                ("running ", "bold yellow"),
                f"trial {r.number}  {step}  {value}  ",
                (sparkline(r.curve), "cyan"),
                f"  {fmt_duration(r.elapsed_s)}" + (f"  {res}" if res else ""),
            )
        )

    if view.recent:
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for col, justify in (
            ("#", "right"),
            ("state", "left"),
            (view.metric, "right"),
            ("steps", "right"),
            ("time", "right"),
            ("peak MB", "right"),
            ("gpu MB", "right"),
        ):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        style = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}
        for t in view.recent:
            a = t.user_attrs
            table.add_row(
                str(t.number),
                Text(t.state.name.lower(), style=style.get(t.state.name, "")),
                _num(st.primary_value(t)) if st.primary_value(t) is not None else "-",
                str(a.get("steps_run", "-")),
                fmt_duration(duration_s(t)),
                f"{a['peak_rss_mb']:.0f}" if isinstance(a.get("peak_rss_mb"), (int, float)) else "-",
                f"{a['cuda_peak_reserved_mb']:.0f}"
                if isinstance(a.get("cuda_peak_reserved_mb"), (int, float))
                else "-",
            )
        lines.append(Text(""))
        lines.append(table)
    if view.note:
        lines.append(Text(view.note, style="red"))
    if interval is not None:
        lines.append(Text(f"refreshing every {interval:g}s from the storage · Ctrl-C quits", style="dim"))
    return Group(*lines)


def _refresh(study: optuna.Study, previous: View | None) -> View:
    """A failed read (e.g. a locked SQLite file) keeps the last frame with a note: watching never raises."""
    try:
        return collect(study)
    except Exception as e:  # noqa: BLE001
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        if previous is None:
            raise
        previous.note = f"storage read failed, retrying: {reason}"
        return previous


def _load(args: argparse.Namespace) -> optuna.Study:
    from harness import study as st

    with warnings.catch_warnings():  # optuna's "heartbeat is experimental" notice is noise to a reader
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return st.load(args.study, args.results_dir, args.storage)


def cmd_watch(args: argparse.Namespace, console: Console) -> int:
    study = _load(args)
    view = collect(study)
    if args.once:
        console.print(render(view))
        return 0
    interval = max(0.2, float(args.interval))
    try:
        if console.is_terminal:
            with Live(render(view, interval), console=console, auto_refresh=False) as live:
                while not view.done:
                    time.sleep(interval)
                    view = _refresh(study, view)
                    live.update(render(view, interval), refresh=True)
        else:
            last = None
            while True:
                if view.signature() != last:
                    console.print(render(view))
                    console.print()
                    last = view.signature()
                if view.done:
                    break
                time.sleep(interval)
                view = _refresh(study, view)
    except KeyboardInterrupt:  # the normal way to stop watching; the sweep is not affected
        pass
    return 0


def cmd_dashboard(args: argparse.Namespace, console: Console) -> int:
    from harness import study as st

    url, name = st.locate(args.study, args.results_dir, args.storage)
    try:
        import optuna_dashboard
    except ImportError:
        raise HarnessError(
            "sweep dashboard needs optuna-dashboard, which is not installed: "
            f"pip install 'harness[dashboard]' (or use `sweep watch {args.study}` in the terminal)"
        ) from None
    _load(args)  # a clear error if the study is not there
    host = getattr(args, "host", None) or "127.0.0.1"
    port = int(getattr(args, "port", None) or 8080)
    console.print(
        f"optuna-dashboard for study {name!r} on {st.mask_url(url)}: http://{host}:{port}  (Ctrl-C stops)\n"
        f"over SSH: ssh -L {port}:localhost:{port} <this host>, then open http://localhost:{port}"
    )
    try:
        # The storage object rather than the URL: journal files are not URLs optuna-dashboard understands.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = st.open_storage(url, create_dirs=False)
        optuna_dashboard.run_server(storage, host=host, port=port)
    except KeyboardInterrupt:
        pass
    return 0
