"""DPO and GRPO trials on the real tiny model: they learn, they leave the 4-bit base as they found it, and
a killed DPO trial resumes from its checkpoint. Plus the row formats and reward functions they read."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import DPO_TINY, ROOT
from optuna.trial import TrialState

from harness.core import trialdir
from harness.core.spec import TrialSpec
from harness.errors import DataError, RewardFailed
from harness.study.run import real_recipe, run_sweep
from harness.sweepfile.load import load_sweep
from harness.tasks import pricer as prices
from harness.tasks import rewards
from harness.trial import formats, session
from harness.trial.recipe import finetune, fresh_adapter_metrics

GRPO_TINY = [*DPO_TINY, "budget.max_steps=8", "dataset.max_eval_rows=16", "training.max_completion_length=6"]


def dpo(tmp_path, *overrides):
    return load_sweep(ROOT / "sweeps/pricer-dpo.yaml", [f"results_dir={tmp_path}", *DPO_TINY, *overrides])


def grpo(tmp_path, *overrides):
    return load_sweep(ROOT / "sweeps/pricer-grpo.yaml", [f"results_dir={tmp_path}", *GRPO_TINY, *overrides])


def base_outputs(fx) -> torch.Tensor:
    ids = fx.tokenizer(["How much does this cost?"], return_tensors="pt")["input_ids"]
    fx.model.eval()
    with torch.no_grad():
        return fx.model(input_ids=ids).logits.clone()


def assert_base_restored(fx, outputs_before):
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in fx.model.modules()), "LoRA layers left behind"
    assert "forward" not in fx.model.__dict__, "trl's fused-head forward wrapper left on the shared base"
    assert torch.equal(base_outputs(fx), outputs_before), "the 4-bit base computes something else"


def test_a_dpo_trial_ranks_chosen_above_rejected_and_leaves_the_base_unchanged(tmp_path):
    cfg = dpo(tmp_path)
    fx = session.get(cfg)
    before = base_outputs(fx)
    spec = TrialSpec.build(
        cfg, {"learning_rate": 3e-3, "beta": 0.1, "loss_type": "sigmoid"}, 0, tmp_path / "t0"
    )
    untrained = fresh_adapter_metrics(spec, fx)
    assert_base_restored(fx, before)
    assert not (tmp_path / "t0").exists()  # measuring the base leaves nothing in the results folder
    # The base is its own reference: every reward is 0, so no pair is ranked right and the loss is log 2.
    assert untrained["rewards_accuracy"] == 0.0
    assert math.isclose(untrained["eval_loss"], math.log(2), rel_tol=1e-4)

    steps: list[int] = []
    result = finetune(spec, fx, lambda step, m: steps.append(step) or False)
    assert steps == [4, 8, 12] and not result.pruned
    best = max(result.history, key=lambda h: h["rewards_accuracy"])
    assert result.value == best["rewards_accuracy"] > untrained["rewards_accuracy"]
    assert result.metrics["rewards_margin"] > 0
    assert {"mae", "hit_rate"} <= set(result.metrics)  # the task's generation metrics too
    assert_base_restored(fx, before)


def test_a_grpo_trial_raises_the_validation_reward_and_leaves_the_base_unchanged(tmp_path):
    cfg = grpo(tmp_path)
    fx = session.get(cfg)
    before = base_outputs(fx)
    params = {"learning_rate": 5e-3, "num_generations": 4, "temperature": 1.0, "beta": 0.04, "r": 8}
    spec = TrialSpec.build(cfg, params, 0, tmp_path / "t0")
    untrained = fresh_adapter_metrics(spec, fx)
    assert_base_restored(fx, before)
    assert untrained["kl"] == 0.0  # the fresh adapter is the base

    result = finetune(spec, fx)
    assert [h["step"] for h in result.history] == [4, 8]
    assert result.value is not None and result.value > untrained["reward"]
    last = result.history[-1]
    # The reward is the weighted sum of the functions (weights 1.0 and 0.2), averaged over prompts.
    weighted = last["reward_price_accuracy"] + 0.2 * last["reward_number_format"]
    assert math.isclose(last["reward"], weighted, rel_tol=1e-9)
    assert last["kl"] > 0 and 0.0 <= last["clipped_ratio"] <= 1.0
    assert_base_restored(fx, before)


def test_a_killed_dpo_trial_resumes_from_its_checkpoint(tmp_path):
    cfg = dpo(tmp_path, "budget.n_trials=1", "budget.max_steps=8")
    real = real_recipe(cfg)
    evals: list[tuple[int, int]] = []

    def killed_at_step_8(spec, on_eval):
        def hook(step, metrics):
            evals.append((spec.number, step))
            if spec.number == 0 and step == 8:
                raise KeyboardInterrupt
            return on_eval(step, metrics)

        return real(spec, hook)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, recipe=killed_at_step_8)
    ckpt = trialdir.find_checkpoint(trialdir.trial_dir(cfg.study_dir, 0) / "checkpoint")
    assert ckpt is not None and trialdir.checkpoint_step(ckpt) == 4

    study = run_sweep(cfg, recipe=killed_at_step_8).study
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry_of"] == 0
    assert evals == [(0, 4), (0, 8), (1, 8)]  # the retry continues at step 4: its first eval is step 8
    log = trialdir.read_eval_history(trialdir.trial_dir(cfg.study_dir, 1))
    assert [r["step"] for r in log] == [4, 8]
    assert all("rewards_accuracy" in r for r in log)


def test_a_raising_reward_function_fails_that_trial_with_its_name(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def broken(prompts, completions, **kw):\n    raise KeyError('price')\n"
        "def short(prompts, completions, **kw):\n    return [1.0]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, why in (("broken", "raised KeyError"), ("short", "returned 1 rewards for")):
        cfg = grpo(
            tmp_path / name,
            "budget.n_trials=1",
            "budget.max_steps=2",
            "budget.eval_steps=2",
            f"training.reward_functions=[my_rewards:{name}]",
            "training.reward_weights=null",
            "expect={}",
        )
        trial = run_sweep(cfg).study.trials[0]
        assert trial.state == TrialState.FAIL
        assert f"reward function {name} {why}" in trial.user_attrs["fail_reason"]


# ----------------------------------------------------------------------------------------------------
# Rows and rewards (no model)


class ChatTokenizer:
    """What formats.py needs of a tokenizer: a chat template and a BOS token."""

    chat_template = "yes"
    bos_token = "<s>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **kw):
        text = "<s>" + "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return text + ("<|assistant|>\n" if add_generation_prompt else "")


def test_preference_rows_standard_conversational_and_implicit_prompt():
    user = [{"role": "user", "content": "Price of a lamp?"}]
    rows = [
        {"prompt": "Q: lamp?\nA: ", "chosen": "40", "rejected": "400", "price": 40},
        {"prompt": user, "chosen": [{"role": "assistant", "content": "40"}],
         "rejected": [{"role": "assistant", "content": "400"}]},
        {"chosen": [*user, {"role": "assistant", "content": "40"}],
         "rejected": [*user, {"role": "assistant", "content": "400"}]},
    ]  # fmt: skip
    out = formats.format_rows(rows, "dpo", "auto", ChatTokenizer(), "pairs.jsonl")
    assert out[0] == {
        "price": 40,
        "prompt": "Q: lamp?\nA: ",
        "chosen": "40",
        "rejected": "400",
        "completion": "40",
    }
    # Conversational: rendered with the chat template, BOS left to the trainer's tokenizer.
    assert out[1]["prompt"] == "<|user|>\nPrice of a lamp?\n<|assistant|>\n"
    assert out[1]["chosen"] == "40\n" and out[1]["rejected"] == "400\n"
    assert out[2] == out[1]  # the implicit prompt is the shared start of chosen and rejected


def test_a_file_that_does_not_fit_is_an_error_and_a_row_that_does_not_is_its_reason():
    with pytest.raises(DataError, match=r"no 'rejected' column; found columns: prompt, chosen"):
        formats.format_rows([{"prompt": "p", "chosen": "c"}], "dpo", "auto", None, "pairs.jsonl")
    rows = [
        {"prompt": "p", "chosen": "c", "rejected": "r"},
        {"prompt": "p", "chosen": "c", "rejected": None},
        {"prompt": "p", "chosen": " ", "rejected": ""},
        {"prompt": ["p"], "chosen": ["c"], "rejected": ["r"]},
        {"prompt": "p", "chosen": {"text": "c"}, "rejected": "r"},
        {"prompt": "p", "chosen": [], "rejected": "r"},
    ]
    out = formats.format_rows(rows, "dpo", "auto", None, "pairs.jsonl")
    assert out[1:] == [
        "no rejected",
        "empty chosen and rejected",
        "a list that is not {role, content} messages",
        "chosen is a dict",
        "prompt/chosen/rejected mix text and message lists",
    ]
    grpo = formats.format_rows(
        [{"prompt": "  ", "answer": 3}, {"answer": 4}, {"prompt": 5}, {"prompt": [{"content": "hi"}]}],
        "grpo",
        "auto",
        None,
        "prompts.jsonl",
    )
    assert grpo == [
        "empty prompt",
        "no prompt",
        "prompt is a number",
        "prompt is a list but not of {role, content} messages",
    ]
    with pytest.raises(DataError, match="no chat template"):
        formats.format_rows([{"prompt": [{"role": "user", "content": "hi"}]}], "grpo", "auto", None, "p")


def test_prompt_only_rows_keep_the_columns_the_reward_functions_read():
    rows = [{"prompt": [{"role": "user", "content": "2+2?"}], "answer": 4, "completion": "4"}]
    (row,) = formats.format_rows(rows, "grpo", "auto", ChatTokenizer(), "p")
    assert row == {"answer": 4, "prompt": "<|user|>\n2+2?\n<|assistant|>\n", "completion": "4"}


def test_builtin_pairs_reject_a_price_outside_the_green_and_orange_bands(tmp_path):
    from harness.trial.datasets import load_splits

    splits = load_splits(dpo(tmp_path, "dataset.max_train_rows=null"), tokenizer=None)
    rows = [r for ds in splits.as_dict().values() for r in ds]
    assert len(rows) == 5000
    for r in rows:
        assert r["chosen"] == r["completion"] and prices.parse_price(r["chosen"]) == round(r["price"])
        assert prices.band(prices.parse_price(r["rejected"]), r["price"]) == "red", r


def test_price_accuracy_grades_by_band_and_number_format_by_shape():
    got = prices.price_accuracy([""] * 5, ["100.00", "125", "170", "900", "no idea"], price=[100.0] * 5)
    assert got == [1.0, 1.0, 0.5, 0.1, 0.0]  # green, green (< $40), orange, red, unparseable
    assert rewards.number_format([""] * 3, ["129.00", "129.00 dollars", "about 129"]) == [1.0, 0.5, 0.0]
    chat = [[{"role": "assistant", "content": "100"}]]
    assert prices.price_accuracy([""], chat, price=[100.0]) == [1.0]


def test_checked_reward_functions_name_themselves_when_they_break():
    wrapped = rewards.checked(lambda prompts, completions, **kw: [math.nan] * len(completions), "nanny")
    assert wrapped.__name__ == "nanny"
    with pytest.raises(RewardFailed, match="reward function nanny returned a non-number"):
        wrapped(prompts=["p"], completions=["c"])
    ok = rewards.checked(rewards.number_format, "number_format")
    assert ok(prompts=["p"], completions=["1"], price=[1.0]) == [1.0]


def test_the_shipped_dpo_and_grpo_sweeps_load_with_their_trainers():
    d = load_sweep(ROOT / "sweeps/pricer-dpo.yaml")
    g = load_sweep(ROOT / "sweeps/pricer-grpo.yaml")
    assert (d.trainer, d.metric.name, d.metric.goal) == ("dpo", "rewards_accuracy", "maximize")
    assert (g.trainer, g.metric.name, g.metric.goal) == ("grpo", "reward", "maximize")
    assert {"beta", "loss_type"} <= set(d.parameters)
    assert {"num_generations", "temperature", "beta"} <= set(g.parameters)
    assert json.dumps(g.training.reward_functions) == '["price_accuracy", "number_format"]'


def test_sweep_best_then_train_promotes_a_dpo_config(tmp_path, capsys):
    import yaml

    from harness.cli import main

    cfg = dpo(tmp_path, "budget.n_trials=1", "budget.max_steps=4", "budget.eval_steps=2", "train.max_steps=4",
              "train.eval_steps=2", "parameters={beta: {value: 0.1}, learning_rate: {value: 0.003}}",
              "search_space=null")  # fmt: skip
    run_sweep(cfg)
    best = tmp_path / "best.yaml"
    assert main(["best", cfg.name, "--results-dir", str(tmp_path), "--export", str(best)]) == 0
    exported = yaml.safe_load(best.read_text())
    assert exported["trainer"] == "dpo" and exported["parameters"]["beta"] == {"value": 0.1}
    assert main(["train", str(best)]) == 0
    folder = tmp_path / f"{cfg.name}-best" / "promoted"
    assert (folder / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    assert "rewards_accuracy" in metrics and "test_mae" in metrics
