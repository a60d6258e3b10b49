"""DPO and GRPO rows: preference pairs and prompt-only rows, standard or conversational (trl's formats).

Every row comes out as strings, rendered with the model's chat template when it was a message list, so
trl, harness's evaluation and the reward functions all see the same text:
- dpo:  {prompt, chosen, rejected, completion=chosen}; with the prompt implicit in chosen/rejected (no
  `prompt` column) it is their shared start (trl's extract_prompt).
- grpo: {prompt, completion (a reference answer, "" when there is none), **the other columns}, which trl
  passes to the reward functions.
A row that does not fit is an error naming its index and the columns found: a preference file that lost
its `rejected` column must not train on half a format.

(The builtin pricer data as pairs, and the price every pricer row needs, are harness.tasks.pricer's.)
"""

from __future__ import annotations

from typing import Any

from harness.errors import DataError

Row = dict[str, Any]
PREFERENCE = ("chosen", "rejected")


def detect(trainer: str, fmt: str) -> str:
    """The row format a dpo/grpo split is read as: `dataset.format`, else the trainer's one format (its
    columns are then checked against it, so a file of the wrong shape is named, not guessed around)."""
    if fmt != "auto":
        return fmt
    return "preference" if trainer == "dpo" else "prompt-only"


def format_rows(rows: list[Row], trainer: str, fmt: str, tokenizer: Any, where: str) -> list[Row]:
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
        return [_preference(i, r, tokenizer, where) for i, r in enumerate(rows)]
    if "prompt" not in cols:
        raise DataError(f"{where}: trainer grpo needs prompt-only rows with a 'prompt' column; {found}.")
    return [_prompt_only(i, r, tokenizer, where) for i, r in enumerate(rows)]


def _preference(i: int, row: Row, tokenizer: Any, where: str) -> Row:
    from trl.data_utils import extract_prompt, is_conversational, maybe_apply_chat_template

    present = [k for k, v in row.items() if v is not None]
    pair: dict[str, Any] = {k: row.get(k) for k in ("prompt", *PREFERENCE) if row.get(k) is not None}
    if any(k not in pair for k in PREFERENCE):
        missing = " and ".join(k for k in PREFERENCE if k not in pair)
        raise DataError(f"{where}: row {i} has no {missing} (columns found: {', '.join(present)}).")
    if not _same_shape(pair):
        raise DataError(
            f"{where}: row {i}: prompt/chosen/rejected must be all strings or all message lists "
            f"(columns found: {', '.join(present)})."
        )
    if "prompt" not in pair:
        pair = dict(extract_prompt(pair))
    if is_conversational(pair):
        _need_template(tokenizer, where)
        pair = _strip_bos(dict(maybe_apply_chat_template(pair, tokenizer)), tokenizer)
    if not all(isinstance(pair[k], str) and pair[k].strip() for k in ("prompt", *PREFERENCE)):
        raise DataError(f"{where}: row {i} has an empty prompt, chosen or rejected.")
    extra = {k: v for k, v in row.items() if k not in ("prompt", "completion", *PREFERENCE)}
    return {**extra, "prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"],
            "completion": pair["chosen"]}  # fmt: skip


def _prompt_only(i: int, row: Row, tokenizer: Any, where: str) -> Row:
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    prompt = row.get("prompt")
    if isinstance(prompt, list):
        if not is_conversational({"prompt": prompt}):
            raise DataError(f"{where}: row {i}: prompt is a list but not of {{role, content}} messages.")
        _need_template(tokenizer, where)
        prompt = _strip_bos(dict(maybe_apply_chat_template({"prompt": prompt}, tokenizer)), tokenizer)[
            "prompt"
        ]
    if not isinstance(prompt, str) or not prompt.strip():
        present = [k for k, v in row.items() if v is not None]
        raise DataError(f"{where}: row {i} has no prompt text (columns found: {', '.join(present)}).")
    reference = row.get("completion")
    extra = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
    return {**extra, "prompt": prompt, "completion": reference if isinstance(reference, str) else ""}


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
