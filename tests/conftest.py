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


@pytest.fixture(scope="session")
def _demo_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder one real ``gmsense demo`` wrote (gmsense.db, patches.geojson), once per session.

    Never handed to a test: tests get copies (``demo_folder``, ``demo_folder_for_test``), so none can
    change what another sees. Chips and figures need nothing else from it: they are re-made from
    the synthetic source the scan recorded.
    """
    from gmsense.testutils import run_cli

    out = tmp_path_factory.mktemp("demo-shared")
    code, output = run_cli("demo", "--out", out)
    assert code == 0, output
    return out


def copy_demo(source: Path, target: Path) -> Path:
    """A private copy of the demo output folder ``source`` at ``target``; returns ``target``."""
    import shutil

    from gmsense.testutils import copy_store

    target.mkdir(parents=True, exist_ok=True)
    copy_store(source / "gmsense.db", target / "gmsense.db")
    shutil.copy2(source / "patches.geojson", target / "patches.geojson")
    return target


@pytest.fixture(scope="module")
def demo_folder(_demo_output: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output of ``gmsense demo`` (a real synthetic scan of the demo licences), copied for one
    test module: its tests share it, so a test that changes the store takes its own copy."""
    return copy_demo(_demo_output, tmp_path_factory.mktemp("demo"))


@pytest.fixture
def demo_folder_for_test(_demo_output: Path, tmp_path: Path) -> Path:
    """The output of ``gmsense demo``, copied for one test (which may change it)."""
    return copy_demo(_demo_output, tmp_path / "demo")


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
