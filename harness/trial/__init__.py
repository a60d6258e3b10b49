"""One trial: base models and trial data, the recipe and recipes/{sft,dpo,grpo}, evaluation, tokenization.

Never optuna: a recipe runs and is tested without a study (tests/test_structure.py)."""
