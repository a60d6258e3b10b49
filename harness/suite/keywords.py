"""`-k EXPR` for `sweep run DIR` and the pytest plugin: pytest's keyword grammar over a sweep's names.

Words are case-insensitive substrings matched against the file name and stem, the folders between the
collected folder and the file, the study `name:` and the file's `tags:`; combined with and/or/not and
parentheses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.sweepfile.load import read_yaml
from harness.sweepfile.schema import SweepConfig

Predicate = Callable[[list[str]], bool]
"""The compiled expression: lowercased keywords -> selected?"""


class KeywordExpr:
    """pytest's -k grammar: `or` < `and` < `not` < parentheses; a word matches when it is a
    case-insensitive substring of any keyword."""

    _TOKEN = re.compile(r"\s*(\(|\)|[\w.+\-/:\[\]]+)")

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = self._tokenize(text)
        self.pos = 0
        if not self.tokens:
            raise self._error("empty expression")
        self.tree = self._or()
        if self.pos != len(self.tokens):
            raise self._error(f"unexpected {self.tokens[self.pos]!r}")

    def _tokenize(self, text: str) -> list[str]:
        tokens, pos = [], 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = self._TOKEN.match(text, pos)
            if not m:
                raise self._error(f"unexpected character {text[pos:].strip()[0]!r}")
            tokens.append(m.group(1))
            pos = m.end()
        return tokens

    def _error(self, why: str) -> ConfigError:
        return ConfigError(f"-k {self.text!r}: {why} (expected words joined by and/or/not and parentheses)")

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self) -> Predicate:
        terms = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else lambda k: any(t(k) for t in terms)

    def _and(self) -> Predicate:
        terms = [self._not()]
        while self._peek() == "and":
            self.pos += 1
            terms.append(self._not())
        return terms[0] if len(terms) == 1 else lambda k: all(t(k) for t in terms)

    def _not(self) -> Predicate:
        if self._peek() == "not":
            self.pos += 1
            inner = self._not()
            return lambda k: not inner(k)
        return self._atom()

    def _atom(self) -> Predicate:
        tok = self._peek()
        if tok is None:
            raise self._error("expression ends too early")
        self.pos += 1
        if tok == "(":
            inner = self._or()
            if self._peek() != ")":
                raise self._error("missing ')'")
            self.pos += 1
            return inner
        if tok in (")", "and", "or"):
            raise self._error(f"unexpected {tok!r}")
        word = tok.lower()
        return lambda k: any(word in name for name in k)

    def matches(self, keywords: Iterable[str]) -> bool:
        return self.tree([str(k).lower() for k in keywords])


def keywords_for(path: Path, root: Path | None, cfg: SweepConfig | None) -> list[str]:
    """What -k matches against. Without a valid config, the raw YAML's name/tags still count, so a broken
    file can be selected (and its error shown) by the tag it declares."""
    names = [path.name, path.stem]
    if root is not None and root.is_dir():
        try:
            names += list(path.relative_to(root).parent.parts)
        except ValueError:
            pass
    if cfg is not None:
        return [*names, cfg.name, *cfg.tags]
    try:
        data = read_yaml(path)
    except HarnessError:
        return names
    if isinstance(data, dict):
        if isinstance(data.get("name"), str):
            names.append(data["name"])
        tags = data.get("tags")
        if isinstance(tags, list):
            names += [str(t) for t in tags]
    return names
