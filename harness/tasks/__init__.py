"""The tasks (pricer, text): data formatting, metrics, headline, baselines and rewards.

Never optuna (tests/test_structure.py)."""
