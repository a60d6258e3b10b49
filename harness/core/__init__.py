"""The contract between study and trial: TrialSpec/TrialResult, the trial folder, the study's user attributes.

No torch, optuna or pandas (tests/test_structure.py)."""
