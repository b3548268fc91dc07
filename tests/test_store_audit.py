"""The audit log of decisions cannot be rewritten, and a flag's status changes only with a
decision recorded in it (database triggers of migration 0003, on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from gmsense.review.service import decide, history
from gmsense.store import FlagRow, ReviewRow, Store, UserRow, migration_engine

APPEND_ONLY = "the reviews table is an audit log"
STATUS_GUARD = "changes only with a review decision"

_SITE = "INSERT INTO sites (site_id, geometry_wkt, attrs, updated_at) VALUES ('S-1', 'POINT (1 2)', '{}', '2024-01-01')"
_SCAN = ("INSERT INTO scans (started_at, status, source, detector, config_hash, gmsense_version, params, summary) "
         "VALUES ('2024-01-01', 'completed', 'test', 'rules', 'h', '0', '{}', '{}')")
_FLAG = ("INSERT INTO flags (site_id, rule, flag_key, severity, message, evidence, status, created_scan_id, "
         "updated_scan_id, created_at) VALUES ('S-1', :rule, '', 'warning', 'm', '{}', :status, 1, 1, '2024-01-01')")
_REVIEW = ("INSERT INTO reviews (id, flag_id, user_id, username, at, decision, reason, comment, previous_status) "
           "VALUES (:id, 1, 1, 'ann', '2024-02-01', :decision, 'other', 'rewritten', 'open')")


def _fill(url: str) -> tuple[Store, UserRow]:
    """A store with one open flag, a reviewer, and one decision (confirmed) through the service."""
    store = Store(url)
    with store.engine.begin() as c:
        c.execute(text(_SITE))
        c.execute(text(_SCAN))
        c.execute(text(_FLAG), {"rule": "new_disturbance", "status": "open"})
    with store.session() as s, s.begin():
        user = UserRow(username="ann", password_hash="x", role="reviewer", active=True)
        s.add(user)
    decide(store, 1, user, "confirm", "violation", "a fresh trench outside the licence")
    return store, user


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return request.getfixturevalue("postgres_url")


def _refused(store: Store, sql: str, match: str, **params: object) -> None:
    with pytest.raises(DBAPIError, match=match), store.engine.begin() as c:
        c.execute(text(sql), params)


def _log(store: Store) -> list[tuple]:
    return [(r.id, r.flag_id, r.decision, r.comment, r.previous_status) for r in history(store)]


def test_decisions_through_the_service_still_work(url: str) -> None:
    store, user = _fill(url)
    decide(store, 1, user, "dismiss", "natural_change", "on a second look: a landslide")
    with store.session() as s:
        assert s.get(FlagRow, 1).status == "dismissed"
    assert [(d, p) for _, _, d, _, p in _log(store)] == [("confirmed", "open"), ("dismissed", "confirmed")]


def test_status_change_without_a_review_row_is_refused(url: str) -> None:
    store, _ = _fill(url)
    log = _log(store)
    _refused(store, "UPDATE flags SET status = 'dismissed' WHERE id = 1", STATUS_GUARD)
    _refused(store, "UPDATE flags SET status = 'open' WHERE id = 1", STATUS_GUARD)
    with store.session() as s:
        assert s.get(FlagRow, 1).status == "confirmed"
    assert _log(store) == log
    # a status that no decision gave, on a flag never reviewed
    with store.engine.begin() as c:
        c.execute(text(_FLAG), {"rule": "outside_licence", "status": "open"})
    _refused(store, "UPDATE flags SET status = 'confirmed' WHERE rule = 'outside_licence'", STATUS_GUARD)


def test_new_flag_must_start_open(url: str) -> None:
    store, _ = _fill(url)
    _refused(store, _FLAG, "a new flag starts open", rule="outside_licence", status="dismissed")


def test_orm_status_change_without_review_is_refused(url: str) -> None:
    store, _ = _fill(url)
    with pytest.raises(DBAPIError, match=STATUS_GUARD), store.session() as s, s.begin():
        s.get(FlagRow, 1).status = "dismissed"


def test_sqlite_insert_or_replace_cannot_rewrite_the_log(tmp_path: Path) -> None:
    store, _ = _fill(f"sqlite:///{tmp_path / 'audit.db'}")
    log = _log(store)
    _refused(store, _REVIEW.replace("INSERT", "INSERT OR REPLACE"), APPEND_ONLY, id=log[0][0], decision="dismissed")
    _refused(store, _REVIEW.replace("INSERT", "REPLACE"), APPEND_ONLY, id=log[0][0], decision="dismissed")
    assert _log(store) == log


def test_sqlite_recursive_triggers_alone_also_stop_replace(tmp_path: Path) -> None:
    """Belt and braces: without the BEFORE INSERT trigger, REPLACE's implicit delete fires the
    DELETE trigger because every connection turns recursive_triggers on."""
    store, _ = _fill(f"sqlite:///{tmp_path / 'audit.db'}")
    with store.engine.begin() as c:
        assert c.execute(text("PRAGMA recursive_triggers")).scalar() == 1
        c.execute(text("DROP TRIGGER reviews_no_replace"))
    log = _log(store)
    _refused(store, _REVIEW.replace("INSERT", "INSERT OR REPLACE"), APPEND_ONLY, id=log[0][0], decision="dismissed")
    assert _log(store) == log


@pytest.mark.postgres
def test_postgres_truncate_of_the_log_is_refused(postgres_url: str) -> None:
    store, _ = _fill(postgres_url)
    log = _log(store)
    _refused(store, "TRUNCATE reviews", APPEND_ONLY)
    _refused(store, "TRUNCATE flags CASCADE", APPEND_ONLY)
    _refused(store, _REVIEW + " ON CONFLICT (id) DO UPDATE SET comment = 'rewritten'", APPEND_ONLY,
             id=log[0][0], decision="dismissed")
    assert _log(store) == log


def test_an_existing_store_gets_the_guards_on_upgrade(tmp_path: Path) -> None:
    from alembic import command

    from gmsense.store import _migration_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = migration_engine(url)
    config = _migration_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    engine.dispose()
    with pytest.warns(UserWarning, match="from schema revision 0002"):
        store, _ = _fill(url)
    _refused(store, _REVIEW.replace("INSERT", "INSERT OR REPLACE"), APPEND_ONLY, id=1, decision="dismissed")
    _refused(store, "UPDATE flags SET status = 'open'", STATUS_GUARD)
    with create_engine(url).connect() as c:
        assert c.execute(select(ReviewRow.comment)).scalars().all() == ["a fresh trench outside the licence"]
