"""Errors a user can cause (HarnessError: the CLI prints them in a few lines and exits 2; anything else
is our bug), and the trial outcomes both sides of the recipe/objective boundary name."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class HarnessError(Exception):
    """A problem with the user's input (file, key, value, path, URL). Message is shown as-is."""


class ConfigError(HarnessError):
    """A sweep file or search-space file that does not validate."""


class DataError(HarnessError):
    """A dataset that cannot be loaded or lacks what the task needs."""


class StorageError(HarnessError):
    """An Optuna storage URL that cannot be opened, or a study that cannot be resumed as asked."""


# Trial outcomes shared by the recipe side (no Optuna) and the study side (no torch): they live here, in
# the leaf module, so neither side imports the other to name them.


class TrialFailed(RuntimeError):
    """A trial that ran but produced no usable value (e.g. every eval was NaN). Its message is the
    trial's fail_reason."""


class NonFiniteLoss(TrialFailed):
    """Training loss or eval loss became NaN/Inf: the trial stops at once and fails with this reason."""


def problems_error(source: str, lines: list[str]) -> ConfigError:
    """Problems as '  - key: message' lines -> one error: one problem is one line (`file: key: message`);
    several are a count and a line each."""
    n = len(lines)
    if n == 1:
        return ConfigError(f"{source}: {lines[0].removeprefix('  - ')}")
    return ConfigError("\n".join([f"{source}: {n} problems:", *lines]))


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The valid key a typo most likely meant, for 'did you mean' hints."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


NAME_MAX = 255
"""Bytes in one file name on Linux, macOS and Windows file systems: a study name becomes a folder."""


def check_name(name: str, what: str = "name") -> str:
    """Names that become folder names must not escape results/ (no '/', '..', absolute paths), must fit in
    one file name (NAME_MAX bytes), and must survive the SQLite URL they become part of (`?` starts a
    URL's query, `%` an escape: sqlite:///results/a?b/study.db opens results/a)."""
    bad = (
        not name
        or name in {".", ".."}
        or any(c in name for c in "/\\?%")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or name.startswith(("~", "-"))
    )
    if bad:
        raise ConfigError(
            f"{what} {_shown(name)} cannot be used as a folder name: use letters, digits, '-', '_' or '.', "
            "without '/', '..', '?', '%', control characters or a leading '~' or '-'."
        )
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > NAME_MAX:
        raise ConfigError(
            f"{what} {_shown(name)} is {size} bytes long; as a folder name it may be at most {NAME_MAX} "
            "bytes: shorten it."
        )
    return name


def _shown(text: str, limit: int = 80) -> str:
    """A value as a message shows it: repr, cut in the middle past `limit` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit // 2]}...{shown[-limit // 2 :]}"


CALLABLE_SPEC = re.compile(r"[^\W\d]\w*(\.[^\W\d]\w*)*:[^\W\d]\w*(\.[^\W\d]\w*)*")
"""`package.module:function`: dotted Python names on both sides, so never a path (no '/', '..', '~')."""


NOT_A_PATH = "a module is named by its dotted Python name, never by a path; put its folder on PYTHONPATH"


def check_callable_spec(text: str, what: str) -> str:
    """A `module:function` spec (a recipe, a reward function, a custom metric) names a module by its
    dotted name, found on the import path; a file path or a relative `..` name is an error."""
    if not isinstance(text, str) or not CALLABLE_SPEC.fullmatch(text):
        module = str(text).partition(":")[0]
        path_like = any(s in module for s in ("/", "\\", "..", "~"))
        raise ConfigError(
            f"{what} {_shown(str(text))}: expected package.module:function, e.g. my_module:my_function"
            + (f" ({NOT_A_PATH})" if path_like else "")
        )
    return text


class RewardFailed(TrialFailed):
    """A GRPO reward function raised, or returned the wrong number of rewards: that trial fails, and its
    reason names the function."""
