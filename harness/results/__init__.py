"""Reading a study: the study view, report, compare, plots, status, watch, importance.

Reads the storage and the trial folders and never writes the storage; never torch
(tests/test_structure.py)."""
