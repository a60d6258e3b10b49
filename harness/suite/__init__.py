"""pytest-style runs: collection, keywords, verdicts, the pytest plugin.

Never torch; the plugin loads no optuna until a sweep runs (tests/test_structure.py)."""
