"""The sweep file: schema, loading and overrides, search-space specs, expectations, load-time checks.

pydantic + yaml only: no optuna, torch or pandas (tests/test_structure.py)."""
