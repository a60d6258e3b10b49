"""Rows longer than max_seq_length (issue 16), on the builtin model, tokenizer and pricer data: training,
the eval loss and generation see the same rows, each with its whole answer, under each truncation mode;
and a run says so when it starts and stores the figures in the study."""

from __future__ import annotations

import io
from collections import Counter

import pytest
import torch
from rich.console import Console

from harness.core.lengths import lines, suggested_length
from harness.core.spec import TrialSpec
from harness.study.run import run_sweep
from harness.trial import session
from harness.trial.datasets import load_splits
from harness.trial.recipe import score
from harness.trial.tokens import IGNORE_INDEX, encode_completions, encode_prompts

TAIL = "\n\nPrice is $"


class Recorder(torch.nn.Module):
    """Stands in for the model in generation: records each unpadded prompt and answers EOS at once."""

    def __init__(self, eos: int) -> None:
        super().__init__()
        self.eos = eos
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def generate(self, input_ids, attention_mask, generation_config):  # noqa: ANN001
        self.seen += [row[m.bool()].tolist() for row, m in zip(input_ids, attention_mask, strict=True)]
        return torch.cat([input_ids, torch.full((input_ids.shape[0], 1), self.eos)], dim=1)


def _whole(tok, rows) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids + EOS) of each row, untruncated: the primitives, not the rule."""
    prompts = encode_prompts(tok, [r["prompt"] for r in rows])
    answers = encode_completions(tok, [r["completion"] for r in rows])
    return [(p, a + [tok.eos_token_id]) for p, a in zip(prompts, answers, strict=True)]


def _expected(truncation: str, prompt: list[int], answer: list[int], n: int) -> tuple[int, ...] | None:
    """The scored tokens each mode must leave of a row (its whole answer, or under `right` what the cut
    leaves of it), or None for a row left out of training, eval and generation."""
    if len(prompt) + len(answer) <= n:
        return tuple(answer)
    if truncation == "keep_answer":
        return tuple(answer)
    if truncation == "right" and len(prompt) < n:
        return tuple(answer[: n - len(prompt)])  # cut from the right: the answer loses its end
    return None


@pytest.mark.parametrize("truncation", ["keep_answer", "right", "drop"])
def test_long_rows_keep_their_answer_in_training_eval_and_generation(tiny, tmp_path, truncation):
    n = 96  # pricer rows are 75-118 tokens: some fit whole, some lose their answer under `right`
    cfg = tiny(
        f"training.max_seq_length={n}", f"training.truncation={truncation}", "dataset.max_eval_rows=1000"
    )
    f = session.get(cfg)
    tok = f.tokenizer
    data = load_splits(cfg, tok)
    tail = encode_completions(tok, [TAIL])[0]  # how the last line reads after the description

    # Training: the scored tokens of every training sequence are one row's answer, rows as the mode says.
    whole = _whole(tok, data.train.to_list())
    want = Counter(e for p, a in whole if (e := _expected(truncation, p, a, n)) is not None)
    assert 0 < sum(want.values()) and any(len(p) + len(a) > n for p, a in whole)  # some rows are long
    got = Counter(tuple(t for t in lab if t != IGNORE_INDEX) for lab in f.train["labels"])
    assert got == want
    assert max(len(ids) for ids in f.train["input_ids"]) <= n
    for ids, lab in zip(f.train["input_ids"], f.train["labels"], strict=True):  # BOS ... last line, answer
        prompt = ids[: next(i for i, t in enumerate(lab) if t != IGNORE_INDEX)]
        assert prompt[0] == tok.bos_token_id and prompt[-len(tail) :] == tail
    if truncation == "keep_answer":
        assert len(f.train) == len(data.train)  # every row trained on, none lost its answer

    # Eval loss: the same rule on the validation rows (all of them here).
    whole_val = _whole(tok, data.validation.to_list())
    want_val = Counter(e for p, a in whole_val if (e := _expected(truncation, p, a, n)) is not None)
    scored: Counter[tuple[int, ...]] = Counter()
    eval_prompts: Counter[tuple[int, ...]] = Counter()  # what each scored sequence puts before its answer
    for batch in f.eval_batches:
        for ids, lab in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
            scored[tuple(t for t in lab if t != IGNORE_INDEX)] += 1
            eval_prompts[tuple(ids[: next(i for i, t in enumerate(lab) if t != IGNORE_INDEX)])] += 1
    assert scored == want_val

    # Generation: only the rows the rule keeps, each fed the very prompt the eval loss scores it after.
    rows = data.validation.to_list()[:40]
    kept = [r for r, (p, a) in zip(rows, _whole(tok, rows), strict=True) if _expected(truncation, p, a, n)]
    model = Recorder(tok.eos_token_id)
    _, evidence = score(model, f, TrialSpec.build(cfg, {}, -1, tmp_path / "t"), rows)
    assert [e["prompt"] for e in evidence] == [r["prompt"] for r in kept]
    assert 0 < len(kept) and (len(kept) < len(rows)) == (truncation != "keep_answer")
    fed = Counter(tuple(s) for s in model.seen)
    assert sum(fed.values()) == len(kept) and fed <= eval_prompts
    texts = [r["prompt"] for r in rows]
    for seen in model.seen:  # BOS + the head of the prompt + its last line, whole
        assert seen[0] == tok.bos_token_id and seen[-len(tail) :] == tail
        head = tok.decode(seen[: -len(tail)], skip_special_tokens=True)
        assert any(t.startswith(head) for t in texts)
    shortened = [
        s for s in model.seen if not any(tok.decode(s, skip_special_tokens=True) == t for t in texts)
    ]
    assert bool(shortened) == (truncation == "keep_answer")
    for r in f.generation_rows:  # the fixed generation subset holds only rows the rule keeps
        ((p, a),) = _whole(tok, [r])
        assert _expected(truncation, p, a, n) is not None


def test_a_run_reports_how_rows_fit_and_stores_it(tiny):
    cfg = tiny("training.max_seq_length=64", "budget.n_trials=1", "budget.max_steps=4")
    out = io.StringIO()
    study = run_sweep(cfg, console=Console(file=out, width=300)).study
    stored = study.user_attrs["data_lengths"]
    f = session.get(cfg)
    data = load_splits(cfg, f.tokenizer)
    for split, ds in data.as_dict().items():
        lengths = sorted(len(p) + len(a) for p, a in _whole(f.tokenizer, ds.to_list()))
        over = sum(x > 64 for x in lengths)
        assert stored[split] == {
            "rows": len(ds),
            "shortened": over,  # keep_answer: every long row is shortened, none dropped
            "dropped": 0,
            "median": lengths[(len(lengths) + 1) // 2 - 1],
            "p95": lengths[-(-95 * len(lengths) // 100) - 1],
            "max": lengths[-1],
            "max_seq_length": 64,
            "truncation": "keep_answer",
        }
    assert len(f.train) == stored["train"]["rows"] == len(data.train)  # the trial trains on every row
    text = out.getvalue()
    (line,) = lines(cfg.name, stored)
    assert line in text.replace("\n", "")
    t, v = stored["train"], stored["validation"]
    assert f"{t['shortened']} of {t['rows']} train, {v['shortened']} of {v['rows']} validation" in line
    assert "exceed max_seq_length=64" in line and "prompts shortened (truncation: keep_answer)" in line
    assert f"max_seq_length={suggested_length(stored)} fits 95% of rows" in line
    assert text.index(line[:40]) < text.index("trial   0")  # said before the first trial starts
    # `sweep report` shows the same figures, read back from the study.
    from harness.results import report
    from harness.results import view as studyview

    report.write_report(studyview.load_study_data(cfg.name, cfg.results_dir), ["md"])
    assert f"## Data\n\n{line}\n" in (cfg.study_dir / "report.md").read_text()
