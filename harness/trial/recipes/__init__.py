"""One module per trainer (sft, dpo, grpo) and what they share (common); harness/recipe.py runs a trial."""
