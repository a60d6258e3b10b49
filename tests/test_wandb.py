"""W&B sweep files as people write them: what `sweep run` accepts of W&B's own syntax (with a note), and
`sweep convert`, which maps a W&B sweep in a script's own names onto a harness sweep file.

tests/data/wandb/ holds real W&B sweep files from public repositories (each names its source); every one
must convert, account for each of its parameters in a printed line, and give a file that loads.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import FloatDistribution, IntDistribution

from harness import cli
from harness.errors import ConfigError
from harness.study.space import to_distribution
from harness.sweepfile import translate, wandb
from harness.sweepfile.convert import convert_file
from harness.sweepfile.load import load_sweep, read_yaml
from harness.sweepfile.schema import BudgetConfig

DATA = Path(__file__).parent / "data" / "wandb"
REAL = sorted(DATA.glob("*.yaml"))

W_AND_B_RUN = """\
program: train.py
project: qlora
entity: someone
method: bayes
run_cap: 3
metric: {name: eval/loss, goal: minimize, target: 0.5}
early_terminate: {type: hyperband, max_iter: 27, s: 2, eta: 3, strict: true}
parameters:
  learning_rate: {min: 0.0001, max: 0.003}
  r: {min: 4, max: 16}
  lora_dropout: {distribution: inv_log_uniform_values, min: 0.01, max: 0.1}
command:
  - ${env}
  - python
  - ${program}
  - ${args}
"""


def write(tmp_path: Path, text: str, name: str = "w2_sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------------------
# sweep run: W&B's keys, read as harness's


def test_a_wandb_file_with_harness_names_runs_as_written(tmp_path):
    cfg = load_sweep(write(tmp_path, W_AND_B_RUN))
    assert cfg.method == "tpe" and cfg.budget.n_trials == 3
    assert cfg.metric.name == "eval_loss" and cfg.metric.goal == "minimize"
    # W&B's rungs are 27/3 = 9 and 27/9 = 3: the first is harness's min_iter.
    assert cfg.early_terminate.type == "hyperband" and cfg.early_terminate.min_iter == 3
    assert to_distribution(cfg.parameters["learning_rate"]) == FloatDistribution(0.0001, 0.003)
    assert to_distribution(cfg.parameters["r"]) == IntDistribution(4, 16)  # W&B: ints -> int_uniform
    assert to_distribution(cfg.parameters["lora_dropout"]) == FloatDistribution(0.01, 0.1, log=True)
    notes = "\n".join(cfg.notes)
    assert "program, command, project, entity ignored" in notes
    assert "bayes" in notes and "TPE" in notes
    assert "run_cap: 3 read as budget.n_trials: 3" in notes
    assert "eval/loss" in notes and "eval_loss" in notes and "target ignored" in notes
    assert "max_iter 27, s 2 read as min_iter 3" in notes and "strict True ignored" in notes
    assert "notes" not in cfg.model_dump(), "notes are the run's, never exported with the config"


def test_sweep_run_says_each_note_once(tmp_path, capsys):
    path = write(tmp_path, W_AND_B_RUN)
    assert cli.main(["run", str(path), "--collect-only"]) == 0
    out = capsys.readouterr().out
    assert out.count("note:") == 6 and out.count("bayes") == 1
    assert "1 collected" in out


def test_a_key_of_another_shape_than_wandbs_is_still_an_error(tmp_path):
    """`program: {...}` is no W&B agent key: a typo must stay an error, not a note."""
    with pytest.raises(ConfigError, match="program: unknown key"):
        load_sweep(write(tmp_path, "program: {x: 1}\nparameters: {r: {values: [8]}}\n"))


@pytest.mark.parametrize(
    ("logged", "harness"),
    [
        ("eval/loss", "eval_loss"),
        ("eval/mae", "mae"),
        ("eval/perplexity", "perplexity"),
        ("eval/rewards/accuracies", "rewards_accuracy"),
        ("train/loss", "train_loss"),
        ("eval_loss", "eval_loss"),
    ],
)
def test_metrics_as_wandb_shows_them(logged, harness):
    assert wandb.metric_name(logged) == harness


def test_train_loss_is_read_and_then_refused_with_the_metric_harness_has(tmp_path):
    text = "metric: {name: train/loss}\nparameters: {r: {values: [8]}}\n"
    with pytest.raises(ConfigError, match="'train_loss' is not reported.*did you mean 'eval_loss'"):
        load_sweep(write(tmp_path, text))


def test_inv_log_uniform_is_a_log_uniform():
    """W&B: log(1/X) uniform on [-max, -min] (inv_log_uniform), or on [log 1/max, log 1/min] (_values)."""
    body, problem = wandb.parameter({"distribution": "inv_log_uniform", "min": 2, "max": 9})
    assert problem is None and body["distribution"] == "log_uniform_values"
    assert math.isclose(body["min"], math.exp(-9)) and math.isclose(body["max"], math.exp(-2))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"distribution": "normal", "mu": 0.0, "sigma": 1.0}, "W&B's normal is an unbounded normal"),
        ({"distribution": "q_log_uniform_values", "min": 8, "max": 64, "q": 8}, "a log scale with a step"),
        ({"distribution": "beta", "a": 2, "b": 2}, "a beta distribution"),
        ({"values": [8, 16], "probabilities": [0.5, 0.5]}, "probabilities"),
        ({"parameters": {"r": {"values": [8]}}}, "nested W&B `parameters:`"),
    ],
)
def test_what_optuna_cannot_sample_is_an_error_naming_the_parameter(tmp_path, body, says):
    path = write(tmp_path, "name: x\n")
    path.write_text(f"parameters:\n  r: {body}\n".replace("'", ""))
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert "parameters.r:" in str(e.value) and says in str(e.value)
    assert "sweep convert" in str(e.value) or "probabilities" in says or "beta" in says or "nested" in says


def test_a_scripts_name_in_sweep_run_names_harnesss_and_sweep_convert(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_sweep(write(tmp_path, "parameters: {lr: {values: [0.001]}}\n"))
    assert "parameters.lr: not a tunable setting (did you mean 'learning_rate'? `sweep convert`" in str(
        e.value
    )


# --------------------------------------------------------------------------------------------------------
# names and values people write


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("lr", "learning_rate"),
        ("learning-rate", "learning_rate"),
        ("learningRate", "learning_rate"),
        ("model.learning_rate", "learning_rate"),
        ("optimizer.lr", "learning_rate"),
        ("lora_r", "r"),
        ("lora-r", "r"),
        ("rank", "r"),
        ("lora.r", "r"),
        ("lora_alpha", "lora_alpha"),
        ("alpha", "lora_alpha"),
        ("dropout", "lora_dropout"),
        ("batch_size", "per_device_train_batch_size"),
        ("batch-size", "per_device_train_batch_size"),
        ("grad_accum", "gradient_accumulation_steps"),
        ("epochs", "epochs"),
        ("n_epochs", "epochs"),
        ("num_train_epochs", "epochs"),
        ("warmup", "warmup_ratio"),
        ("wd", "weight_decay"),
        ("optimizer", "optim"),
        ("scheduler", "lr_scheduler_type"),
        ("max_steps", "budget.max_steps"),
        ("model_name_or_path", "model.name"),
        ("attention_dropout", None),
        ("hidden_layer_size", None),
    ],
)
def test_names_people_give_their_settings(name, setting):
    assert wandb.lookup(name) == setting


@pytest.mark.parametrize(
    ("given", "optim"),
    [
        ("adam", "adamw_torch"),
        ("AdamW", "adamw_torch"),
        ("torch.optim.SGD", "sgd"),
        ("paged_adamw_8bit", "paged_adamw_8bit"),
        ("paged_adamw", "paged_adamw_32bit"),
        ("nag", None),
    ],
)
def test_optimizer_names(given, optim):
    assert translate.optimizer(given) == optim


@pytest.mark.parametrize(
    ("given", "scheduler"),
    [("cosine", "cosine"), ("CosineAnnealingLR", "cosine"), ("none", "constant"), ("step", None)],
)
def test_scheduler_names(given, scheduler):
    assert translate.scheduler(given) == scheduler


# --------------------------------------------------------------------------------------------------------
# sweep convert on real W&B sweep files


def convert(tmp_path: Path, src: Path, capsys, *extra: str) -> tuple[int, str, str, Path]:
    out = tmp_path / "sweep.yaml"
    code = cli.main(["convert", str(src), "-o", str(out), *extra])
    printed, err = capsys.readouterr()
    return code, printed, " ".join(err.split()), out  # stderr is wrapped at 80 columns


@pytest.mark.parametrize("src", REAL, ids=lambda p: p.stem)
def test_real_wandb_files_convert_to_files_that_load(src, tmp_path, capsys):
    assert len(REAL) >= 4
    code, printed, err, out = convert(tmp_path, src, capsys)
    assert code == 0, err
    names = [name for name, _ in translate.flatten(read_yaml(src)["parameters"])]
    lines = printed.splitlines()
    for name in names:  # every parameter accounted for, mapped or not
        assert [line for line in lines if line.startswith(f"  {name} ") and " -> " in line], name
    text = out.read_text()
    for line in lines:
        if "-> not mapped:" in line:  # and kept in the file, as a comment
            assert f"\n# {line.split()[0]}: " in text
    cfg = load_sweep(out)
    assert (
        cfg.parameters and cfg.model.name == "builtin:tiny-llama" and cfg.dataset.source == "builtin:pricer"
    )
    assert cfg.notes == (), "the converted file has no W&B keys left to note"
    assert "point them" in text.lower() or "point it" in text.lower()
    assert cli.main(["run", str(out), "--collect-only"]) == 0, capsys.readouterr().err


def test_a_typical_lora_sweep_gets_harnesss_names(tmp_path, capsys):
    code, printed, _, out = convert(tmp_path, DATA / "lora_script_names.yaml", capsys)
    assert code == 0
    cfg = load_sweep(out)
    assert set(cfg.parameters) == {"learning_rate", "r", "lora_alpha", "per_device_train_batch_size"}
    assert cfg.parameters["r"].values == [8, 16, 32]
    assert cfg.parameters["per_device_train_batch_size"].values == [4, 8, 16]
    assert to_distribution(cfg.parameters["learning_rate"]) == FloatDistribution(1e-5, 5e-4, log=True)
    assert cfg.method == "tpe" and cfg.metric.name == "eval_loss"
    assert "  lora-r     -> r: values [8, 16, 32]" in printed
    epochs = next(line for line in printed.splitlines() if line.startswith("  epochs"))
    if "epochs" in BudgetConfig.model_fields:
        assert "not mapped" in epochs and "one value" in epochs  # [1, 2, 3]: one budget for all trials
    else:
        assert "not mapped: harness budgets a trial in optimizer steps" in epochs
    assert "# epochs: {values: [1, 2, 3]}" in out.read_text()
    assert "# program: scripts/train_lora.py" in out.read_text()


def test_values_are_mapped_where_their_meaning_differs(tmp_path, capsys):
    code, printed, _, out = convert(tmp_path, DATA / "mlp_optimizers.yaml", capsys)
    assert code == 0
    cfg = load_sweep(out)
    assert cfg.parameters["optim"].values == ["sgd", "rmsprop", "adamw_torch"]
    assert "adam -> adamw_torch" in printed and "left out momentum, nag, nadam" in printed
    assert cfg.parameters["learning_rate"].values == [0.001, 0.0001]  # `1e-3` is a string to YAML 1.1
    assert "alpha" in printed and "value 0 is invalid" in printed  # alpha is this script's L2, not LoRA's
    assert cfg.metric.name == "eval_loss" and "harness does not measure val_accuracy" in printed


def test_distributions_optuna_has_not_are_approximated_and_said_so(tmp_path, capsys):
    code, printed, _, out = convert(tmp_path, DATA / "log_normal_pretraining.yaml", capsys)
    assert code == 0
    cfg = load_sweep(out)
    lr = to_distribution(cfg.parameters["learning_rate"])
    assert lr == FloatDistribution(0.000167, 0.00274, log=True)  # e^(-7.3 ± 2 * 0.7), 3 digits
    assert "95% range" in printed
    batch = cfg.parameters["per_device_train_batch_size"].values
    assert batch and all(b & (b - 1) == 0 for b in batch), "a log scale over whole numbers: powers of two"
    assert cfg.early_terminate.type == "hyperband" and cfg.early_terminate.eta == 2


def test_model_and_data_stay_the_defaults_with_the_users_named(tmp_path, capsys):
    code, printed, _, out = convert(tmp_path, DATA / "hf_trainer_args.yaml", capsys)
    assert code == 0
    text = out.read_text()
    assert "model_name_or_path facebook/opt-1.3b" in text and "dataset_name AlekseyKorshuk/dalio-v1" in text
    assert "num_train_epochs" in printed and load_sweep(out).metric.name == "eval_loss"


def test_script_names_precedence_log_uniform_bounds_and_dpo(tmp_path, capsys):
    src = write(
        tmp_path,
        "method: grid\n"
        "parameters:\n"
        "  batch_size: {values: [64]}\n"
        "  micro_batch_size: {values: [4, 8]}\n"
        "  lr: {distribution: log_uniform, min: 1e-6, max: 1e-3}\n"
        "  dpo_beta: {values: [0.1, 0.5]}\n"
        "  max_length: {value: 256}\n",
        "w.yaml",
    )
    code, printed, _, out = convert(tmp_path, src, capsys)
    assert code == 0
    cfg = load_sweep(out)
    assert cfg.trainer == "dpo" and cfg.parameters["beta"].values == [0.1, 0.5]
    assert cfg.parameters["per_device_train_batch_size"].values == [4, 8]  # micro_batch_size wins
    assert "per_device_train_batch_size is mapped from micro_batch_size already" in printed
    # W&B's log_uniform takes natural-log bounds: e^1e-6..e^1e-3 is no learning rate, the bounds are.
    assert to_distribution(cfg.parameters["learning_rate"]) == FloatDistribution(1e-6, 1e-3, log=True)
    assert cfg.training.max_seq_length == 256
    assert cfg.method == "tpe" and "a grid cannot enumerate" in printed


# --------------------------------------------------------------------------------------------------------
# sweep convert's errors: exit 2, nothing written


def test_a_file_that_is_not_a_sweep_is_a_clear_error(tmp_path, capsys):
    src = write(tmp_path, "batch_size:\n  type: categorical\n  values: [1, 2]\n", "space.yaml")
    code, _, err, out = convert(tmp_path, src, capsys)
    assert code == 2 and "not a W&B sweep file" in err and "parameters:" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_an_existing_output_needs_force(tmp_path, capsys):
    src = DATA / "lora_script_names.yaml"
    (tmp_path / "sweep.yaml").write_text("mine\n")
    code, _, err, out = convert(tmp_path, src, capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    assert out.read_text() == "mine\n"
    code, _, _, out = convert(tmp_path, src, capsys, "--force")
    assert code == 0 and load_sweep(out).parameters
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"], "no temporary file is left"


def test_the_wandb_file_itself_is_never_overwritten(tmp_path, capsys):
    src = write(tmp_path, (DATA / "whisper_lora.yaml").read_text(), "sweep.yaml")
    code = cli.main(["convert", str(src), "-o", str(src), "--force"])
    assert code == 2 and "the W&B file itself" in " ".join(capsys.readouterr().err.split())
    assert src.read_text() == (DATA / "whisper_lora.yaml").read_text()


def test_a_harness_sweep_file_is_not_converted(tmp_path, capsys):
    code, _, err, out = convert(tmp_path, Path(__file__).parents[1] / "sweeps" / "pricer.yaml", capsys)
    assert code == 2 and "already a harness sweep file" in err and not out.exists()


# --------------------------------------------------------------------------------------------------------
# Files nobody has seen: whatever a W&B sweep holds, convert writes a file that loads, or says why not


ALIAS_NAMES = sorted({a for aliases in wandb.ALIASES.values() for a in aliases})
numbers = st.one_of(
    st.integers(-3, 2048), st.floats(-10, 10, allow_nan=False), st.sampled_from(["1e-5", "5e-4", "2e-3"])
)
scalars = st.one_of(numbers, st.sampled_from(["adam", "AdamW", "cosine", "nag", "step", "nf4", "x"]))
W_AND_B_DISTRIBUTIONS = [
    "uniform", "int_uniform", "log_uniform", "log_uniform_values", "q_uniform", "q_log_uniform",
    "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal", "q_normal",
    "log_normal", "q_log_normal", "beta", "q_beta", "categorical", "constant", "categorical_w_probabilities",
]  # fmt: skip
entries = st.one_of(
    scalars,
    st.fixed_dictionaries({"value": scalars}),
    st.fixed_dictionaries({"values": st.one_of(scalars, st.lists(scalars, min_size=1, max_size=5))}),
    st.fixed_dictionaries(
        {"min": numbers, "max": numbers},
        optional={"distribution": st.sampled_from(W_AND_B_DISTRIBUTIONS), "q": numbers},
    ),
    st.fixed_dictionaries(
        {"distribution": st.sampled_from(W_AND_B_DISTRIBUTIONS)},
        optional={"mu": numbers, "sigma": numbers, "a": numbers, "b": numbers, "values": st.lists(scalars)},
    ),
)
sweeps = st.fixed_dictionaries(
    {
        "parameters": st.dictionaries(
            st.one_of(st.sampled_from(ALIAS_NAMES), st.from_regex(r"[A-Za-z][\w.-]{0,12}", fullmatch=True)),
            st.one_of(
                entries,
                st.fixed_dictionaries(
                    {
                        "parameters": st.dictionaries(
                            st.sampled_from(ALIAS_NAMES), entries, min_size=1, max_size=3
                        )
                    }
                ),
            ),
            min_size=1,
            max_size=8,
        )
    },
    optional={
        "method": st.sampled_from(["bayes", "random", "grid", "custom"]),
        "metric": st.fixed_dictionaries(
            {"name": st.sampled_from(["eval/loss", "val_acc", "loss", "eval/mae", "train/loss", "f1"])},
            optional={"goal": st.sampled_from(["minimize", "maximize", "up"])},
        ),
        "run_cap": st.integers(-1, 50),
        "early_terminate": st.fixed_dictionaries(
            {"type": st.just("hyperband")},
            optional={"min_iter": st.integers(-1, 9), "max_iter": numbers, "s": numbers, "eta": numbers},
        ),
        "program": st.just("train.py"),
        "name": st.text(max_size=12),
    },
)


@settings(max_examples=60, derandomize=True, database=None, deadline=None)
@given(data=sweeps)
def test_any_wandb_sweep_converts_to_a_file_that_loads_or_says_why(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    src = folder / "wandb.yaml"
    src.write_text(yaml.safe_dump(data))
    out = folder / "sweep.yaml"
    try:
        result = convert_file(src, out)
    except ConfigError as e:
        assert "Traceback" not in str(e) and not out.exists()
        return
    names = [name for name, _ in translate.flatten(data["parameters"])]
    assert len([line for line in result.lines if " -> " in line]) >= len(names)
    assert set(result.mapped) | set(result.unmapped) == set(names)
    load_sweep(out)
