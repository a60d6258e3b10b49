"""DPO and GRPO rows: preference pairs and prompt-only rows, standard or conversational (trl's formats).

Every row comes out as strings, rendered with the model's chat template when it was a message list, so
trl, harness's evaluation and the reward functions all see the same text:
- dpo:  {prompt, chosen, rejected, completion=chosen}; with the prompt implicit in chosen/rejected (no
  `prompt` column) it is their shared start (trl's extract_prompt).
- grpo: {prompt, completion (a reference answer, "" when there is none), **the other columns}, which trl
  passes to the reward functions.
A file that lacks a needed column is an error naming the columns found: a preference file that lost its
`rejected` column must not train on half a format. A row that does not fit (an empty or missing answer, a
value of the wrong type) comes out as the reason, for harness.core.badrows.

(The builtin pricer data as pairs, and the price every pricer row needs, are harness.tasks.pricer's.)
"""

from __future__ import annotations

import math
from typing import Any

from harness.core import badrows
from harness.errors import DataError

Row = dict[str, Any]
PREFERENCE = ("chosen", "rejected")


def detect(trainer: str, fmt: str) -> str:
    """The row format a dpo/grpo split is read as: `dataset.format`, else the trainer's one format (its
    columns are then checked against it, so a file of the wrong shape is named, not guessed around)."""
    if fmt != "auto":
        return fmt
    return "preference" if trainer == "dpo" else "prompt-only"


def format_rows(rows: list[Row], trainer: str, fmt: str, tokenizer: Any, where: str) -> list[Row | str]:
    """Each row formatted, or a short reason it cannot be used (harness.core.badrows), in order. A file
    that lacks a needed column altogether, or a tokenizer that cannot render its messages, is an error."""
    cols = columns(rows)
    found = f"found columns: {', '.join(cols) or 'none'}"
    kind = detect(trainer, fmt)
    if kind == "preference":
        missing = [c for c in PREFERENCE if c not in cols]
        if missing:
            raise DataError(
                f"{where}: trainer dpo needs preference rows (prompt/chosen/rejected, or chosen/rejected "
                f"with the prompt in them); no {' or '.join(repr(m) for m in missing)} column; {found}."
            )
        return [_preference(r, tokenizer, where) for r in rows]
    if "prompt" not in cols:
        raise DataError(f"{where}: trainer grpo needs prompt-only rows with a 'prompt' column; {found}.")
    return [_prompt_only(r, tokenizer, where) for r in rows]


def _preference(row: Row, tokenizer: Any, where: str) -> Row | str:
    from trl.data_utils import extract_prompt

    pair: dict[str, Any] = {k: row.get(k) for k in ("prompt", *PREFERENCE) if not _absent(row.get(k))}
    if any(k not in pair for k in PREFERENCE):
        return "no " + " and no ".join(k for k in PREFERENCE if k not in pair)
    wrong = next((k for k, v in pair.items() if not isinstance(v, (str, list))), None)
    if wrong is not None:
        return f"{wrong} is {badrows.kind(pair[wrong])}"
    if not _same_shape(pair):
        return "prompt/chosen/rejected mix text and message lists"
    conversational = isinstance(pair["chosen"], list)
    if conversational and not all(_messages(v) for v in pair.values()):
        return "a list that is not {role, content} messages"
    if _empty(pair):
        return _empty(pair)
    if "prompt" not in pair:
        pair = dict(extract_prompt(pair))  # the shared start of chosen and rejected
        if _empty(pair):
            return _empty(pair)
    if conversational:
        rendered = _render(pair, tokenizer, where)
        if isinstance(rendered, str):
            return rendered
        pair = rendered
        if _empty(pair):
            return _empty(pair)
    extra = {k: v for k, v in row.items() if k not in ("prompt", "completion", *PREFERENCE)}
    return {**extra, "prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"],
            "completion": pair["chosen"]}  # fmt: skip


def _prompt_only(row: Row, tokenizer: Any, where: str) -> Row | str:
    prompt = row.get("prompt")
    if _absent(prompt):
        return "no prompt"
    if isinstance(prompt, list):
        if not _messages(prompt):
            return "prompt is a list but not of {role, content} messages"
        rendered = _render({"prompt": prompt}, tokenizer, where)
        if isinstance(rendered, str):
            return rendered
        prompt = rendered["prompt"]
    if not isinstance(prompt, str):
        return f"prompt is {badrows.kind(prompt)}"
    if not prompt.strip():
        return "empty prompt"
    reference = row.get("completion")
    extra = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
    return {**extra, "prompt": prompt, "completion": reference if isinstance(reference, str) else ""}


def _messages(value: Any) -> bool:
    """A non-empty list of {role, content} dicts (trl's is_conversational fails on an empty list)."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def _empty(pair: Row) -> str:
    """'empty chosen' (and the others that are empty), or '' when none is."""
    empty = [k for k in ("prompt", *PREFERENCE) if k in pair and not _filled(pair[k])]
    return "empty " + " and ".join(empty) if empty else ""


def _filled(value: Any) -> bool:
    return bool(value.strip()) if isinstance(value, str) else bool(value)


def _render(pair: Row, tokenizer: Any, where: str) -> Row | str:
    """Message lists -> text with the model's chat template (BOS left to the trainer's tokenizer)."""
    from trl.data_utils import maybe_apply_chat_template

    _need_template(tokenizer, where)
    try:
        return _strip_bos(dict(maybe_apply_chat_template(pair, tokenizer)), tokenizer)
    except Exception:  # noqa: BLE001 - a template is user code (jinja): whatever it raises, the row is bad
        return "messages the chat template cannot render"


def _absent(value: Any) -> bool:
    """No value: missing, null, or NaN (how pandas and parquet write an empty cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _same_shape(pair: Row) -> bool:
    """All strings, or all message lists."""
    kinds = {str if isinstance(v, str) else list if isinstance(v, list) else None for v in pair.values()}
    return len(kinds) == 1 and None not in kinds


def _need_template(tokenizer: Any, where: str) -> None:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"{where} has conversational rows but the model's tokenizer has no chat template; use a chat "
            "model, or give the rows as plain strings."
        )


def _strip_bos(row: Row, tokenizer: Any) -> Row:
    """The trainers' tokenizers add BOS themselves; a template that also writes it would double it."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and isinstance(row.get("prompt"), str) and row["prompt"].startswith(bos):
        row["prompt"] = row["prompt"][len(bos) :]
    return row


def columns(rows: list[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return list(seen)
