"""pytest plugin (entry point `pytest11: harness`): `pytest sweeps/` runs every sweep file as a test.

Which YAML files are sweeps (so the plugin never grabs a repo's CI or compose files):
- a `*.yaml`/`*.yml` file in a folder named `sweeps` (below pytest's rootdir; ini `sweep_folders` changes
  the folder names), except search-space files (only `parameters:`/`description:` at the top level);
- with `sweep_collect = auto` (the default) also any YAML mapping that has `search_space:`, or
  `parameters:` next to a sweep-only key such as `name:` or `model:`;
- any YAML file named explicitly on the command line (`pytest path/to/file.yaml`).
`--sweep-collect` / ini `sweep_collect`: `auto`, `folders` (only the folder rule), `off`.

Each sweep file is one test item named after its study (`sweeps/pricer.yaml::pricer`). It runs in smoke
mode (see harness.suite.collect: 1 trial, 4 steps, tiny eval, in `<results_dir>/.smoke/`) unless
`--sweep-full`
is given, and fails with the `expect:` lines that failed. Works with `-k` (file name, study name and the
file's `tags:`, which are also added as markers for `-m`), `-x`, `--junitxml` (expectation outcomes are
recorded as properties) and pytest-xdist (the session fixtures are per worker process).

An invalid sweep file is a collection error, like a test module with a syntax error.

`--sweep-recipe module:function` swaps the QLoRA fine-tune for another recipe (a fake one in tests);
`--sweep-results-dir DIR` puts the studies somewhere else than the sweep file's `results_dir`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from harness.core.spec import import_recipe
from harness.errors import HarnessError
from harness.suite import collect
from harness.sweepfile.load import read_yaml
from harness.sweepfile.schema import SweepConfig

# Tags that would change how pytest runs a test if they became markers of the same name.
_PYTEST_MARKS = {
    "skip",
    "skipif",
    "xfail",
    "parametrize",
    "usefixtures",
    "filterwarnings",
    "tryfirst",
    "trylast",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sweep", "harness sweep files")
    group.addoption(
        "--sweep-full",
        action="store_true",
        help="run each sweep file with its own budget instead of a smoke run (1 trial, 4 steps)",
    )
    group.addoption(
        "--sweep-recipe",
        metavar="MODULE:FUNCTION",
        help="recipe (spec, on_eval) -> TrialResult to use instead of the QLoRA fine-tune (for tests)",
    )
    group.addoption(
        "--sweep-results-dir", metavar="DIR", help="results dir for every sweep (overrides the file's)"
    )
    group.addoption(
        "--sweep-collect",
        choices=("auto", "folders", "off"),
        help="which YAML files are sweeps: auto (folder rule + content), folders, off (ini: sweep_collect)",
    )
    parser.addini("sweep_collect", "which YAML files are sweeps: auto, folders or off", default="auto")
    parser.addini(
        "sweep_folders", "folder names whose YAML files are sweep files", type="linelist", default=["sweeps"]
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sweep: a sweep file collected by the harness plugin")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix.lower() not in collect.SUFFIXES:
        return None
    config = parent.config
    mode = config.getoption("sweep_collect") or config.getini("sweep_collect")
    if mode == "off":
        return None
    if _is_sweep_file(file_path, config, mode, parent.session.isinitpath(file_path)):
        return SweepFile.from_parent(parent, path=file_path)
    return None


def _is_sweep_file(path: Path, config: pytest.Config, mode: str, named: bool) -> bool:
    if named:
        return True
    folders = set(config.getini("sweep_folders"))
    try:
        parts = path.parent.relative_to(config.rootpath).parts
    except ValueError:
        parts = (path.parent.name,)
    if folders & set(parts):
        try:
            return not collect.is_search_space_file(read_yaml(path))
        except HarnessError:
            return True  # broken YAML in a sweeps folder: collect it, so the error is shown
    return mode == "auto" and collect.looks_like_sweep(path)


class SweepFile(pytest.File):
    def collect(self) -> Iterator[SweepItem]:
        smoke = not self.config.getoption("sweep_full")
        results_dir = self.config.getoption("sweep_results_dir")
        overrides = [f"results_dir={results_dir}"] if results_dir else []
        try:
            cfg = collect.load(self.path, overrides, smoke=smoke)
        except HarnessError as e:
            raise self.CollectError(str(e)) from None  # shown as the message alone, no traceback
        item = SweepItem.from_parent(self, name=cfg.name, cfg=cfg, smoke=smoke)
        item.add_marker("sweep")
        # -k matches extra keywords; markers also make `-m <tag>` (and the repo's `-m 'not slow'`) work.
        item.extra_keyword_matches.update(cfg.tags)
        for tag in cfg.tags:
            if re.fullmatch(r"[A-Za-z_][\w-]*", tag) and tag not in _PYTEST_MARKS:
                self.config.addinivalue_line("markers", f"{tag}: sweep tag")
                item.add_marker(tag)
        yield item


class SweepFailed(Exception):
    """An expectation failed (or no trial completed): reported as its message, without a traceback."""


class SweepItem(pytest.Item):
    def __init__(self, *, cfg: SweepConfig, smoke: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cfg, self.smoke = cfg, smoke

    def runtest(self) -> None:
        spec = self.config.getoption("sweep_recipe")
        # Output goes to sys.stdout at print time, so pytest's capture shows it with a failure.
        console = Console(highlight=False, width=160)
        err = Console(stderr=True, highlight=False, width=160)
        try:
            from harness.suite.session import run_one  # here: a collected sweep is about to run

            recipe = import_recipe(spec, [self.config.rootpath]) if spec else None
            report = run_one(self.cfg, self.path, recipe=recipe, console=console, err=err, smoke=self.smoke)
        except HarnessError as e:
            raise SweepFailed(f"{self._title()} error: {e}") from None
        if report.best_value is not None:
            self.user_properties.append(("best_" + self.cfg.metric.name, report.best_value))
        for o in report.outcomes:
            self.user_properties.append(
                (o.expectation.describe(), f"{'PASS' if o.passed else 'FAIL'}: {o.detail}")
            )
        if report.status != "passed":
            # First line = what failed: pytest's short summary and junit's message show only that.
            lines = [report.reason()]
            lines += [f"  {o.line()}" for o in report.outcomes]
            if report.message and report.outcomes:
                lines.append(f"  {report.message}")
            raise SweepFailed("\n".join(lines))

    def _title(self) -> str:
        return f"sweep {self.cfg.name}" + (" (smoke)" if self.smoke else "")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, SweepFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)  # our bug: the full traceback

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self._title()
