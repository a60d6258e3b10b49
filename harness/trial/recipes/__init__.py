"""One module per trainer (sft, dpo, grpo), what they share (common: the eval loop, checkpoints; scoring:
generation metrics), and the adapter (lora); harness/trial/recipe.py runs a trial."""
