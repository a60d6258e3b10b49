"""The QLoRA recipe on the real builtin model: 4-bit base, LoRA adapters, shared base left untouched."""

from __future__ import annotations

import math

import bitsandbytes as bnb
import pytest
import torch

from harness.core.spec import TrialSpec
from harness.trial import cache, session
from harness.trial.recipe import adapter_state, finetune, lora_config


def spec_for(cfg, tmp_path, number=0, **params) -> TrialSpec:
    return TrialSpec.build(cfg, params, number, tmp_path / f"trial-{number}")


def base_outputs(fx) -> torch.Tensor:
    """What the base computes on a fixed batch: the test of 'unchanged' that matters. (Not state_dict():
    see recipe.adapter_state for why reading it would itself disturb a repacked 4-bit weight.)"""
    batch = fx.eval_batches[0]
    fx.model.eval()
    with torch.no_grad():
        return fx.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.clone()


def base_params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_trial_trains_lora_on_a_4bit_base_and_leaves_the_base_unchanged(tiny, tmp_path):
    cfg = tiny()
    fx = session.get(cfg)
    linears = [m for m in fx.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears, "base Linear layers must be bitsandbytes Linear4bit (QLoRA)"
    assert all(m.weight.quant_type == "nf4" for m in linears)
    outputs_before = base_outputs(fx)  # also triggers bitsandbytes' one-time CPU repack of the weights
    before = base_params(fx.model)

    from peft import get_peft_model

    spec = spec_for(cfg, tmp_path, learning_rate=2e-3)
    seen: dict[str, torch.Tensor] = {}
    # Capture the adapter's initial weights the same way finetune creates them (same seed).
    from transformers import set_seed

    set_seed(spec.seed)
    peft_model = get_peft_model(fx.model, lora_config(spec, fx.model))
    seen.update(adapter_state(peft_model))
    peft_model.unload()

    evals: list[tuple[int, dict]] = []
    result = finetune(
        spec, fx, lambda step, m: evals.append((step, m)) or False, save_adapter_to=tmp_path / "a"
    )

    assert [s for s, _ in evals] == [4, 8, 12]
    assert result.steps_run == 12 and not result.pruned
    assert math.isfinite(result.value) and result.value == min(m["eval_loss"] for _, m in evals)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(result.metrics["eval_loss"]))
    # The base: same modules, same (quantized) bytes, no LoRA left behind.
    after = base_params(fx.model)
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in fx.model.parameters())
    assert torch.equal(base_outputs(fx), outputs_before)
    assert not any("lora" in name for name, _ in fx.model.named_modules())
    assert all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    # The adapter learned: loss went down and LoRA B (zero at init) moved away from zero.
    assert evals[-1][1]["eval_loss"] < evals[0][1]["eval_loss"]
    assert any("lora_B" in k for k in seen)
    assert all(torch.count_nonzero(v) == 0 for k, v in seen.items() if "lora_B" in k)
    from safetensors.torch import load_file

    trained = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    b_weights = [v for k, v in trained.items() if "lora_B" in k]
    assert len(b_weights) == len([k for k in seen if "lora_B" in k])
    assert all(torch.count_nonzero(v) > 0 for v in b_weights), "training must move every LoRA B off zero"


def test_trial_results_do_not_depend_on_what_ran_before(tiny, tmp_path):
    """Isolation: with the same seed, a trial's metrics are identical first or after other trials."""
    cfg = tiny("budget.max_steps=8")
    fx = session.get(cfg)
    builds = cache.BUILDS["base_model"]
    first = finetune(spec_for(cfg, tmp_path, 5, learning_rate=1e-3, r=4), fx)
    finetune(spec_for(cfg, tmp_path, 6, learning_rate=3e-3, r=16, lora_dropout=0.1), fx)
    again = finetune(spec_for(cfg, tmp_path, 5, learning_rate=1e-3, r=4), fx)
    assert again.history == first.history
    assert again.metrics == first.metrics
    assert cache.BUILDS["base_model"] == builds, "a trial must not reload the base model"


def test_pruning_hook_stops_the_trial(tiny, tmp_path):
    cfg = tiny()
    result = finetune(spec_for(cfg, tmp_path), session.get(cfg), lambda step, m: step >= 4)
    assert result.pruned and result.steps_run == 4 and len(result.history) == 1


def test_early_stopping_stops_when_the_metric_stalls(tiny, tmp_path):
    # lr so small nothing improves by the threshold: patience 1 ends the trial at the second eval.
    cfg = tiny("early_stopping.patience=1", "early_stopping.threshold=0.5")
    result = finetune(spec_for(cfg, tmp_path, learning_rate=1e-6), session.get(cfg))
    assert result.stopped_early and result.steps_run == 8
    # The trial's best is the true best of its evals, even a gain smaller than the threshold.
    losses = [h["eval_loss"] for h in result.history]
    assert result.best_step == result.history[losses.index(min(losses))]["step"]


def test_value_best_step_and_adapter_follow_the_true_best_not_the_threshold(tiny, tmp_path):
    """early_stopping.threshold (min_delta) only decides patience: improvements smaller than it still make
    the new best value, best step and kept adapter."""
    from peft import PeftModel

    from harness.trial.evaluation import token_nll

    cfg = tiny("early_stopping.patience=10", "early_stopping.threshold=1.0")
    fx = session.get(cfg)
    result = finetune(spec_for(cfg, tmp_path, learning_rate=2e-3), fx, save_adapter_to=tmp_path / "a")
    losses = [h["eval_loss"] for h in result.history]
    assert [h["step"] for h in result.history] == [4, 8, 12]
    # The last eval is the best, by less than the threshold (the old rule recorded step 8's value).
    assert losses[2] < losses[1] < losses[0] and losses[1] - losses[2] < 1.0
    assert result.value == min(losses) == losses[2]
    assert result.best_step == 12
    assert result.metrics["eval_loss"] == result.value
    # The adapter saved is the best one: put back on the base, it scores the best eval_loss again.
    model = PeftModel.from_pretrained(fx.model, str(tmp_path / "a"))
    try:
        nll, n = token_nll(model, fx.eval_batches)
    finally:
        model.unload()
    # Equal up to float noise (~1e-5), and far closer to the best eval than to any other eval.
    assert nll / n == pytest.approx(result.value, rel=1e-4)
    assert abs(nll / n - result.value) < (losses[1] - losses[2]) / 10


def test_threshold_counts_small_gains_as_no_improvement_for_patience(tiny, tmp_path):
    cfg = tiny("early_stopping.patience=1", "early_stopping.threshold=3.0")
    result = finetune(spec_for(cfg, tmp_path, learning_rate=2e-3), session.get(cfg))
    losses = [h["eval_loss"] for h in result.history]
    # Step 8 improves on step 4, by less than 3.0: a bad eval for patience, yet the new best.
    assert 0 < losses[0] - losses[1] < 3.0
    assert result.stopped_early and result.steps_run == 8
    assert result.value == losses[1] and result.best_step == 8
