"""The flags per licence that the database keeps (``licence_flag_counts``, revision 0015, read by the
dashboard) always equal a recount of the flags: after a bulk load, decisions, stage signatures, a new
flag, a flag moved to another licence or re-ruled, a flag deleted, and after the revision is undone and
applied again to a store holding flags. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import delete, exists, select, text, update

from gmsense.bench.queue_load import fill_store
from gmsense.outputs.summary_report import licence_flag_counts, recount_licence_flags
from gmsense.review import auth, service
from gmsense.store import (
    FlagRow,
    LicenceFlagCountRow,
    ReviewRow,
    SiteRow,
    Store,
    _migration_config,
    _revision_chain,
)
from gmsense.store.scope import Scope

NOW = datetime(2026, 11, 30, 12, 0, 0)
PASSWORD = "counts-password-1"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def province(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = str(tmp_path / "counts.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store(url)
    fill_store(store, flags=400, licences=30, seed=5, password=PASSWORD, now=NOW)
    yield store
    store.engine.dispose()


def _county_scope(store: Store) -> Scope:
    with store.session() as s:
        county = s.scalar(select(SiteRow.county_code).where(SiteRow.county_code.is_not(None))
                          .order_by(SiteRow.site_id).limit(1))
    return Scope("county", (county,))


def _assert_kept_equals_recount(store: Store) -> dict[str, dict[str, int]]:
    kept = licence_flag_counts(store)
    assert kept == recount_licence_flags(store)
    county = _county_scope(store)
    assert licence_flag_counts(store, county) == recount_licence_flags(store, county)
    return kept


def _open_flag(store: Store, *conditions: object) -> FlagRow:
    with store.session() as s:
        return s.scalars(select(FlagRow).where(FlagRow.status == "open", *conditions)
                         .order_by(FlagRow.id).limit(1)).one()


def test_the_kept_counts_equal_a_recount_after_every_kind_of_write(province: Store) -> None:
    kept = _assert_kept_equals_recount(province)
    assert sum(c["flags"] for c in kept.values()) == 400
    assert sum(c["confirmed"] + c["dismissed"] for c in kept.values()) > 0, "the load decided some flags"
    reviewer = auth.get_user(province, "bench-province")

    # decisions (a confirmation also starts the flag's stage chain), each counted at once
    confirmed = _open_flag(province, FlagRow.rule != "uncertain_label", FlagRow.rule != "new_disturbance")
    before = licence_flag_counts(province)[confirmed.site_id]
    service.decide(province, confirmed.id, reviewer, "confirm", "violation", "seen on site")
    after = licence_flag_counts(province)[confirmed.site_id]
    assert (after["open"], after["confirmed"], after["violations"]) == (
        before["open"] - 1, before["confirmed"] + 1, before["violations"] + 1)
    dismissed = _open_flag(province, FlagRow.rule != "uncertain_label")
    service.decide(province, dismissed.id, reviewer, "dismiss", "cloud_shadow", "cloud shadow")
    _assert_kept_equals_recount(province)

    # a new flag of a licence that had none, written by the ORM as a scan writes them
    with province.session() as s, s.begin():
        template = s.get(FlagRow, confirmed.id)
        bare = s.scalar(select(SiteRow.site_id).where(~exists().where(FlagRow.site_id == SiteRow.site_id))
                        .order_by(SiteRow.site_id).limit(1))
        site_id = bare or template.site_id
        s.add(FlagRow(site_id=site_id, patch_id=None, rule="reclamation_overdue", flag_key="counted-1",
                      severity="critical", message="new", evidence={}, status="open",
                      created_scan_id=template.created_scan_id, updated_scan_id=template.updated_scan_id,
                      created_at=NOW))
    assert licence_flag_counts(province)[site_id]["overdue"] >= 1
    _assert_kept_equals_recount(province)

    # a flag moved to another licence, re-ruled and re-graded in one statement
    moved = _open_flag(province)
    with province.session() as s, s.begin():
        other = s.scalar(select(SiteRow.site_id).where(SiteRow.site_id != moved.site_id)
                         .order_by(SiteRow.site_id.desc()).limit(1))
        s.execute(update(FlagRow).where(FlagRow.id == moved.id)
                  .values(site_id=other, rule="reclamation_overdue", severity="info"))
    _assert_kept_equals_recount(province)

    # a flag deleted (one no decision or stage refers to)
    with province.session() as s, s.begin():
        gone = s.scalar(select(FlagRow.id).where(FlagRow.status == "open",
                                                 ~exists().where(ReviewRow.flag_id == FlagRow.id),
                                                 text("NOT EXISTS (SELECT 1 FROM escalation_events e "
                                                      "WHERE e.flag_id = flags.id)"))
                        .order_by(FlagRow.id).limit(1))
        s.execute(delete(FlagRow).where(FlagRow.id == gone))
    kept = _assert_kept_equals_recount(province)
    assert sum(c["flags"] for c in kept.values()) == 400


def test_a_change_rolled_back_leaves_the_counts_as_they_were(province: Store) -> None:
    kept = licence_flag_counts(province)
    flag = _open_flag(province, FlagRow.severity == "critical")
    with province.session() as s:
        s.execute(update(FlagRow).where(FlagRow.id == flag.id).values(severity="info"))
        # the trigger ran in the writing transaction: its own reads see the new score
        assert s.get(LicenceFlagCountRow, flag.site_id).score == kept[flag.site_id]["score"] - 2
        s.rollback()
    assert licence_flag_counts(province) == kept == recount_licence_flags(province)


def test_the_revision_fills_the_counts_from_the_flags_a_store_holds(province: Store) -> None:
    """Undone (the table and its triggers dropped), a decision taken meanwhile, then applied again by
    opening the store: the counts are filled from the flags as they are then."""
    config = _migration_config()
    with province.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, _revision_chain()[-2])
    flag = _open_flag(province, FlagRow.rule != "uncertain_label")
    service.decide(province, flag.id, auth.get_user(province, "bench-province"), "dismiss", "cloud_shadow", "shadow")
    url = province.engine.url.render_as_string(hide_password=False)
    province.engine.dispose()
    with pytest.warns(UserWarning, match="upgraded the store"):
        reopened = Store(url)
    try:
        kept = _assert_kept_equals_recount(reopened)
        assert sum(c["dismissed"] for c in kept.values()) == sum(
            c["dismissed"] for c in recount_licence_flags(reopened).values())
        service.decide(reopened, _open_flag(reopened, FlagRow.rule != "uncertain_label").id,
                       auth.get_user(reopened, "bench-province"), "dismiss", "cloud_shadow", "shadow")
        _assert_kept_equals_recount(reopened)  # and the triggers are back
    finally:
        reopened.engine.dispose()
