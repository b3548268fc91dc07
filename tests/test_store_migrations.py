"""Schema creation and upgrades are atomic (a process killed midway leaves the old schema, and the
next command completes the job), and stores half-built by older versions are repaired when that
loses nothing, else refused with a clear message and left untouched.

The kills are deterministic: the child process stops itself after its N-th DDL statement (the
``GMSENSE_TEST_PAUSE_MIGRATION`` hook of gmsense.store), says so on stderr, and waits to be killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, inspect, text

from gmsense.errors import StoreError
from gmsense.store import (
    PAUSE_MIGRATION_ENV,
    Base,
    Store,
    _known_schemas,
    _migration_config,
    _revision_chain,
    _schema_objects,
    _sqlite_pragmas,
    migration_engine,
)

HEAD = _revision_chain()[-1]

# The child of a kill test: open (create or upgrade) the store, as every command does.
NEW_CODE = "import sys; from gmsense.store import Store; Store(sys.argv[1])"
# What gmsense did before this fix: upgrade on a plain pysqlite engine, which commits each DDL
# statement as it runs. Used to make the damaged stores that older versions left behind.
OLD_CODE = """
import sys
from alembic import command
from sqlalchemy import create_engine, event
from gmsense.store import _install_pause_hook, _migration_config, _sqlite_pragmas
engine = create_engine(sys.argv[1])
event.listen(engine, "connect", _sqlite_pragmas)
_install_pause_hook(engine)
config = _migration_config()
with engine.begin() as connection:
    config.attributes["connection"] = connection
    command.upgrade(config, sys.argv[2] if len(sys.argv) > 2 else "head")
"""


def _run_killed(code: str, after: int, *args: str) -> None:
    """Run ``code`` in a child that pauses after its ``after``-th DDL statement; SIGKILL it there."""
    env = {**os.environ, PAUSE_MIGRATION_ENV: str(after)}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:  # blocks until the child pauses (or ends, which fails below)
        seen.append(line)
        if f"migration paused after DDL statement {after}" in line:
            break
    else:
        proc.wait()
        pytest.fail(f"the child never paused (exit {proc.returncode}): {''.join(seen)[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


def _migrate_to(url: str, revision: str) -> None:
    from alembic import command

    engine = migration_engine(url)
    config = _migration_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def _add_data(url: str) -> None:
    """A licence, a scan, a patch and a flag, as a scan writes them (tables of revision 0001)."""
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO sites (site_id, geometry_wkt, attrs, updated_at) "
                       "VALUES ('S-1', 'POINT (1 2)', '{}', '2024-01-01')"))
        c.execute(text("INSERT INTO scans (started_at, status, source, detector, config_hash, gmsense_version, "
                       "params, summary) VALUES ('2024-01-01', 'completed', 'test', 'rules', 'h', '0', '{}', '{}')"))
        c.execute(text("INSERT INTO patches VALUES ('S-1-P0001', 'S-1', 'POINT (1 2)', 'POINT (1 2)', 'EPSG:32650', "
                       "'trench', 0.9, '2024-06-01', '2024-06-01', '2024-07-01', 100.0, true, 0.0, 'active', 0.0, "
                       "'{}', 1, 1)"))
        c.execute(text("INSERT INTO flags (site_id, patch_id, rule, flag_key, severity, message, evidence, status, "
                       "created_scan_id, updated_scan_id, created_at) VALUES ('S-1', 'S-1-P0001', "
                       "'new_disturbance', '', 'warning', 'a new trench', '{}', 'open', 1, 1, '2024-01-01')"))
    engine.dispose()


def _data(url: str) -> list[tuple]:
    """The rows :func:`_add_data` wrote, in the columns of revision 0001 (later revisions may add
    columns; the data written before must survive unchanged)."""
    engine = create_engine(url)
    with engine.connect() as c:
        rows = []
        for table in ("sites", "scans", "patches", "flags"):
            keys = ("id", "patch_id", "site_id")  # the key first: rows are ordered by it
            columns = ", ".join(sorted(_known_schemas()["0001"][table][2], key=lambda c: (c not in keys, keys.index(c)
                                                                                         if c in keys else 0, c)))
            rows.append(tuple(c.execute(text(f"SELECT {columns} FROM {table} ORDER BY 1")).all()))
    engine.dispose()
    return rows


def _state(url: str) -> tuple[str | None, set[str]]:
    """(version row or None, table names)."""
    engine = create_engine(url)
    with engine.connect() as c:
        names = set(inspect(c).get_table_names())
        version = c.execute(text("SELECT version_num FROM alembic_version")).scalar() \
            if "alembic_version" in names else None
    engine.dispose()
    return version, names - {"alembic_version"}


def _assert_complete(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    store = Store(url)
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == HEAD
        assert compare_metadata(context, Base.metadata) == [], "the schema is exactly the models'"
        if connection.dialect.name == "sqlite":  # indexes and triggers too
            assert _schema_objects(connection) == _known_schemas()[HEAD]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_creation_killed_midway_leaves_nothing_and_the_next_command_creates_the_store(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _url(kind, tmp_path, request)
    _run_killed(NEW_CODE, 6, url)  # alembic_version, then 5 objects of revision 0001
    assert _state(url) == (None, set()), "the killed creation left no table behind"
    _assert_complete(url)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_upgrade_killed_midway_keeps_the_data_and_completes_on_the_next_run(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = _url(kind, tmp_path, request)
    _migrate_to(url, "0001")
    _add_data(url)
    before = _data(url)
    _run_killed(NEW_CODE, 4, url)  # users, user_sessions, an index, login_attempts of 0002
    version, names = _state(url)
    assert version == "0001"
    assert names == set(_known_schemas()["0001"]) & set(Base.metadata.tables), "no table of 0002 was kept"
    assert _data(url) == before
    with pytest.warns(UserWarning, match=f"upgraded the store .* from schema revision 0001 to {HEAD}"):
        Store(url)
    _assert_complete(url)
    assert _data(url) == before


def test_store_half_created_by_an_older_version_is_repaired(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _run_killed(OLD_CODE, 6, url)
    version, names = _state(url)
    assert (version, len(names)) == (None, 4), "the damage the old code did: 4 of 0001's 6 tables, no version"
    with pytest.warns(UserWarning, match="repaired the store .*removed the empty, unfinished"):
        Store(url)
    _assert_complete(url)


def test_upgrade_interrupted_in_an_older_version_is_repaired_keeping_the_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _migrate_to(url, "0001")
    _add_data(url)
    before = _data(url)
    _run_killed(OLD_CODE, 3, url)  # users, user_sessions and its index of 0002 were committed
    version, names = _state(url)
    assert version == "0001"
    assert {"users", "user_sessions"} <= names
    with pytest.warns(UserWarning, match="repaired the store .*users, user_sessions"):
        Store(url)
    _assert_complete(url)
    assert _data(url) == before


def test_tables_of_a_known_revision_without_a_version_row_are_stamped_and_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _migrate_to(url, "0001")
    _add_data(url)
    before = _data(url)
    engine = create_engine(url)
    with engine.begin() as c:  # what an older version left when killed during 0002 of a new store
        c.execute(text("DELETE FROM alembic_version"))
    engine.dispose()
    with pytest.warns(UserWarning, match="exactly those of schema revision 0001"):
        Store(url)
    _assert_complete(url)
    assert _data(url) == before


def _sqlite_master(path: Path) -> list[tuple]:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as c:
        rows = c.execute(text("SELECT type, name, sql FROM sqlite_master ORDER BY name")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_damaged_store_holding_data_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    url = f"sqlite:///{path}"
    _run_killed(OLD_CODE, 3, url)  # alembic_version, scans, sites of 0001
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas)
    with engine.begin() as c:
        c.execute(text("INSERT INTO sites (site_id, geometry_wkt, attrs, updated_at) "
                       "VALUES ('S-1', 'POINT (1 2)', '{}', '2024-01-01')"))
    engine.dispose()
    before = _sqlite_master(path)
    with pytest.raises(StoreError, match=r"is damaged .* tables already hold rows: sites; nothing was changed"):
        Store(url)
    assert _sqlite_master(path) == before
    assert _state(url)[1] == {"scans", "sites"}


def test_unfinished_newer_tables_holding_rows_are_not_dropped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _migrate_to(url, "0001")
    _run_killed(OLD_CODE, 1, url)  # 0002's users table committed, version still 0001
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO users (username, password_hash, role, active, created_at) "
                       "VALUES ('ann', 'x', 'admin', 1, '2024-01-01')"))
    engine.dispose()
    with pytest.raises(StoreError, match="unfinished tables already hold rows: users"):
        Store(url)
    assert "users" in _state(url)[1]


def test_store_of_a_newer_gmsense_is_refused_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    Store(url)
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"revision '9999'.*newer gmsense; upgrade gmsense"):
        Store(url)


def test_store_missing_tables_of_its_own_revision_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    _migrate_to(url, "0001")
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("DROP TABLE recovery"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"at schema revision 0001 it should have, but has not .*recovery"):
        Store(url)
    assert _state(url) == ("0001", set(_known_schemas()["0001"]) & set(Base.metadata.tables) - {"recovery"})


@pytest.mark.postgres
def test_postgres_tables_without_a_version_are_refused_not_stamped(postgres_url: str) -> None:
    """Tables alone (e.g. made by create_all, without the audit triggers) prove too little."""
    engine = create_engine(postgres_url)
    Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(StoreError, match=r"is damaged .*: its tables .* do not match its schema version \(none\)"):
        Store(postgres_url)
    assert _state(postgres_url)[0] is None
