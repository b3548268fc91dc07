"""Shared fixtures."""

from __future__ import annotations

import os
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


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def postgres_url() -> str:
    """A real PostgreSQL database, emptied for each test.

    ``scripts/test.sh`` (and so CI) starts one and sets GMSENSE_TEST_PG_URL; without it the test
    fails rather than skips, so a missing server cannot pass unnoticed.
    """
    url = os.environ.get("GMSENSE_TEST_PG_URL")
    assert url, "GMSENSE_TEST_PG_URL is not set: run the tests through scripts/test.sh (it starts PostgreSQL)"
    _reset_postgres(url)
    return url
