"""One QLoRA fine-tune, readable top to bottom: attach adapter -> train with evals -> restore best -> score.

The trainer (`trainer: sft | dpo | grpo`) is one module of harness/recipes each: it builds its trl Trainer
and says what an eval measures; everything else is here and in recipes/common.py, the same for all three.
Knows transformers/peft/trl, not Optuna: the objective passes `on_eval`, which returns True to stop the
trial (pruned). The base model comes from fixtures and is left exactly as it was found.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from transformers import PrinterCallback, set_seed

from harness import compat
from harness.core import ranks, trialdir
from harness.core.spec import OnEval, Recipe, TrialResult, TrialSpec
from harness.sweepfile.schema import SweepConfig
from harness.tasks import baselines
from harness.trial import base, prepare, session
from harness.trial.recipes import dpo, grpo, lora, sft
from harness.trial.recipes.common import (
    EvalLoop,
    adapter_state,
    average_adapter_grads,
    baseline_metrics,
    evaluate,
    load_tensors,
    release,
    restore_adapter,
    save_checkpoint,
)
from harness.trial.recipes.lora import lora_config
from harness.trial.recipes.scoring import compare_with_base, score, test_metrics

__all__ = ["QLoRARecipe", "adapter_state", "evaluate", "finetune", "lora_config", "save_checkpoint", "score"]

TRAINERS: dict[str, ModuleType] = {"sft": sft, "dpo": dpo, "grpo": grpo}


def finetune(
    spec: TrialSpec,
    fixtures: session.Fixtures,
    on_eval: OnEval | None = None,
    *,
    save_adapter_to: Path | None = None,
    test_rows: list[dict[str, Any]] | None = None,
) -> TrialResult:
    """Train one adapter on the shared base, return its best metrics; the base is restored afterwards.

    Promotion (`sweep train`) also passes `save_adapter_to` (safetensors) and `test_rows` (held-out split,
    reported as test_*), both measured on the restored best adapter before it is removed."""
    start = time.perf_counter()
    kind = TRAINERS[spec.sweep.trainer]
    fixtures = session.for_trial(fixtures, spec)  # a searched quantization: the base of the trial's kind
    base, model = fixtures.model, None
    forward = base.__dict__.get("forward")  # trl wraps it per Trainer; release() puts it back
    set_seed(spec.seed)  # LoRA init and dropout depend on it: same spec -> same result
    resume = trialdir.find_checkpoint(spec.resume_from)
    try:
        loop = EvalLoop(spec, fixtures, on_eval or (lambda step, metrics: False))
        trainer = kind.build(spec, fixtures, [loop])
        model = trainer.model
        trained = lora.trained(model)  # what the adapter covers, read from the model itself
        optimizer = lora.loraplus_optimizer(trainer, spec)
        if optimizer is not None:  # LoRA+: the Trainer builds its scheduler over this one
            trainer.optimizer = optimizer
        trainer.remove_callback(PrinterCallback)  # our progress lines replace its raw dict prints
        loop.trainer, loop.measure = trainer, kind.measure(trainer, fixtures, spec)
        if loop.lockstep:
            average_adapter_grads(trainer, spec)
        if resume is not None:
            # Our adapter file, copied into the parameters; the Trainer's own model loading would go
            # through load_state_dict on the 4-bit base. It still restores optimizer, scheduler, RNG and
            # step from the checkpoint, and skips the batches already trained on.
            restore_adapter(model, load_tensors(resume, trialdir.ADAPTER_FILE) or {})
            loop.load_state(trialdir.read_loop(resume), load_tensors(resume, trialdir.BEST_FILE))
            compat.skip_checkpoint_model_load(trainer)
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        steps_run = trainer.state.global_step
        if loop.lockstep:  # the scoring below runs on every rank: on rank 0's best adapter, if it runs
            loop.pruned, loop.best_state = ranks.share((loop.pruned, loop.best_state))
        _, tokens = loop.spent(trainer.state)
        if loop.best_state is not None:
            restore_adapter(model, loop.best_state)
        best_entry = next((h for h in loop.history if h["step"] == loop.best_step), {})
        metrics = {k: v for k, v in best_entry.items() if k != "step"}
        generations: list[dict[str, Any]] = []
        before_metrics: dict[str, float] = {}
        # Rank 0 alone scores (with fsdp every rank runs the forwards) and keeps the adapter.
        lead = ranks.rank() == 0 or loop.lockstep
        if lead and not loop.pruned and fixtures.generation_rows:
            gen_metrics, generations = score(model, fixtures, spec, fixtures.generation_rows)
            metrics.update(gen_metrics)
            if spec.sweep.evaluation.compare_base:
                before_metrics = compare_with_base(model, fixtures, spec, generations)
        if lead and test_rows:
            metrics.update(test_metrics(model, fixtures, spec, test_rows))
        if ranks.rank() == 0 and save_adapter_to is not None:
            # state_dict given explicitly: peft would otherwise call model.state_dict() (see adapter_state)
            model.save_pretrained(
                str(save_adapter_to), safe_serialization=True, state_dict=adapter_state(model)
            )
        del trainer
        return TrialResult(
            value=loop.best,
            metrics=metrics,
            best_step=loop.best_step,
            steps_run=steps_run,
            duration_s=time.perf_counter() - start,
            history=loop.history,
            pruned=loop.pruned,
            stopped_early=loop.stopped_early,
            generations=generations,
            train_log=loop.train_log,
            before_metrics=before_metrics,
            trained=trained,
            max_steps=loop.max_steps,
            eval_steps=loop.eval_steps,
            world_size=ranks.group_size(),
            tokens=tokens,
            resumed_at=loop.start_step,
        )
    finally:
        # Remove the LoRA layers: the shared base goes back to exactly its original modules.
        release(base, model, forward)


def fresh_adapter_metrics(spec: TrialSpec, fixtures: session.Fixtures) -> dict[str, float]:
    """The untrained base, measured as a trial's eval measures (dpo: trl's DPO eval; grpo: rewards):
    a fresh LoRA adapter starts at zero (B = 0), so the model it measures is exactly the base."""
    kind = TRAINERS[spec.sweep.trainer]
    fixtures = session.for_trial(fixtures, spec)
    base, forward, trainer = fixtures.model, fixtures.model.__dict__.get("forward"), None
    set_seed(spec.seed)
    scratch = tempfile.TemporaryDirectory(prefix="harness-base-")  # the Trainer's output_dir: nothing kept
    try:
        trainer = kind.build(dataclasses.replace(spec, output_dir=Path(scratch.name)), fixtures, [])
        trainer.remove_callback(PrinterCallback)
        return kind.measure(trainer, fixtures, spec)(trainer.model, spec.sweep.evaluation.samples > 0)
    finally:
        release(base, trainer.model if trainer is not None else None, forward)
        scratch.cleanup()


class QLoRARecipe:
    """The real recipe (spec.Recipe, spec.MeasuresBaseline, spec.ReportsData, spec.ReportsDroppedRows,
    spec.MeasuresTaskBaselines): the session fixtures are bound once, and every trial of every sweep in this
    process reuses them."""

    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        lora.check_targets(self.fixtures.model, cfg)  # before the study: no trial gets an empty adapter

    @property
    def fixtures(self) -> session.Fixtures:
        """The sweep's own (model.quantization's base), from the session cache: not held here, so a worker
        holds only the bases model.max_cached_bases allows."""
        return session.get(self.cfg)

    def trial_fixtures(self, spec: TrialSpec) -> session.Fixtures:
        return session.get(self.cfg, spec.model)

    def __call__(self, spec: TrialSpec, on_eval: OnEval) -> TrialResult:
        # The adapter is saved for the objective, which keeps the best one as results/<study>/best-adapter.
        adapter = trialdir.adapter_dir(spec.output_dir) if spec.number >= 0 else None
        return finetune(spec, self.trial_fixtures(spec), on_eval, save_adapter_to=adapter)

    def baseline(self) -> dict[str, float]:
        spec = TrialSpec.build(self.cfg, {}, -1, self.cfg.study_dir)
        if self.cfg.trainer == "sft":
            return baseline_metrics(self.fixtures, spec)
        return fresh_adapter_metrics(spec, self.fixtures)

    def task_baselines(self) -> baselines.Measured:
        """harness.tasks.baselines on exactly the rows trials are scored on (and train on)."""
        train = prepare.data_splits(self.cfg, self.fixtures.tokenizer).train.to_list()
        return baselines.measure(self.cfg, train, self.fixtures.generation_rows)

    def provenance(self) -> dict[str, Any]:
        """Content hashes of the base, tokenizer and the splits as formatted here
        (harness.trial.provenance)."""
        from harness.trial import provenance

        path = base.resolve_model_path(self.cfg.model, self.cfg.source_path)
        return provenance.measure(self.cfg, prepare.data_splits(self.cfg, self.fixtures.tokenizer), path)

    def with_test_split(self) -> Recipe:
        """This recipe, also scoring each trial's best adapter on the held-out test split (test_* metrics):
        `sweep confirm --test` only; a sweep never looks at the test split."""

        def run(spec: TrialSpec, on_eval: OnEval) -> TrialResult:
            adapter = trialdir.adapter_dir(spec.output_dir) if spec.number >= 0 else None
            fixtures = self.trial_fixtures(spec)
            return finetune(spec, fixtures, on_eval, save_adapter_to=adapter, test_rows=fixtures.test_rows)

        return run

    def data_report(self) -> dict[str, dict[str, Any]]:
        """How each split's rows fit max_seq_length (harness.core.lengths), measured when they were
        tokenized."""
        return {split: dict(figures) for split, figures in self.fixtures.lengths.items()}

    def dropped_rows(self) -> dict[str, Any]:
        """The bad rows its data left out (dataset.bad_rows: drop; harness.core.badrows), {} for none."""
        return dict(self.fixtures.dropped)
