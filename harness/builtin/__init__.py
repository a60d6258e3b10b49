"""The embedded default: the pricer data generator and a tiny pre-trained Llama, both made offline.

Only constants and the pure-Python data generator are imported here; the model builder (torch,
transformers) lives in `harness.builtin.tiny_model` and is imported by whoever needs it.
"""

from __future__ import annotations

from harness.builtin.pricer_data import generate_products, pricer_splits

BUILTIN_MODEL = "builtin:tiny-llama"
BUILTIN_DATASET = "builtin:pricer"

__all__ = ["BUILTIN_DATASET", "BUILTIN_MODEL", "generate_products", "pricer_splits"]
