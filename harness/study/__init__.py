"""The Optuna side: storage, sampler and pruner, create/resume, ranking, objective, failures, workers,
the run loop.

Never torch or transformers: tested with a fake recipe in milliseconds (tests/test_structure.py)."""
