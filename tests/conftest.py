"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(params=["numpy", "dask"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test on numpy- and on dask-backed inputs."""
    return request.param


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/real: always present in CI; a missing folder is a failure, not a skip."""
    assert SHARED_REAL.is_dir(), f"real data folder {SHARED_REAL} is missing"
    return SHARED_REAL
