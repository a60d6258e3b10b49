"""Errors a user can cause (HarnessError: the CLI prints them in a few lines and exits 2; anything else
is our bug), and the trial outcomes both sides of the recipe/objective boundary name."""

from __future__ import annotations

import difflib
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


def check_name(name: str, what: str = "name") -> str:
    """Names that become folder names must not escape results/ (no '/', '..', absolute paths)."""
    bad = (
        not name
        or name in {".", ".."}
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(("~", "-"))
    )
    if bad:
        raise ConfigError(
            f"{what} {name!r} cannot be used as a folder name: use letters, digits, '-', '_' or '.', "
            "without '/', '..' or a leading '~' or '-'."
        )
    return name


class RewardFailed(TrialFailed):
    """A GRPO reward function raised, or returned the wrong number of rewards: that trial fails, and its
    reason names the function."""
