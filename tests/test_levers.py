"""The QLoRA levers: target_modules presets per architecture, quantization as a searched choice (each trial
on a base of its kind, a bounded number of bases per worker), rsLoRA's scaling, LoRA+'s learning rates, and
what each trial records it really trained (params.json's lora_modules and base_layer, the report's
columns)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, SWEEP, TINY

from harness.core.spec import TrialSpec
from harness.errors import ConfigError
from harness.sweepfile import levers
from harness.sweepfile.load import load_sweep

ATTENTION = ["self_attn.k_proj", "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj"]
MLP = ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj"]


def random_model(kind: str):
    """A Llama or a GPT-2 of two layers, randomly initialised from its config: no hub, no weights."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if kind == "llama":
        config = LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
        )
    else:
        config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    return AutoModelForCausalLM.from_config(config)


def sweep_file(tmp_path: Path, **changes) -> Path:
    """sweeps/pricer.yaml with `changes` deep-merged in (training: {...} updates, parameters: {...} added)."""
    data = yaml.safe_load(SWEEP.read_text())
    data["search_space"] = str(ROOT / "search_spaces/qlora-tiny.yaml")
    data["results_dir"] = str(tmp_path)
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------------------------------
# target_modules: presets resolved on the architecture


def test_presets_resolve_on_a_llama_by_its_module_names():
    from harness.trial.recipes import lora

    model = random_model("llama")
    linear, _ = lora.layers(model)
    assert "lm_head" not in linear  # the output head is never a preset's
    for arch in ("llama", None):  # the table, and the path rule for an architecture it does not know
        assert levers.block_names(levers.select("attention", linear, arch)) == ATTENTION
        assert levers.block_names(levers.select("mlp", linear, arch)) == MLP
    assert levers.block_names(levers.select("all-linear", linear, "llama")) == sorted(ATTENTION + MLP)
    assert len(levers.select("attention", linear, "llama")) == 2 * 4  # every layer's, not one block's
    assert levers.select(["q_proj", "v_proj"], linear, "llama") == [
        f"model.layers.{i}.self_attn.{n}" for i in range(2) for n in ("q_proj", "v_proj")
    ]


def test_gpt2_c_proj_is_attention_or_mlp_by_its_path():
    """GPT-2 names both projections c_proj: attn.c_proj belongs to attention, mlp.c_proj to the MLP."""
    from harness.trial.recipes import lora

    model = random_model("gpt2")
    linear, adaptable = lora.layers(model)  # Conv1D layers are GPT-2's linear layers
    for arch in ("gpt2", None):
        assert levers.block_names(levers.select("attention", linear, arch)) == ["attn.c_attn", "attn.c_proj"]
        assert levers.block_names(levers.select("mlp", linear, arch)) == ["mlp.c_fc", "mlp.c_proj"]
    assert levers.block_names(levers.select(["mlp.c_proj"], linear, "gpt2")) == ["mlp.c_proj"]
    assert levers.unmatched(["c_attn", "wte", "c_atn"], adaptable) == ["c_atn"]

    from peft import get_peft_model

    spec = TrialSpec.build(load_sweep(SWEEP), {"target_modules": "attention"}, 0, Path("unused"))
    peft_model = get_peft_model(model, lora.lora_config(spec, model))
    assert lora.trained(peft_model) == {
        "lora_modules": ["attn.c_attn", "attn.c_proj"],
        "base_layer": "Conv1D",
    }


@pytest.mark.parametrize("choice", ["mlp", ["q_proj", "v_prj"]])
def test_a_choice_that_matches_nothing_is_an_input_error_before_the_study(choice, tmp_path):
    """On the loaded base (what QLoRARecipe checks before the study is opened): an architecture whose
    layers sit under no attention/MLP path, and a misspelled name."""
    from torch import nn

    from harness.trial.recipes import lora

    class Odd(nn.Module):  # a model whose linear layers are named by neither rule
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(nn.ModuleDict({"q_proj": nn.Linear(4, 4)}) for _ in range(2))

    cfg = load_sweep(SWEEP, [f"results_dir={tmp_path}"]).model_copy(
        update={"training": load_sweep(SWEEP).training.model_copy(update={"target_modules": choice})}
    )
    with pytest.raises(ConfigError, match="matches no layer of this base") as e:
        lora.check_targets(Odd(), cfg)
    assert "its linear layers are q_proj" in str(e.value)


def test_the_builtin_base_is_the_llama_the_table_says():
    from harness.builtin.tiny_model import ensure_tiny_model

    config = json.loads((ensure_tiny_model() / "config.json").read_text())
    assert config["model_type"] == levers.BUILTIN_MODEL_TYPE


def test_a_misspelled_module_is_an_error_at_load_for_a_known_architecture(tmp_path):
    path = sweep_file(tmp_path, training={"target_modules": ["q_proj", "v_prj"]})
    with pytest.raises(
        ConfigError, match=r"'v_prj' is no layer of a llama model \(did you mean 'v_proj'\?\)"
    ):
        load_sweep(path)
    path = sweep_file(tmp_path, parameters={"target_modules": {"values": ["attention", ["q_proj", "vproj"]]}})
    with pytest.raises(ConfigError, match="parameters.target_modules: 'vproj' is no layer"):
        load_sweep(path)


def test_target_modules_and_quantization_are_searchable_and_each_trial_gets_its_own(tmp_path):
    path = sweep_file(
        tmp_path,
        parameters={
            "target_modules": {"values": ["attention", ["q_proj", "v_proj"], "all-linear"]},
            "quantization": {"values": ["nf4", "int8"]},
        },
    )
    cfg = load_sweep(path)
    assert cfg.parameters["target_modules"].values == ["attention", "q_proj,v_proj", "all-linear"]  # scalars
    spec = TrialSpec.build(cfg, {"target_modules": "q_proj,v_proj", "quantization": "int8"}, 3, tmp_path)
    assert spec.training.target_modules == ["q_proj", "v_proj"]
    assert spec.model.quantization == "int8" and cfg.model.quantization == "nf4"
    assert TrialSpec.build(cfg, {}, 4, tmp_path).model is cfg.model
    bad = sweep_file(tmp_path, parameters={"quantization": {"values": ["nf4", "int4"]}})
    with pytest.raises(ConfigError, match="parameters.quantization: value 'int4' is invalid"):
        load_sweep(bad)


# ----------------------------------------------------------------------------------------------------
# The LoRA variants: one alpha form, rsLoRA, LoRA+


def test_both_alpha_forms_at_once_are_an_error_unless_they_agree(tmp_path):
    both = sweep_file(tmp_path, training={"lora_alpha": 32})  # the space searches lora_alpha_multiple
    with pytest.raises(ConfigError, match="give lora_alpha or lora_alpha_multiple, not both"):
        load_sweep(both)
    # What `sweep best --export` writes: the trained alpha and the constants it came from, equal.
    agree = sweep_file(
        tmp_path,
        training={"lora_alpha": 32, "r": 16},
        search_space=None,
        parameters={"r": {"value": 16}, "lora_alpha_multiple": {"value": 2}},
    )
    assert load_sweep(agree).training.lora_alpha == 32
    absolute = sweep_file(tmp_path, search_space=None, parameters={"lora_alpha": {"values": [8, 64]}})
    spec = TrialSpec.build(load_sweep(absolute), {"lora_alpha": 64}, 0, tmp_path)
    assert spec.lora_alpha == 64


def test_loraplus_is_refused_with_an_optimizer_that_builds_its_own_groups(tmp_path):
    path = sweep_file(
        tmp_path,
        training={"loraplus_lr_ratio": 16, "optim": "galore_adamw"},
        search_space=None,
        parameters={"r": {"values": [4, 8]}},
    )
    with pytest.raises(ConfigError, match="training.optim: 'galore_adamw' builds its own parameter groups"):
        load_sweep(path)
    with pytest.raises(ConfigError, match="loraplus_lr_ratio"):
        load_sweep(sweep_file(tmp_path, parameters={"loraplus_lr_ratio": {"values": [0.5, 4]}}))
    ok = sweep_file(tmp_path, parameters={"loraplus_lr_ratio": {"values": [None, 16]}, "use_rslora": True})
    assert load_sweep(ok).parameters["loraplus_lr_ratio"].values == [None, 16]


@pytest.mark.parametrize("rslora", [False, True])
def test_rslora_scales_the_adapter_by_alpha_over_sqrt_r(rslora):
    from peft import get_peft_model

    from harness.trial.recipes import lora

    model = random_model("llama")
    params = {"r": 16, "lora_alpha": 8, "use_rslora": rslora, "target_modules": "attention"}
    spec = TrialSpec.build(load_sweep(SWEEP), params, 0, Path("unused"))
    peft_model = get_peft_model(model, lora.lora_config(spec, model))
    scaling = peft_model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"]
    assert scaling == pytest.approx(8 / math.sqrt(16) if rslora else 8 / 16)


def test_loraplus_gives_b_ratio_times_the_learning_rate_in_a_real_trial(tiny, tmp_path, monkeypatch):
    """A real trial with the default paged_adamw_32bit: B's groups at ratio x lr from the start, and the
    scheduler (cosine, warmup) keeps the ratio at every step."""
    from harness.trial import session
    from harness.trial.recipe import finetune
    from harness.trial.recipes import lora

    made = []

    def capture(trainer, spec):
        made.append(original(trainer, spec))
        return made[-1]

    original = lora.loraplus_optimizer
    monkeypatch.setattr(lora, "loraplus_optimizer", capture)
    cfg = tiny("budget.max_steps=8")
    params = {"r": 8, "learning_rate": 2e-3, "loraplus_lr_ratio": 16.0, "optim": "paged_adamw_32bit"}
    result = finetune(TrialSpec.build(cfg, params, 0, tmp_path / "t"), session.get(cfg))
    assert result.steps_run == 8 and math.isfinite(result.value)
    (optimizer,) = made
    assert type(optimizer).__module__.startswith("bitsandbytes")  # the optim asked for, not a stand-in
    groups = [g for g in optimizer.param_groups if g["params"]]
    a = [g for g in groups if g["initial_lr"] == pytest.approx(2e-3)]
    b = [g for g in groups if g["initial_lr"] == pytest.approx(2e-3 * 16)]
    assert len(a) + len(b) == len(groups) and a and b
    a_params = [p for g in a for p in g["params"]]
    b_params = [p for g in b for p in g["params"]]
    assert len(a_params) == len(b_params) == 4 * 7  # one A and one B per adapted layer (all-linear)
    assert all(p.shape[0] == 8 for p in a_params) and all(p.shape[1] == 8 for p in b_params)  # A: r x in
    for g in b:  # after 8 scheduled steps, still exactly ratio x A's rate
        assert g["lr"] == pytest.approx(16 * a[0]["lr"]) and g["lr"] < g["initial_lr"]


# ----------------------------------------------------------------------------------------------------
# Quantization: each trial on a base of its kind, a bounded number of bases per worker


def test_session_cache_keeps_at_most_n_and_drops_the_least_recently_used():
    from harness.trial import cache

    @cache.session_fixture
    def thing(key, value):
        return object()

    a = thing({"k": "a"}, 1, keep=2)
    thing({"k": "b"}, 1, keep=2)
    assert thing({"k": "a"}, 1, keep=2) is a  # a is now the most recently used
    thing({"k": "c"}, 1, keep=2)  # drops b
    assert cache.held("thing") == 2 and thing({"k": "a"}, 1, keep=2) is a
    built = cache.BUILDS["thing"]
    thing({"k": "b"}, 1, keep=2)
    assert cache.BUILDS["thing"] == built + 1  # b was gone: built again


def test_alternating_nf4_and_int8_trials_each_train_on_their_own_base(tiny, tmp_path):
    """One base held at a time (max_cached_bases 1): every change of kind reloads, and no trial ever
    trains on the other kind's layers."""
    import bitsandbytes as bnb

    from harness.trial import cache, session
    from harness.trial.recipe import QLoRARecipe

    cfg = tiny(
        "budget.max_steps=2", "budget.eval_steps=2", "evaluation.samples=0", "model.max_cached_bases=1"
    )
    recipe = QLoRARecipe(cfg)
    kinds = {"nf4": bnb.nn.Linear4bit, "int8": bnb.nn.Linear8bitLt}
    built = cache.BUILDS["base_model"]  # the recipe loaded the sweep's own (nf4): trial 0 reuses it
    for number, quantization in enumerate(["nf4", "int8", "nf4", "int8"]):
        spec = TrialSpec.build(cfg, {"quantization": quantization}, number, tmp_path / f"t{number}")
        result = recipe(spec, lambda step, metrics: False)
        assert result.trained["base_layer"] == kinds[quantization].__name__
        assert cache.held("base_model") == 1 and cache.BUILDS["base_model"] == built + number
        layer = session.get(cfg, spec.model).model.model.layers[0].self_attn.q_proj
        assert type(layer) is kinds[quantization]  # and the base is left without adapters


# ----------------------------------------------------------------------------------------------------
# What it must show: a grid over target_modules x quantization, recorded as trained


def test_grid_over_target_modules_and_quantization_records_what_each_trial_trained(tmp_path):
    from harness.results.view import trials_frame, trials_table
    from harness.study.run import run_sweep

    overrides = [f"results_dir={tmp_path}", *TINY, "budget.max_steps=8", "evaluation.samples=0"]
    cfg = load_sweep(ROOT / "sweeps/levers.yaml", overrides)
    outcome = run_sweep(cfg)
    assert outcome.ran == 4
    recorded = {}
    for folder in sorted((tmp_path / "levers").glob("trial-*")):
        params = json.loads((folder / "params.json").read_text())
        chosen = (params["sampled"]["target_modules"], params["sampled"]["quantization"])
        recorded[chosen] = (params["lora_modules"], params["base_layer"], params["quantization"])
    layer = {"nf4": "Linear4bit", "int8": "Linear8bitLt"}
    modules = {"attention": ATTENTION, "all-linear": sorted(ATTENTION + MLP)}
    assert recorded == {
        (t, q): (modules[t], layer[q], q) for t in ("attention", "all-linear") for q in ("nf4", "int8")
    }
    frame = trials_frame(outcome.study).set_index(["param_target_modules", "param_quantization"])
    assert frame.loc[("attention", "int8"), "lora_modules"] == "attention (4)"
    assert frame.loc[("all-linear", "nf4"), "lora_modules"] == "attention+mlp (7)"
    assert frame.loc[("all-linear", "int8"), "base_layer"] == "Linear8bitLt"
    headers = [c.header for c in trials_table(outcome.study, "eval_loss", "minimize").columns]
    assert {"lora", "base"} <= set(headers)
