"""harness.core.attrs is the one owner of every Optuna user-attribute key: each key is spelled there and
nowhere else in harness/, no two names share a key, and the readers give back what the writers stored."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import optuna
from helpers import ROOT

from harness.core import attrs
from harness.core.spec import TrialResult
from harness.study import failures, objective

PACKAGE = ROOT / "harness"
OWNER = PACKAGE / "core" / "attrs.py"

KEYS = {name: value for name, value in vars(attrs).items() if name.isupper() and isinstance(value, str)}

# (module, key): the same word meaning something else there, never a user attr. Anything else is a user
# attr spelled outside its owner: use harness.core.attrs.<NAME> (or a reader) instead.
NOT_ATTRS = {
    ("harness/core/trialdir.py", "seed"): "params.json's field (trialdir owns the trial folder's files)",
    ("harness/core/trialdir.py", "fail_reason"): "metrics.json's field of a failed trial (trialdir's file)",
    ("harness/results/compare.py", "metric"): "a column of the compare tables",
    ("harness/results/report.py", "metric"): "a row label of the report summary",
    ("harness/results/report.py", "task"): "a row label of the report summary",
    ("harness/results/report.py", "provenance"): "a row label of the report summary",
    ("harness/results/status.py", "metric"): "a column of `sweep list`",
    ("harness/results/view.py", "task"): "a field of the stored sweep config (sweepfile.schema)",
    ("harness/results/view.py", "metric"): "a field of the stored sweep config (sweepfile.schema)",
    ("harness/study/confirm.py", "parameters"): "the sweep config's field, rebuilt from the stored one",
    ("harness/study/objective.py", "metrics"): "the `eval` progress event's field",
    ("harness/study/promote.py", "parameters"): "the exported sweep file's field",
    ("harness/study/promote.py", "metric"): "a column of `sweep train`'s table",
    ("harness/study/resume.py", "metric"): "a field of the fingerprint's body (changing it orphans studies)",
    ("harness/study/resume.py", "parameters"): "the sweep config's field, left out of the stored config",
    ("harness/study/run.py", "metrics"): "the `eval` progress event's field",
    ("harness/suite/collect.py", "parameters"): "a search-space file's field",
    ("harness/trial/prepare.py", "task"): "a field of the data cache's key",
    ("harness/trial/prepare.py", "seed"): "a field of the data cache's key",
    ("harness/trial/recipes/common.py", "best_step"): "the eval loop's checkpoint state (loop.json)",
    ("harness/trial/recipes/common.py", "seed"): "a TrainingArguments argument",
    ("harness/trial/recipes/common.py", "data_seed"): "a TrainingArguments argument",
    ("harness/trial/tracking.py", "seed"): "a field of the W&B run's config",
}


# The sweep file's own package sits below core (core.spec imports it) and never sees a study, so its
# "metric", "parameters", "seed"... are sweep-file fields (W&B's too), never user attrs. The AST check
# below still covers it.
SWEEP_FILE_FIELDS = PACKAGE / "sweepfile"
# A Python attribute's name (getattr(model, "device"), getattr(args, "host")) is never a user attr key.
ATTRIBUTE = re.compile(r"""\b(?:get|has|set)attr\([^()]*?,\s*(["'])\w+\1""")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != OWNER)


def test_every_key_has_one_name():
    by_value: dict[str, list[str]] = {}
    for name, value in KEYS.items():
        by_value.setdefault(value, []).append(name)
    assert {v: n for v, n in by_value.items() if len(n) > 1} == {}
    assert len(KEYS) >= 30 and "fail_reason" in by_value and "repeat_of" in by_value  # the scan sees them
    assert set(attrs.RESOURCES) <= set(KEYS.values())


def test_no_module_but_attrs_spells_a_key():
    """grep: '"fail_reason"' (either quote) in no harness module but harness/core/attrs.py."""
    found = []
    for path in _modules():
        if SWEEP_FILE_FIELDS in path.parents:
            continue
        rel = path.relative_to(ROOT).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = ATTRIBUTE.sub("", line)
            for key in KEYS.values():
                if (f'"{key}"' in line or f"'{key}'" in line) and (rel, key) not in NOT_ATTRS:
                    found.append(f"{rel}:{n}: {key!r}: {line.strip()}")
    assert found == [], "user attr keys spelled outside harness/core/attrs.py:\n" + "\n".join(found)


def _literal_keys(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals used as user-attr keys: set_user_attr("k", ..), storage.set_trial_user_attr(id, "k",
    ..), x.user_attrs.get("k") / ["k"], "k" in x.user_attrs, enqueue_trial(user_attrs={"k": ..})."""

    def is_user_attrs(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "user_attrs"

    def text(node: ast.AST) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        keys: list[ast.AST] = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name == "set_user_attr" and node.args:
                keys.append(node.args[0])
            elif name == "set_trial_user_attr" and len(node.args) > 1:
                keys.append(node.args[1])
            elif name in ("get", "pop", "setdefault") and is_user_attrs(node.func.value) and node.args:
                keys.append(node.args[0])
            for kw in node.keywords:
                if kw.arg == "user_attrs" and isinstance(kw.value, ast.Dict):
                    keys += [k for k in kw.value.keys if k is not None]
        elif isinstance(node, ast.Subscript) and is_user_attrs(node.value):
            keys.append(node.slice)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if any(is_user_attrs(c) for c in node.comparators):
                keys.append(node.left)
        out += [(node.lineno, k) for k in map(text, keys) if k is not None]
    return out


def test_no_literal_key_reaches_optuna_outside_attrs():
    """Whatever a module's NOT_ATTRS entries allow, a literal handed to Optuna as a key is never one."""
    found = [
        f"{path.relative_to(ROOT).as_posix()}:{line}: {key!r}"
        for path in _modules()
        for line, key in _literal_keys(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert found == []


def test_the_literal_finder_finds_them():
    code = """
trial.set_user_attr("a", 1)
storage.set_trial_user_attr(tid, "b", 2)
t.user_attrs.get("c")
t.user_attrs["d"]
"e" in t.user_attrs
study.enqueue_trial(p, user_attrs={"f": 1})
trial.set_user_attr(attrs.FAIL_REASON, "no finite eval_loss")
"""
    assert [k for _, k in _literal_keys(ast.parse(code))] == ["a", "b", "c", "d", "e", "f"]


def test_the_allowlist_is_not_stale():
    """Each NOT_ATTRS entry still matches something: a stale one would let a future attr use through."""
    stale = [
        (path, key)
        for path, key in NOT_ATTRS
        if not (ROOT / path).exists()
        or not any(q in (ROOT / path).read_text(encoding="utf-8") for q in (f'"{key}"', f"'{key}'"))
    ]
    assert stale == []


def test_attrs_imports_nothing_heavy():
    heavy = ("optuna", "torch", "pandas", "transformers", "pydantic")
    code = f"import sys, harness.core.attrs; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------------------------
# Readers: what the writers stored, read back from a real (in-memory) study


def test_readers_round_trip_a_real_study(tmp_path):
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.set_user_attr(attrs.CONFIG, {"task": "pricer", "budget": {"n_trials": 3}})
    study.set_user_attr(attrs.METRIC, "eval_loss")
    study.set_user_attr(attrs.METRICS, ["eval_loss", "hit_rate"])
    study.set_user_attr(attrs.TASK, "pricer")
    study.set_user_attr(attrs.PROVENANCE, {"base_model_sha256": "ab"})
    study.set_user_attr(attrs.DATA_LENGTHS, {"train": {"rows": 4}})
    study.set_user_attr(attrs.BASELINE_METRICS, {"eval_loss": 3.5})
    study.set_user_attr(attrs.TASK_BASELINES, {"median": {"mae": 58.3}})

    study.enqueue_trial(
        {}, user_attrs={attrs.REPEAT_OF: 4, attrs.REPEAT_INDEX: 2, attrs.SEED: 17, attrs.DATA_SEED: 44}
    )
    trial = study.ask()
    failures.mark_start(trial, tmp_path / "trial-0000")
    result = TrialResult(
        value=1.25,
        metrics={"eval_loss": 1.25, "hit_rate": 0.5, "nan": float("nan")},
        best_step=8,
        steps_run=12,
        duration_s=3.14159,
        before_metrics={"hit_rate": 0.1},
    )
    objective.record(trial, result, {attrs.PEAK_RSS_MB: 812.4, attrs.RSS_MB: None})
    trial.set_user_attr(attrs.FAIL_REASON, "no finite hit_rate was measured")

    for t in (trial, trial.user_attrs):  # the live trial and its attrs read once
        assert attrs.metrics(t) == {"eval_loss": 1.25, "hit_rate": 0.5}
        assert attrs.before_metrics(t) == {"hit_rate": 0.1}
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    frozen = study.trials[0]
    assert attrs.repeat_of(frozen) == 4 and attrs.repeat_index(frozen) == 2
    assert (attrs.seed(frozen), attrs.data_seed(frozen)) == (17, 44)
    assert attrs.fail_reason(frozen) == "no finite hit_rate was measured"
    assert attrs.metrics(frozen) == {"eval_loss": 1.25, "hit_rate": 0.5}
    assert (attrs.best_step(frozen), attrs.steps_run(frozen), attrs.duration_s(frozen)) == (8, 12, 3.142)
    assert attrs.trial_dir(frozen) == tmp_path / "trial-0000"
    assert frozen.user_attrs[attrs.PEAK_RSS_MB] == 812.4 and attrs.RSS_MB not in frozen.user_attrs
    assert frozen.user_attrs[attrs.PID] == failures.owner()[attrs.PID]
    assert attrs.resume_from(frozen) is None

    assert attrs.config(study) == {"task": "pricer", "budget": {"n_trials": 3}}
    assert attrs.metric(study) == "eval_loss"
    assert attrs.objective_names(study) == ["eval_loss", "hit_rate"]
    assert attrs.task(study) == "pricer"
    assert attrs.provenance(study) == {"base_model_sha256": "ab"}
    assert attrs.data_lengths(study) == {"train": {"rows": 4}}
    assert attrs.baseline_metrics(study) == {"eval_loss": 3.5}
    assert attrs.task_baselines(study.user_attrs) == {"median": {"mae": 58.3}}


def test_readers_of_absent_attrs():
    study = optuna.create_study()
    trial = study.ask()
    for reader in (attrs.fail_reason, attrs.repeat_of, attrs.seed, attrs.best_step, attrs.duration_s):
        assert reader(trial) is None
    assert attrs.trial_dir(trial) is None and attrs.resume_from(trial) is None
    assert attrs.metrics(trial) == {} and attrs.before_metrics(trial) == {}
    assert attrs.config(study) == {} and attrs.data_lengths(study) == {}
    assert attrs.metric(study) is None and attrs.task(study) is None
    assert attrs.objective_names(study) is None and attrs.provenance(study) is None
    # Not what harness writes: a bool is not a trial number, a string is not a dict.
    assert attrs.repeat_of({attrs.REPEAT_OF: True}) is None
    assert attrs.config({attrs.CONFIG: "x"}) == {}
