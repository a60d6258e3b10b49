"""The sweep file: schema, loading and overrides, search-space specs, expectations, load-time checks,
W&B sweep files (their own keys at load; `sweep convert`).

pydantic + yaml only: no optuna, torch or pandas (tests/test_structure.py)."""
