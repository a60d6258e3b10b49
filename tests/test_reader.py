"""The strict YAML reader: repeated keys, deep nesting and alias bombs are one clear error each, through
`sweep run` too (exit 2, a short message, nothing written)."""

from __future__ import annotations

import pytest
from helpers import ROOT

from harness import cli
from harness.errors import ConfigError
from harness.sweepfile import reader

PRICER = (ROOT / "sweeps" / "pricer.yaml").read_text()


def bomb(levels: int = 9) -> str:
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        text += f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]\n"
    return text


def test_a_repeated_key_names_the_key_and_both_lines():
    with pytest.raises(ConfigError, match=r"s.yaml: key 'r' is given twice \(lines 2 and 4\)"):
        reader.loads("name: x\nr: 8\nlr: 1\nr: 16\n", "s.yaml")
    with pytest.raises(ConfigError, match=r"key 'max_steps' is given twice \(lines 2 and 3\)"):
        reader.loads("budget:\n  max_steps: 1\n  max_steps: 2\n", "s.yaml")


def test_anchors_merges_and_the_same_key_in_other_mappings_still_load():
    data = reader.loads("a: &x {k: 1}\nb:\n  <<: *x\n  j: 2\nc: {k: 3}\n", "s.yaml")
    assert data == {"a": {"k": 1}, "b": {"k": 1, "j": 2}, "c": {"k": 3}}


def test_deep_nesting_and_alias_bombs_are_refused_in_a_line():
    for text, words in [
        ("a: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("a: " + "[" * (reader.MAX_DEPTH + 1) + "]" * (reader.MAX_DEPTH + 1), "nested too deeply"),
        (bomb(), "expands to more than"),
    ]:
        with pytest.raises(ConfigError, match=words) as e:
            reader.loads(text, "s.yaml")
        assert len(str(e.value)) < 300
    assert reader.loads("a: " + "[" * 10 + "]" * 10, "s.yaml")  # ordinary depth is fine


@pytest.mark.parametrize(
    "text",
    [
        PRICER + "\nbudget:\n  n_trials: 3\n",
        PRICER + "\n" + bomb(),
        "name: deep\nparameters: " + "{a: " * 4000,
    ],
    ids=["repeated-key", "alias-bomb", "deep"],
)
def test_sweep_run_says_so_and_writes_nothing(text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(text)
    assert cli.main(["run", "s.yaml", "--results-dir", str(tmp_path / "results")]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "s.yaml" in err and len(out + err) < 20_000
    assert not (tmp_path / "results").exists()


def test_an_override_that_expands_is_refused():
    from harness.sweepfile.load import apply_overrides

    with pytest.raises(ConfigError, match="override parameters.r: expands to more than"):
        apply_overrides({}, ["parameters.r=" + bomb().replace("\n", ", ").join("{}")], "s.yaml")
