"""What a study was run on, as stored once per study (user attr `provenance`, measured by
harness.trial.provenance when `sweep run` first opens it), and how the views read it:

    {"base_model": "builtin:tiny-llama", "base_model_sha256": ..., "tokenizer_sha256": ...,
     "data": {"train": ..., "validation": ..., "test": ...}, "rows": {"train": 4000, ...},
     "eval_subset": ...}

`eval_subset` covers the fixed validation rows every trial is scored on. `sweep report` prints them;
`sweep compare` warns when two studies differ in any of them (their numbers are then not comparable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SPLITS = ("train", "validation", "test")
COMPARED = {
    "base_model_sha256": "base weights",
    "tokenizer_sha256": "tokenizer",
    "data.train": "train data",
    "data.validation": "validation data",
    "data.test": "test data",
    "eval_subset": "eval subset",
}


def flat(prov: dict[str, Any]) -> dict[str, Any]:
    """{"base_model_sha256": .., "data.train": .., ...}: the compared fields, one level deep."""
    out = {k: v for k, v in prov.items() if not isinstance(v, dict)}
    for name, value in (prov.get("data") or {}).items():
        out[f"data.{name}"] = value
    return out


def lines(prov: dict[str, Any] | None) -> list[str]:
    """What `sweep report` prints: one line per hash (12 hex digits; the full ones are in the study)."""
    if not prov:
        return ["provenance: not recorded (a study from before harness recorded it)"]
    f = flat(prov)
    rows = prov.get("rows") or {}
    out = [
        f"base model {prov.get('base_model', '?')}: weights {_short(f.get('base_model_sha256'))}, "
        f"tokenizer {_short(f.get('tokenizer_sha256'))}"
    ]
    data = ", ".join(
        f"{s} {_short(f.get(f'data.{s}'))} ({rows[s]} rows)"
        if s in rows
        else f"{s} {_short(f.get(f'data.{s}'))}"
        for s in SPLITS
    )
    out.append(f"data sha256: {data}; eval subset {_short(f.get('eval_subset'))}")
    return out


def _short(v: Any) -> str:
    return str(v)[:12] if v else "unknown"


def differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """The compared fields whose hashes differ (or that one study lacks), as words."""
    if not a or not b:
        return ["provenance (not recorded)"]
    fa, fb = flat(a), flat(b)
    return [words for key, words in COMPARED.items() if fa.get(key) != fb.get(key)]


def compare_warnings(studies: Sequence[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """One warning per study that differs from the first one in base weights, tokenizer, data or eval
    subset: their metric values are then not comparable."""
    if len(studies) < 2:
        return []
    (first, ref), out = studies[0], []
    for name, prov in studies[1:]:
        diff = differences(ref, prov)
        if diff:
            out.append(
                f"warning: {first} and {name} differ in {', '.join(diff)}: their numbers are not comparable"
            )
    return out
