"""Escalation stages in the queue and the exports (issue 20, item 2), on SQLite and PostgreSQL: over a
synthetic province (gmsense.bench.queue_load: flags of every severity, confirmed ones with stages
signed and returned), the stage filters in SQL select exactly the flags whose chain, replayed from
its events (gmsense.review.escalation.get_chain), is pending at that level, complete or overdue; the
queue page, the JSON API and the web and command-line exports show the same stage."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gmsense.bench.queue_load import fill_store
from gmsense.review import escalation, service, stages
from gmsense.review.app import create_app
from gmsense.store import FlagRow, Store
from gmsense.testutils import run_cli

NOW = datetime(2026, 11, 30, 12, 0, 0)
PASSWORD = "stage-password-1"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def province(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = str(tmp_path / "stages.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store(url)
    fill_store(store, flags=600, licences=40, seed=7, password=PASSWORD, now=NOW)
    yield store
    store.engine.dispose()


def _replayed(store: Store) -> dict[int, escalation.Chain]:
    with store.session() as s:
        ids = list(s.scalars(select(FlagRow.id).order_by(FlagRow.id)))
    return {i: escalation.get_chain(store, i, now=NOW) for i in ids}


def _filtered(store: Store, **filters: str) -> set[int]:
    page = service.queue(store, service.QueueFilter(**{"status": "all", **filters}), page_size=10_000, now=NOW)
    assert page.total == len(page.items)
    return {item["id"] for item in page.items}


def test_stage_filters_in_sql_agree_with_the_replayed_chains(province: Store) -> None:
    chains = _replayed(province)
    pending = {i: c.pending for i, c in chains.items()}
    for level in ("county", "city", "province"):
        expected = {i for i, stage in pending.items() if stage is not None and stage.level == level}
        assert expected, f"the synthetic province has flags pending at the {level}"
        assert _filtered(province, stage=level) == expected, level
    complete = {i for i, c in chains.items() if c.complete}
    assert complete, "some chains are signed to the end"
    assert _filtered(province, stage="complete") == complete
    overdue = {i for i, stage in pending.items() if stage is not None and stage.overdue}
    assert overdue, "some pending stages are overdue"
    assert overdue != {i for i, stage in pending.items() if stage is not None}, "not all"
    assert _filtered(province, overdue="yes") == overdue
    city_overdue = {i for i in overdue if pending[i].level == "city"}
    assert _filtered(province, stage="city", overdue="yes") == city_overdue
    # ... and with the other filters: within a status and a severity
    confirmed_critical = {i for i in overdue if chains[i].severity == "critical"} & _filtered(province,
                                                                                              status="confirmed")
    assert _filtered(province, overdue="yes", severity="critical", status="confirmed") == confirmed_critical
    # The current stage of every flag, as the queue and the exports show it, is the replayed one.
    with province.session() as s:
        flags = list(s.scalars(select(FlagRow)))
        current = stages.current_stages(s, flags, escalation.shipped_rules(), NOW)
    for flag_id, chain in chains.items():
        shown, stage = current[flag_id], chain.pending
        if stage is not None:
            assert (shown.state, shown.number, shown.level, shown.action, shown.due_at, shown.overdue) == (
                "pending", stage.index + 1, stage.level, stage.action, stage.due_at, stage.overdue), flag_id
        else:
            assert shown.state == ("complete" if chain.complete else "none" if not chain.stages else "closed"), flag_id


def test_stage_filters_refuse_unknown_values() -> None:
    with pytest.raises(Exception, match="unknown stage 'district'"):
        service.QueueFilter(stage="district")
    with pytest.raises(Exception, match="overdue is 'yes'"):
        service.QueueFilter(overdue="maybe")


def _login(client: TestClient, name: str) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    response = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token,
                                           "next": "/flags"}, follow_redirects=False)
    assert response.status_code == 303, response.text


def test_the_queue_page_api_and_exports_show_the_stage(province: Store, tmp_path: Path) -> None:
    with province.session() as s:
        current = stages.current_stages(s, list(s.scalars(select(FlagRow))), escalation.shipped_rules(), NOW)
    with TestClient(create_app(province, cache_dir=tmp_path / "pictures", clock=lambda: NOW)) as client:
        _login(client, "bench-province")
        api = client.get("/api/flags", params={"stage": "city", "overdue": "yes", "page_size": 500}).json()
        assert api["total"] == len(api["items"]) > 0
        for item in api["items"]:
            assert item["stage"]["state"] == "pending"
            assert item["stage"]["level"] == "city"
            assert item["stage"]["overdue"] is True
            assert item["stage"]["due_at"] < NOW.isoformat()
        assert client.get("/api/flags", params={"stage": "district"}).status_code == 400
        page = client.get("/flags", params={"stage": "city", "overdue": "yes"}).text
        first = api["items"][0]
        assert f"city review, due {first['stage']['due_at'][:10]}" in page
        assert '<span class="badge overdue">overdue</span>' in page
        assert 'option value="city" selected' in page
        exported = list(csv.DictReader(io.StringIO(client.get("/export/flags.csv", params={"status": "all"}).text)))
    assert len(exported) == len(current)
    for row in exported:
        shown = current[int(row["flag_id"])]
        assert row["stage_state"] == shown.state
        assert row["stage"] == (str(shown.number) if shown.number else "")
        assert row["stage_level"] == (shown.level or "")
        assert row["stage_due"] == (shown.due_at.isoformat(timespec="seconds") if shown.due_at else "")
        assert row["stage_overdue"] == ("" if shown.state != "pending" else str(shown.overdue))
    code, output = run_cli("export", "flags", "--format", "csv", "--out", tmp_path / "flags.csv",
                           "--db", province.url)
    assert code == 0, output
    cli_rows = {int(r["flag_id"]): r for r in csv.DictReader((tmp_path / "flags.csv").open(encoding="utf-8"))}
    assert set(cli_rows) == set(current)
    assert {i: r["stage_state"] for i, r in cli_rows.items()} == {i: c.state for i, c in current.items()}
    assert {i: r["stage_level"] for i, r in cli_rows.items()} == {i: c.level or "" for i, c in current.items()}
