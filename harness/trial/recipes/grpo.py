"""GRPO: trl's GRPOTrainer on prompts scored by reward functions, with a fresh LoRA adapter on the shared
4-bit base (the KL reference is the base with the adapter disabled).

An eval is ours, deterministic so trials compare on equal terms: one greedy completion of
`max_completion_length` tokens per fixed validation prompt, scored by the sweep's reward functions.
- `reward`: mean over prompts of the weighted sum of the functions (trl's sum), `reward_std` its spread
  across prompts, `reward_<function>` each function's mean;
- `kl`: per-token KL(policy || base) on those completions, trl's k3 estimator, token-weighted;
- `clipped_ratio`: share of completions that hit max_completion_length without EOS.
Training itself samples `num_generations` completions per prompt at `temperature`, as trl does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from harness.core.spec import TrialSpec
from harness.tasks import rewards
from harness.trial import session
from harness.trial.evaluation import generate_ids
from harness.trial.recipes.common import Measure, training_args
from harness.trial.recipes.lora import adapt, lora_config
from harness.trial.recipes.scoring import score
from harness.trial.tokens import encode_prompts

DEFAULT_BETA = 0.0  # trl's: no reference forward unless asked


def grpo_config(spec: TrialSpec, fixtures: session.Fixtures, cuda: bool) -> Any:
    from trl import GRPOConfig

    t = spec.training
    return GRPOConfig(
        **training_args(spec, fixtures, cuda),
        num_generations=t.num_generations,
        temperature=t.temperature,
        beta=DEFAULT_BETA if t.beta is None else t.beta,
        max_completion_length=t.max_completion_length,
        reward_weights=t.reward_weights,
        disable_dropout=False,  # lora_dropout is a searched setting and must act
        remove_unused_columns=False,  # the other columns go to the reward functions
        log_completions=False,
    )


def reward_functions(spec: TrialSpec) -> list[rewards.RewardFn]:
    folder = Path(spec.sweep.source_path).parent if spec.sweep.source_path else None
    return rewards.load(spec.training.reward_functions, folder)


def build(spec: TrialSpec, fixtures: session.Fixtures, callbacks: list[Any]) -> Any:
    from trl import GRPOTrainer

    train = fixtures.train
    if "completion" in train.column_names:  # a reference answer is for our eval, not a prompt column
        train = train.remove_columns("completion")
    wrapped = adapt(spec, fixtures.model)  # model.backend unsloth: Unsloth's own LoRA
    return GRPOTrainer(
        model=wrapped or fixtures.model,
        reward_funcs=list[Any](reward_functions(spec)),
        args=grpo_config(spec, fixtures, fixtures.device == "cuda"),
        train_dataset=train,
        processing_class=fixtures.tokenizer,
        # trl wraps the base: the reference is the base, adapter disabled
        peft_config=None if wrapped is not None else lora_config(spec, fixtures.model),
        callbacks=callbacks,
    )


def measure(trainer: Any, fixtures: session.Fixtures, spec: TrialSpec) -> Measure:
    t = spec.training
    functions = reward_functions(spec)
    weights = t.reward_weights or [1.0] * len(functions)
    rows = fixtures.eval_rows
    prompts = [r["prompt"] for r in rows]
    prompt_ids = encode_prompts(fixtures.tokenizer, prompts)
    columns = (
        {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("prompt", "completion")} if rows else {}
    )

    def run(model: Any, generate: bool) -> dict[str, float]:
        tok = fixtures.tokenizer
        outs = generate_ids(model, tok, prompt_ids, t.max_completion_length, spec.sweep.evaluation.batch_size)
        ids = [new for new, _ in outs]
        texts = [tok.decode(new, skip_special_tokens=True) for new in ids]
        total = [0.0] * len(texts)
        metrics: dict[str, float] = {}
        for fn, w in zip(functions, weights, strict=True):
            values = fn(prompts=prompts, completions=texts, completion_ids=ids, **columns)
            finite = [float(v) for v in values if v is not None]
            metrics[f"reward_{fn.__name__}"] = sum(finite) / len(finite) if finite else math.nan
            total = [a + (w * float(v) if v is not None else 0.0) for a, v in zip(total, values, strict=True)]
        mean = sum(total) / len(total) if total else math.nan
        metrics["reward"] = mean
        metrics["reward_std"] = (
            math.sqrt(sum((x - mean) ** 2 for x in total) / len(total)) if total else math.nan
        )
        metrics["clipped_ratio"] = sum(not done for _, done in outs) / len(outs) if outs else math.nan
        metrics["kl"] = kl(model, prompt_ids, ids, tok, spec.sweep.evaluation.batch_size)
        if generate and fixtures.generation_rows:
            metrics.update(score(model, fixtures, spec, fixtures.generation_rows)[0])
        return metrics

    return run


def kl(
    model: Any, prompt_ids: list[list[int]], completions: list[list[int]], tok: Any, batch_size: int
) -> float:
    """Token-weighted mean of trl's k3 estimate, exp(ref - pol) - (ref - pol) - 1, over the completions'
    tokens; the reference is the same model with the adapter disabled."""
    policy = _completion_logps(model, prompt_ids, completions, tok, batch_size)
    with model.disable_adapter():
        ref = _completion_logps(model, prompt_ids, completions, tok, batch_size)
    total, n = 0.0, 0
    for p, r in zip(policy, ref, strict=True):
        d = r - p
        total += float((torch.exp(d) - d - 1).sum())
        n += d.numel()
    return total / n if n else 0.0


def _completion_logps(
    model: Any, prompt_ids: list[list[int]], completions: list[list[int]], tok: Any, batch_size: int
) -> list[torch.Tensor]:
    """Per-token log-probabilities of each completion after its prompt (right-padded batches)."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(model.parameters()).device
    pairs = list(zip(prompt_ids, completions, strict=True))
    out: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(pairs), batch_size):
                batch = pairs[b : b + batch_size]
                width = max(len(p) + len(c) for p, c in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, (p, c) in enumerate(batch):
                    ids[i, : len(p) + len(c)] = torch.tensor(p + c)
                    mask[i, : len(p) + len(c)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                targets = ids[:, 1:].to(device).unsqueeze(-1)
                logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, targets)[..., 0]
                # the token at position k is predicted at k-1: a completion after a prompt of length n
                # is read from positions n-1 .. n-2+len(c)
                out += [logps[i, len(p) - 1 : len(p) - 1 + len(c)].cpu() for i, (p, c) in enumerate(batch)]
    finally:
        model.train(was_training)
    return out
