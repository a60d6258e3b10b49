"""`sweep watch STUDY`: a live terminal view of a sweep; `sweep dashboard STUDY`: optuna-dashboard on it.

The view is computed from the storage alone (harness.study.storage.load opens it without creating anything),
so it
works from another shell or over SSH while `sweep run` writes, and reading cannot disturb the sweep: each
refresh is a few short read queries, and a refresh that fails (a busy or briefly locked database) is shown
as a note and retried, never raised.

`harness.results.status.collect(study)` turns the storage into a `View` (plain data, testable); `render(view)`
draws it with rich. On a terminal the frame is redrawn in place (rich Live); otherwise (a log file,
`| tee`) a new frame is printed only when something changed, so the log stays readable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import optuna
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from harness.core import attrs
from harness.core.display import fmt
from harness.errors import HarnessError
from harness.results.status import View, collect, fmt_duration
from harness.results.view import trial_duration, worker_text
from harness.study import ranking
from harness.study import storage as st

BLOCKS = "▁▂▃▄▅▆▇█"


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


def fmt_resources(stored: Mapping[str, Any]) -> str:
    """What the trial's ResourceMonitor stored (harness.trial.monitor), in one short phrase."""
    parts = []
    rss, peak, util = stored.get(attrs.RSS_MB), stored.get(attrs.PEAK_RSS_MB), stored.get(attrs.CUDA_UTIL)
    allocated, reserved = stored.get(attrs.CUDA_PEAK_ALLOCATED_MB), stored.get(attrs.CUDA_PEAK_RESERVED_MB)
    if rss is not None:
        parts.append(f"rss {rss:.0f} MB")
    if peak is not None:
        parts.append(f"peak {peak:.0f} MB")
    if allocated is not None:
        gpu = f"gpu {allocated / 1024:.1f} GB"
        if reserved is not None:
            gpu += f" ({reserved / 1024:.1f} reserved)"
        parts.append(gpu)
    if util is not None:
        parts.append(f"util {util:.0f}%")
    return " · ".join(parts)


def render(view: View, interval: float | None = None) -> RenderableType:
    c = view.counts
    head = Text.assemble(
        (view.name, "bold"),
        f"  {view.metric} ({view.goal})  ",
        (view.finished_text, "bold"),
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
        params = "  ".join(f"{k}={fmt(v)}" for k, v in b.params.items())
        lines.append(
            Text.assemble(
                "best  ",
                (f"{view.metric} {fmt(ranking.primary_value(b))}", "bold green"),
                f"  trial {b.number}  {params}",
            )
        )
    else:
        lines.append(Text("best  - (no complete trial yet)"))

    for r in view.running:
        most = attrs.max_steps(r.attrs) or view.max_steps  # the trial's own budget (budget.epochs)
        step = f"step {r.step}" + (f"/{most}" if most else "") if r.step is not None else "no eval yet"
        value = f"{view.metric} {fmt(r.value)}" if r.value is not None else ""
        res = fmt_resources(r.attrs)
        worker = worker_text(r.attrs)
        lines.append(
            Text.assemble(
                ("running ", "bold yellow"),
                f"trial {r.number}  {step}  {value}  ",
                (sparkline(r.curve), "cyan"),
                f"  {fmt_duration(r.elapsed_s)}" + (f"  {res}" if res else ""),
                (f"  {worker}" if worker else "", "dim"),
            )
        )
    if len(view.workers) > 1:
        lines.append(Text(f"workers {len(view.workers)} live: {', '.join(view.workers)}"))
    lines += [Text(line, style="dim") for line in view.summary]  # cost so far, rung agreement

    if view.recent:
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("#", "right"),
            ("state", "left"),
            (view.metric, "right"),
            ("steps", "right"),
            ("time", "right"),
            ("peak MB", "right"),
            ("gpu MB", "right"),
        )
        for col, justify in columns:
            table.add_column(col, justify=justify)
        style = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}
        for t in view.recent:
            a = t.user_attrs
            peak, reserved = a.get(attrs.PEAK_RSS_MB), a.get(attrs.CUDA_PEAK_RESERVED_MB)
            table.add_row(
                str(t.number),
                Text(t.state.name.lower(), style=style.get(t.state.name, "")),
                fmt(ranking.primary_value(t)) if ranking.primary_value(t) is not None else "-",
                str(a.get(attrs.STEPS_RUN, "-")),
                fmt_duration(trial_duration(t)),
                f"{peak:.0f}" if isinstance(peak, (int, float)) else "-",
                f"{reserved:.0f}" if isinstance(reserved, (int, float)) else "-",
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


def follow(study: optuna.Study, console: Console, interval: float = 2.0, once: bool = False) -> None:
    """Draw the study until its sweep is done (or Ctrl-C): redrawn in place on a terminal, a new frame
    per change otherwise. `once`: one frame and return."""
    view = collect(study)
    if once:
        console.print(render(view))
        return
    interval = max(0.2, float(interval))
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


def serve_dashboard(
    target: str, results_dir: str, storage: str | None, console: Console, host: str, port: int
) -> None:
    """optuna-dashboard on the study's storage until Ctrl-C; the [dashboard] extra is checked first."""
    url, name = st.locate(target, results_dir, storage)
    try:
        import optuna_dashboard
    except ImportError:
        raise HarnessError(
            "sweep dashboard needs optuna-dashboard, which is not installed: "
            f"pip install 'harness[dashboard]' (or use `sweep watch {target}` in the terminal)"
        ) from None
    st.load_readonly(url, name)  # a clear error if the study is not there
    console.print(
        f"optuna-dashboard for study {name!r} on {st.mask_url(url)}: http://{host}:{port}  (Ctrl-C stops)\n"
        f"over SSH: ssh -L {port}:localhost:{port} <this host>, then open http://localhost:{port}"
    )
    try:
        # The storage object rather than the URL: journal files are not URLs optuna-dashboard understands.
        optuna_dashboard.run_server(st.open_existing(url), host=host, port=port)
    except KeyboardInterrupt:
        pass
