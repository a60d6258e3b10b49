"""The `sweep` command itself: every way a newcomer can call it ends in help or a usage error (exit 0 or 2),
never a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from helpers import ROOT

from harness import cli


def verbs() -> list[str]:
    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_the_verbs_are_the_documented_ones():
    assert verbs() == sorted(
        [
            "run",
            "status",
            "list",
            "report",
            "compare",
            "confirm",
            "audit",
            "best",
            "train",
            "watch",
            "dashboard",
            "convert",
        ]  # fmt: skip
    )


def test_top_level_help_exits_0_from_the_installed_script():
    """The first command a newcomer types (a `%` in a help string once made it crash)."""
    out = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and all(v in out.stdout for v in verbs())


@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["-h"], ["frobnicate"], ["--no-such-flag"], ["run", "--n-trials", "x", "a.yaml"]]
    + [[v, "--help"] for v in verbs()]
    + [[v] for v in verbs() if v not in ("status", "list")],  # these two work without an argument
    ids=lambda a: " ".join(a) or "(nothing)",
)
def test_help_or_a_usage_error_never_a_traceback(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a verb might read or write lands in the repository
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if argv and argv[-1] in ("--help", "-h"):
        assert code == 0 and "usage:" in out
    else:
        assert code == 2 and ("usage:" in err or "error:" in err)
    assert list(tmp_path.iterdir()) == [], "help and usage errors write nothing"


@pytest.mark.parametrize("verb", ["status", "list"])
def test_the_verbs_without_an_argument_work_on_an_empty_folder(verb, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([verb]) == 0
    assert "Traceback" not in "".join(capsys.readouterr())
    assert list(tmp_path.iterdir()) == []
