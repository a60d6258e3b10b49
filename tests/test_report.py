"""`sweep report / compare / status / list` on real storages built with a fake recipe (no transformers)."""

from __future__ import annotations

import io
import math
import os
import re
import stat
from pathlib import Path

import optuna
import pandas as pd
import pytest
from helpers import PROMPTS, ROOT, journal, reporting_recipe, sweep
from optuna.trial import TrialState
from rich.console import Console

from harness.cli import main
from harness.core import trialdir
from harness.errors import HarnessError, StorageError
from harness.results import compare, report, status
from harness.results import view as studyview
from harness.study import storage as st
from harness.study.run import run_sweep

PLOTS = {
    "optimisation-history": "Optimisation history",
    "param-importances": "Parameter importances",
    "parallel-coordinates": "Parallel coordinates",
    "slice-plots": "Slice plots",
    "learning-curves": "Eval-loss learning curves",
    "price-scatter": "Predicted vs true price (best trial)",
    "rung-agreement": "Rung agreement",
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """Two SQLite studies shared by the read-only tests (SQLite commits cost ~20 ms each here, so building
    them once keeps the file fast): `pricer` has 4 complete trials and 1 failed one, `pricer-b` 3 trials."""
    root = tmp_path_factory.mktemp("results")
    run(
        root,
        5,
        "early_terminate.type=none",
        recipe=reporting_recipe.failing({2: RuntimeError("out of memory")}),
    )
    run(root, 3, "name=pricer-b", "seed=7", "early_terminate.type=none")
    return root


def load(root: Path, name: str = "pricer", storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{root}/{name}/study.db"
    return optuna.load_study(study_name=name, storage=url)


@pytest.fixture
def console() -> Console:
    return Console(file=io.StringIO(), width=200, highlight=False)


def output(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def run(
    tmp_path: Path, n: int, *overrides: str, storage: str | None = None, recipe=reporting_recipe
) -> optuna.Study:
    return run_sweep(
        sweep(tmp_path, f"budget.n_trials={n}", *overrides), storage=storage, recipe=recipe
    ).study


def test_frame_has_one_row_per_trial_with_the_studys_values(swept):
    study = load(swept)
    df = studyview.load_study_data("pricer", str(swept)).frame
    assert list(df["number"]) == [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert list(df["state"]) == [t.state.name for t in study.trials]
    assert list(df["state"]).count("FAIL") == 1
    params = [c for c in df.columns if c.startswith("param_")]
    assert {c.removeprefix("param_") for c in params} == set(study.trials[0].params)
    for t, row in zip(study.trials, df.to_dict("records"), strict=True):
        for name, value in t.params.items():
            assert row[f"param_{name}"] == value
        if t.state == TrialState.COMPLETE:
            assert row["value"] == pytest.approx(t.value)
            assert row["eval_loss"] == pytest.approx(t.user_attrs["metrics"]["eval_loss"])
            assert row["perplexity"] == pytest.approx(math.exp(t.value))
            assert row["mae"] == pytest.approx(float(t.number))
            assert row["steps_run"] == 60 and row["best_step"] == t.user_attrs["best_step"]
            assert row["duration_s"] == pytest.approx(0.5 + t.number)
            assert pd.isna(row["fail_reason"]) and pd.isna(row["pruned_at"])
        else:
            assert math.isnan(row["value"]) and math.isnan(row["eval_loss"])
            assert row["fail_reason"] == "RuntimeError: out of memory"
        peak = t.user_attrs.get("peak_rss_mb")
        assert (
            row["peak_rss_mb"] == pytest.approx(peak) if peak is not None else math.isnan(row["peak_rss_mb"])
        )
    # Column order: identity and objective, params, metrics, then bookkeeping.
    assert list(df.columns[:3]) == ["number", "state", "value"] and df.columns[-1] == "fail_reason"
    assert list(df.columns).index("param_weight_decay") < list(df.columns).index("eval_loss")


def test_pruned_trials_have_pruned_at_and_no_fail_reason(tmp_path):
    url = journal(tmp_path)
    median = [
        "early_terminate.type=median",
        "early_terminate.n_startup_trials=1",
        "early_terminate.n_warmup_steps=0",
    ]
    study = run(tmp_path, 6, *median, storage=url)
    df = studyview.load_study_data("pricer", str(tmp_path), url).frame
    pruned = df[df["state"] == "PRUNED"]
    assert len(pruned) == sum(t.state == TrialState.PRUNED for t in study.trials) > 0
    assert list(pruned["pruned_at"]) == [study.trials[n].user_attrs["pruned_at"] for n in pruned["number"]]
    assert pruned["fail_reason"].isna().all()


def test_report_writes_md_csv_parquet_that_round_trip(swept):
    study = load(swept)
    data = studyview.load_study_data("pricer", str(swept))
    paths, _, _ = report.write_report(data, ["md", "csv", "parquet"])
    folder = swept / "pricer"
    assert paths == [folder / "report.md", folder / "report.csv", folder / "report.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "report.parquet"), data.frame)
    csv = pd.read_csv(folder / "report.csv")
    assert list(csv.columns) == list(data.frame.columns)
    assert list(csv["number"]) == [t.number for t in study.trials]
    expected = [t.value if t.value is not None else math.nan for t in study.trials]
    assert csv["value"].tolist() == pytest.approx(expected, nan_ok=True)
    assert csv.loc[2, "fail_reason"] == "RuntimeError: out of memory"
    md = (folder / "report.md").read_text()
    best = study.best_trial
    assert f"trial {best.number}: eval_loss = {best.value:.6g}" in md
    assert "| trials | 5 (4 complete, 1 fail) |" in md
    table = md.split("## Trials (best first)")[1].strip().split("\n\n")[0].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    first = [c.strip() for c in table[2].strip("|").split("|")]
    last = [c.strip() for c in table[-1].strip("|").split("|")]
    assert header[:3] == ["number", "state", "value"]
    assert first[:3] == [str(best.number), "COMPLETE", f"{best.value:.4g}"]  # best first
    assert last[:3] == ["2", "FAIL", ""] and len(table) == 2 + len(study.trials)
    assert f"## Sample generations (trial {best.number})" in md and PROMPTS[0] in md
    assert not list(folder.glob(".report*"))  # no temp files left behind


def test_every_report_file_gets_one_mode(swept):
    """parquet goes through the same atomic writer as md/csv: not mkstemp's 0600 while the rest are
    readable by others (the umask decides, as for trial files)."""
    data = studyview.load_study_data("pricer", str(swept))
    paths, _, _ = report.write_report(data, ["md", "csv", "parquet"])
    modes = {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in paths}
    umask = os.umask(0)
    os.umask(umask)
    assert modes[".parquet"] == modes[".md"] == modes[".csv"] == 0o666 & ~umask


def test_html_is_one_offline_file_with_every_plot(swept):
    study = load(swept)
    data = studyview.load_study_data("pricer", str(swept))
    report.write_report(data, ["html"])
    page = (swept / "pricer" / "report.html").read_text()
    for section_id, title in PLOTS.items():
        assert f'<section id="{section_id}">' in page and f"<h2>{title}</h2>" in page
        assert f'id="plot-{section_id}"' in page, f"{section_id} has a note instead of a plot"
    assert page.count('id="plot-') == len(PLOTS)
    # Learning curves of every trial that ran, the best one highlighted.
    curves = page.split('id="plot-learning-curves"')[1].split("</section>")[0]
    for t in study.trials:
        assert (f"trial {t.number} (" in curves) == (t.state != TrialState.FAIL)
    # Predicted vs true: the best trial's 5 parseable rows, the unparseable one counted.
    assert "5 rows; 1 unparseable answer(s) not shown" in page
    # Sample generations: the top trials' predictions side by side with the reference.
    top = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)[:3]
    generations = page.split('<section id="generations">')[1]
    for t in top:
        assert f"trial {t.number} (complete" in generations
        assert f"<td>{10 + t.number}.00</td>" in generations
    assert "<td>10.00</td>" in generations  # the reference column
    # Loads without network: plotly.js is inline, nothing is fetched from anywhere.
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import", page)
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()) == 1  # inlined exactly once
    assert not re.search(r"https?://", page.replace(get_plotlyjs(), ""))
    # (plotly.js itself holds map-tile URLs as strings; they are only used by map traces, never here)


def test_report_cli_writes_every_format_and_summarises(swept, capsys):
    study = load(swept)
    assert main(["report", "pricer", "--results-dir", str(swept)]) == 0
    out = capsys.readouterr().out
    for fmt in ("md", "html", "csv", "parquet"):
        assert (swept / "pricer" / f"report.{fmt}").stat().st_size > 0
    best = study.best_trial
    assert f"best: trial {best.number}: eval_loss = {best.value:.6g}" in out
    assert "trials: 5 (4 complete, 1 fail)" in out
    assert "parameters that mattered most" in out and "rough ranking" in out
    for line in status.collect(study).summary:  # the cost and rung agreement lines, as `sweep status`
        assert line[:60] in out
    # The sweep file works as the target too (it names the study and its storage).
    (swept / "pricer" / "report.md").unlink()
    sweep_file = str(ROOT / "sweeps/pricer.yaml")
    assert main(["report", sweep_file, "--results-dir", str(swept), "--format", "md"]) == 0
    assert f"trial {best.number}: eval_loss" in (swept / "pricer" / "report.md").read_text()


def test_importances_when_params_vary(swept):
    study = load(swept)
    importances, note = report.param_importances(study)
    assert importances and set(importances) <= set(study.trials[0].params)
    assert sum(importances.values()) == pytest.approx(1.0)
    assert list(importances.values()) == sorted(importances.values(), reverse=True)
    assert note.startswith("warning: only 4 complete trials (fewer than 20)")  # few trials: said plainly


@pytest.mark.parametrize("n_complete", [0, 1])
def test_report_with_too_few_complete_trials_explains_instead_of_crashing(tmp_path, console, n_complete):
    complete_first = reporting_recipe.failing({n: RuntimeError("boom") for n in range(n_complete, 2)})
    url = journal(tmp_path)
    run(tmp_path, 2, storage=url, recipe=complete_first)
    data = studyview.load_study_data("pricer", str(tmp_path), url)
    assert list(data.frame["state"]) == ["COMPLETE", "FAIL"][:n_complete] + ["FAIL"] * (2 - n_complete)
    paths, importances, why = report.write_report(data)
    assert importances == {} and f"at least 2 complete trials; this study has {n_complete}" in why
    page = (tmp_path / "pricer" / "report.html").read_text()
    section = page.split('<section id="param-importances">')[1].split("</section>")[0]
    assert "at least 2 complete trials" in section and "plot-param-importances" not in section
    md = (tmp_path / "pricer" / "report.md").read_text()
    assert "at least 2 complete trials" in md
    assert len(pd.read_parquet(tmp_path / "pricer" / "report.parquet")) == 2
    report.print_summary(data, console, importances, why)
    assert "parameter importances: parameter importances need at least 2" in output(console)
    if n_complete == 0:
        assert "no complete trial yet" in md and "best: no complete trial yet" in output(console)
        assert 'id="plot-' not in page and page.count("no complete trial yet") >= 4
    else:
        assert 'id="plot-optimisation-history"' in page and 'id="plot-learning-curves"' in page


def test_report_on_a_journal_storage(tmp_path):
    url = journal(tmp_path)
    study = run(tmp_path, 3, storage=url)
    data = studyview.load_study_data("pricer", str(tmp_path), url)
    assert list(data.frame["value"]) == pytest.approx([t.value for t in study.trials], nan_ok=True)
    paths, _, _ = report.write_report(data)
    assert len(paths) == 4
    page = (tmp_path / "pricer" / "report.html").read_text()
    assert 'id="plot-learning-curves"' in page
    assert main(["report", "pricer", "--results-dir", str(tmp_path), "--storage", url, "--format", "md"]) == 0


def test_compare_two_studies(swept):
    a, b = load(swept), load(swept, "pricer-b")
    assert main(["compare", "pricer", "pricer-b", "--results-dir", str(swept)]) == 0
    out = swept / "compare-pricer-vs-pricer-b"
    datas = [studyview.load_study_data(n, str(swept)) for n in ("pricer", "pricer-b")]
    frame = compare.compare_frame(datas)
    assert list(frame["study"]) == ["pricer", "pricer-b"]
    assert list(frame["best_value"]) == pytest.approx([a.best_value, b.best_value])
    assert list(frame["best_trial"]) == [a.best_trial.number, b.best_trial.number]
    assert list(frame["complete"]) == [4, 3] and list(frame["fail"]) == [1, 0]
    for name, value in b.best_params.items():
        assert frame.loc[1, f"param_{name}"] == value
    md = (out / "report.md").read_text()
    assert (
        "| pricer-b | eval_loss | minimize | 3 | 3 | 0 | 0 | 0 | "
        f"{b.best_trial.number} | {b.best_value:.4g} |" in md
    )
    dist = compare.distribution_frame(datas)
    complete_a = [t.value for t in a.trials if t.state == TrialState.COMPLETE]
    assert dist.loc[0, "count"] == 4
    assert dist.loc[0, "min"] == pytest.approx(min(complete_a))
    assert dist.loc[0, "mean"] == pytest.approx(sum(complete_a) / 4)
    page = (out / "report.html").read_text()
    assert 'id="plot-metric-distribution"' in page and 'id="plot-best-learning-curves"' in page
    assert f"pricer-b trial {b.best_trial.number}" in page and f"pricer trial {a.best_trial.number}" in page
    assert not (out / "report.csv").exists()  # `compare` defaults to md,html


def test_report_compare_flag_and_chosen_trials(swept):
    study = load(swept)
    assert (
        main(["report", "pricer", "pricer-b", "--compare", "--results-dir", str(swept), "--format", "csv"])
        == 0
    )
    both = pd.read_csv(swept / "compare-pricer-vs-pricer-b" / "report.csv")
    assert both["study"].value_counts().to_dict() == {"pricer": 5, "pricer-b": 3}

    assert main(["report", "pricer", "--trials", "3", "1", "--results-dir", str(swept)]) == 0
    out = swept / "pricer" / "compare-trials-3-1"
    side = (out / "report.md").read_text()
    row = next(line for line in side.splitlines() if line.startswith("| value "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == [f"{study.trials[3].value:.4g}", f"{study.trials[1].value:.4g}"]
    assert list(pd.read_parquet(out / "report.parquet")["number"]) == [1, 3]
    page = (out / "report.html").read_text()
    assert 'id="plot-learning-curves"' in page and "<td>13.00</td>" in page and "<td>11.00</td>" in page
    with pytest.raises(HarnessError, match="has no trial 9"):
        compare.write_trials_compare(studyview.load_study_data("pricer", str(swept)), [1, 9], ["md"])


def test_status_shows_a_running_trial_and_an_eta(tmp_path, capsys):
    url = journal(tmp_path)
    study = run(tmp_path, 5, "early_terminate.type=none", storage=url)
    # A sweep in progress: budget 7, and a worker is in trial 5 at step 40 of 60.
    config = dict(study.user_attrs["config"])
    config["budget"] = {**config["budget"], "n_trials": 7}
    study.set_user_attr("config", config)
    running = study.ask()
    running.report(1.5, 40)
    assert main(["status", "pricer", "--results-dir", str(tmp_path), "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "trials: 5/7 finished; 5 complete, 1 running" in out
    assert f"running: trial {running.number}  step 40/60  eval_loss 1.5" in out
    # mean of the finished trials' durations x 2 left, less what the running one has already spent
    assert re.search(r"ETA: ~\d+s \(mean \d+s per trial, 2 to go\)", out)
    assert f"eval_loss {study.best_value:.6g}" in out
    # A report mid-sweep shows the running trial, its curve from the reported values (no log.jsonl yet).
    data = studyview.load_study_data("pricer", str(tmp_path), url)
    assert data.frame["state"].iloc[-1] == "RUNNING" and pd.isna(data.frame["value"].iloc[-1])
    assert report.eval_curve(data, data.trials()[-1]) == ([40], [1.5])
    # Reading wrote nothing: the trial is still RUNNING and no trial was added.
    again = optuna.load_study(study_name="pricer", storage=st.open_existing(url))
    assert [t.state for t in again.trials].count(TrialState.RUNNING) == 1 and len(again.trials) == 6


def test_status_counts_the_budget_not_seed_repeats_audits_or_interrupted_trials(tmp_path, capsys):
    """n_trials=3, three trials done, plus a seed repeat (`sweep confirm`), an audit and an interrupted
    trial: the sweep is 3/3 and done, not 6/3; the three others are shown as not counted."""
    from harness.core import attrs
    from harness.study import failures

    url = journal(tmp_path)
    study = run(tmp_path, 3, "early_terminate.type=none", storage=url)
    for key in (attrs.REPEAT_OF, attrs.AUDIT_OF):
        rerun = study.ask()
        rerun.set_user_attr(key, 0)
        study.tell(rerun, 1.0)
    cut = study.ask()
    cut.set_user_attr(attrs.FAIL_REASON, failures.INTERRUPTED)
    study.tell(cut, state=TrialState.FAIL)
    assert main(["status", "pricer", "--results-dir", str(tmp_path), "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "trials: 3/3 finished (+3 not counted: re-runs, interrupted); 5 complete, 1 fail" in out
    assert "\n  done\n" in out  # the ETA line: nothing left to run
    view = status.collect(optuna.load_study(study_name="pricer", storage=st.open_existing(url)))
    assert view.finished == 3 and view.done


def test_eta_text_for_finished_and_stopped_sweeps():
    from harness.results.status import View

    stopped = View(
        "s", "eval_loss", "minimize", n_trials=8, max_steps=100, counts={"COMPLETE": 4}, mean_s=30.0
    )
    assert status.eta_text(stopped).startswith("not running: 4 trial(s) to go")
    done = View("s", "eval_loss", "minimize", n_trials=4, max_steps=100, counts={"COMPLETE": 4}, mean_s=30.0)
    assert status.eta_text(done) == "done"
    first = View("s", "eval_loss", "minimize", n_trials=4, max_steps=100, counts={"RUNNING": 1})
    first.running = [status.Running(0, 20, 1.0, [1.0], 12.0, {})]
    assert status.eta_text(first) == "ETA: unknown until a trial finishes"


def test_list_over_two_studies(swept, capsys):
    a, b = load(swept), load(swept, "pricer-b")
    db = (swept / "pricer" / "study.db").read_bytes()
    assert main(["list", "--results-dir", str(swept)]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")]
        for line in out.splitlines()
        if "│" in line
    }
    assert rows["pricer"][3:8] == ["5", "4", "0", "1", "0"]
    assert rows["pricer"][9] == f"{a.best_value:.6g} (#{a.best_trial.number})"
    assert rows["pricer-b"][3:8] == ["3", "3", "0", "0", "0"]
    assert rows["pricer-b"][9] == f"{b.best_value:.6g} (#{b.best_trial.number})"
    assert main(["status", "--results-dir", str(swept)]) == 0
    out = capsys.readouterr().out
    assert "pricer  (sqlite:///" in out and "pricer-b  (sqlite:///" in out and out.count("  done") == 2
    assert main(["status", "pricer", "--results-dir", str(swept)]) == 0
    assert (swept / "pricer" / "study.db").read_bytes() == db  # reading wrote nothing to the database


def test_list_reports_a_broken_database_without_hiding_the_others(tmp_path, capsys):
    url = journal(tmp_path)
    run(tmp_path, 1, storage=url)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "study.db").write_text("not a database")
    assert main(["list", "--results-dir", str(tmp_path)]) == 0
    assert "error" in capsys.readouterr().out
    assert main(["list", "--storage", url]) == 0
    assert "pricer" in capsys.readouterr().out
    assert main(["list", "--results-dir", str(tmp_path / "nothing")]) == 0
    assert "no studies" in capsys.readouterr().out


def test_bad_input_is_one_line_error(swept, tmp_path, capsys):
    with pytest.raises(StorageError, match="no study 'nope'"):
        studyview.load_study_data("nope", str(swept))
    assert main(["report", "nope", "--results-dir", str(swept)]) == 2
    with pytest.raises(StorageError, match="no journal storage"):
        studyview.load_study_data("pricer", str(swept), f"journal:{tmp_path}/missing.log")
    assert not (tmp_path / "missing.log").exists()  # reading created nothing
    with pytest.raises(StorageError, match="has no study named 'other'; it holds: pricer"):
        studyview.load_study_data("other", str(swept), f"sqlite:///{swept}/pricer/study.db")
    with pytest.raises(HarnessError, match="--format"):
        report.parse_formats("md,pdf")
    assert main(["report", "pricer", "--compare", "--results-dir", str(swept)]) == 2
    assert "two or more studies" in capsys.readouterr().err


def test_markdown_table_escapes_cells():
    frame = pd.DataFrame({"a": ["x|y", "line1\nline2"], "b": [1.23456, float("nan")]})
    assert report.md_table(frame).splitlines() == [
        "| a | b |",
        "|---|---:|",
        "| x\\|y | 1.235 |",
        "| line1<br>line2 |  |",
    ]
    assert trialdir.read_eval_history(Path("/nonexistent")) == []


def test_mixed_type_params_stay_writable_as_parquet(tmp_path):
    """A categorical like [0, "auto"] (or one param typed differently in two studies) becomes text."""
    study = optuna.create_study(study_name="mixed")
    dist = {"gradient_accumulation_steps": optuna.distributions.CategoricalDistribution([0, "auto"])}
    for choice in (0, "auto", 0):
        params = {"gradient_accumulation_steps": choice}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dist, value=1.0))
    frame = studyview.trials_frame(study)
    assert list(frame["param_gradient_accumulation_steps"]) == ["0", "auto", "0"]
    report.atomic_write_parquet(frame, tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "m.parquet"), frame)
