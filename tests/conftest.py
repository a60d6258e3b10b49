"""Shared test set-up: real components at tiny sizes."""

from __future__ import annotations

import os

# `make test` runs two xdist workers on two cores: one intra-op thread each. Oversubscribed torch threads
# slow CPU training by an order of magnitude here. torch reads this when it is first imported (a test
# that needs it, not this file: the study-side tests never load torch).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pg  # noqa: E402
import pytest  # noqa: E402
from helpers import TINY, journal, sweep  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
    """sweeps/pricer.yaml with the TINY real-recipe budgets, results under tmp_path; extra overrides win."""

    def make(*overrides: str):
        return sweep(tmp_path, *TINY, *overrides)

    return make


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (tests/pg.py); skipped where none can be started,
    failed instead under HARNESS_REQUIRE_POSTGRES=1 (CI)."""
    why = pg.available()
    if why is not None:
        if os.environ.get(pg.REQUIRE) == "1":
            pytest.fail(f"{pg.REQUIRE}=1 but no PostgreSQL server can be started: {why}")
        pytest.skip(why)
    with pg.Server() as server:
        yield server


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage(request, tmp_path) -> str | None:
    """One supplier fixture over every backend (optuna's pattern): None is the default SQLite file; a
    fresh database on the session's PostgreSQL server where one can be started."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres").new_database()
    return None if request.param == "sqlite" else journal(tmp_path)
