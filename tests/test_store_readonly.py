"""Commands that only read never create a store: a missing one is a clear error (exit 2) naming
where it was looked for; messages about a missing scan name the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from gmsense.store import NoStoreError, Store, _migration_config, _revision_chain, migration_engine
from gmsense.testutils import run_cli

READ_ONLY = [
    ["scans", "list"],
    ["scans", "show", "1"],
    ["export", "patches", "--out", "patches.geojson"],
    ["export", "flags", "--format", "csv", "--out", "flags.csv"],
    ["users", "list"],
    ["labels", "export", "--out", "labels.csv"],
    ["report", "summary", "--out", "summary.html"],
    ["report", "site", "S-1", "--out", "site.pdf"],
]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GMSENSE_DB", raising=False)
    return tmp_path


def _one_line(output: str) -> str:
    assert "Traceback" not in output
    return " ".join(output.split())


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a[:2]))
def test_read_only_command_without_a_store_creates_nothing(cwd: Path, args: list[str]) -> None:
    code, output = run_cli(*args)
    assert code == 2, output
    message = _one_line(output)
    assert f"no store at {cwd / 'gmsense.db'}" in message
    assert "run a scan first, or pass --db / set GMSENSE_DB" in message
    assert list(cwd.iterdir()) == [], "nothing was created (no gmsense.db, no -wal, no output)"


def test_missing_store_named_by_gmsense_db_or_db(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMSENSE_DB", str(cwd / "sub" / "env.db"))
    code, output = run_cli("scans", "list")
    assert code == 2
    assert f"no store at {cwd / 'sub' / 'env.db'}" in _one_line(output)
    code, output = run_cli("users", "list", "--db", "other.db")
    assert code == 2
    assert f"no store at {cwd / 'other.db'}" in _one_line(output)
    assert list(cwd.iterdir()) == [], "not even the folder of the store"


def test_missing_scan_names_the_store(cwd: Path) -> None:
    Store("gmsense.db")
    code, output = run_cli("scans", "show", "42")
    assert code == 2
    assert f"there is no scan 42 in the store {cwd / 'gmsense.db'}" in _one_line(output)
    code, output = run_cli("scans", "list")
    assert code == 0
    assert str(cwd / "gmsense.db") in _one_line(output)


def test_a_database_without_gmsense_tables_is_no_store(cwd: Path) -> None:
    engine = create_engine(f"sqlite:///{cwd / 'other.db'}")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE notes (x TEXT)"))
    engine.dispose()
    code, output = run_cli("scans", "list", "--db", "other.db")
    assert code == 2
    assert f"{cwd / 'other.db'} holds no gmsense store" in _one_line(output)
    engine = create_engine(f"sqlite:///{cwd / 'other.db'}")
    with engine.connect() as c:
        assert [r[0] for r in c.execute(text("SELECT name FROM sqlite_master"))] == ["notes"], "nothing was added"
    engine.dispose()


def test_an_older_store_is_upgraded_by_a_read_only_command_and_says_so(cwd: Path) -> None:
    from alembic import command

    url = f"sqlite:///{cwd / 'gmsense.db'}"
    engine = migration_engine(url)
    config = _migration_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    engine.dispose()
    code, output = run_cli("scans", "list")
    assert code == 0, output
    head = _revision_chain()[-1]
    assert f"upgraded the store {cwd / 'gmsense.db'} from schema revision 0001 to {head}" in _one_line(output)
    assert Store(url)._peek()[0] == head


def test_store_api_refuses_to_create_when_asked_not_to(tmp_path: Path) -> None:
    with pytest.raises(NoStoreError, match="no store at") as info:
        Store(str(tmp_path / "missing" / "x.db"), create=False)
    assert info.value.exit_code == 2
    assert not (tmp_path / "missing").exists()


@pytest.mark.postgres
def test_postgres_database_without_a_store_is_named_with_the_password_masked(postgres_url: str) -> None:
    url = postgres_url.replace("://gmsense@", "://gmsense:s3cret@")  # the test server trusts any password
    assert "s3cret" in url
    code, output = run_cli("scans", "list", "--db", url)
    assert code == 2
    message = _one_line(output)
    assert "holds no gmsense store" in message
    assert "gmsense:***@" in message
    assert "s3cret" not in message
    with pytest.raises(NoStoreError):
        Store(postgres_url, create=False)
    engine = create_engine(postgres_url)
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar() == 0
    engine.dispose()
