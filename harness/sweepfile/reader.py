"""YAML as harness reads it: data only (safe_load), and strict where plain YAML is silent or explosive.

- The same key twice in one mapping is an error naming the key and both lines (YAML lets the last one win
  in silence: a sweep would run with a setting the user thought they had changed back).
- Nesting deeper than MAX_DEPTH is an error (a sweep file is a few levels deep; the parser itself would
  otherwise die in a recursion error thousands of lines long).
- A document whose aliases expand past MAX_VALUES values is refused (an "alias bomb": a few lines of
  anchors that expand to billions of values when the config is walked, copied or printed).

Every problem is one ConfigError naming the file; nothing here imports more than yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

MAX_DEPTH = 32
MAX_VALUES = 100_000


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` merges, it does not repeat
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: SafeLoader's own error says so below
                continue
            if first != line:
                raise _Duplicate(key, first, line)
        return super().construct_mapping(node, deep=deep)


class _Duplicate(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def loads(text: str, source: str) -> Any:
    """Parse one YAML document; `source` names it in errors (a path, or `override x=...`)."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except _Duplicate as d:
        raise ConfigError(
            f"{source}: key {_short(d.key)!r} is given twice (lines {d.first} and {d.second}); "
            "YAML would keep only the last one: delete one of them"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{source}: nested too deeply for a sweep file (at most {MAX_DEPTH} levels)"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}: malformed YAML{where}: {_short(problem)}") from None
    check_shape(data, source)
    return data


def read(path: Path, what: str = "file") -> Any:
    """A YAML file, read strictly (see the module docstring)."""
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; expected a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected UTF-8 YAML)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or e}") from None
    return loads(text, str(path))


def check_shape(data: Any, source: str) -> None:
    """Depth and expanded size, walking the loaded data as every later step will (shared alias nodes are
    counted each time they are reached: that is what expanding them costs)."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{source}: expands to more than {MAX_VALUES:,} values (YAML anchors and aliases that "
                "multiply); a sweep file is a few hundred at most"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: nested too deeply for a sweep file (at most {MAX_DEPTH} levels)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value if isinstance(k, (tuple, list)))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
