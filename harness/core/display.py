"""How a number and a parameter's name are shown in one terminal line: the run's progress lines
(harness.study.run) and every table of the views (harness.results) show them the same way."""

from __future__ import annotations

from typing import Any

# Short column names so a 10-parameter table fits a terminal.
SHORT = {
    "r": "r",
    "lora_alpha": "alpha",
    "lora_alpha_multiple": "alpha/r",
    "lora_dropout": "drop",
    "learning_rate": "lr",
    "lr_scheduler_type": "sched",
    "warmup_ratio": "warm",
    "per_device_train_batch_size": "bs",
    "gradient_accumulation_steps": "ga",
    "optim": "optim",
    "weight_decay": "wd",
    "max_grad_norm": "clip",
    "target_modules": "targets",
    "quantization": "quant",
    "use_rslora": "rslora",
    "loraplus_lr_ratio": "lora+",
    "lora_modules": "lora",
    "base_layer": "base",
}


def fmt(v: Any) -> str:
    """4 significant digits for floats: what a terminal line has room for."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
