"""The dashboard and the queue's filter form over a synthetic province (gmsense.bench.queue_load): what
only scans change is kept between requests (gmsense.review.cache) and read again once the store's
scan stamp moves, while a decision shows at once; a long green-survey ranking shows its two ends;
the figures equal the store's. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from gmsense.bench.queue_load import fill_store
from gmsense.outputs.summary_report import licence_flag_counts, summary_tables
from gmsense.review import auth, service
from gmsense.review.app import RANKING_ENDS, create_app
from gmsense.store import FlagRow, SiteRow, Store

NOW = datetime(2026, 11, 30, 12, 0, 0)
PASSWORD = "dashboard-password-1"
LICENCES = 60


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def province(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = str(tmp_path / "dash.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store(url)
    fill_store(store, flags=700, licences=LICENCES, seed=11, password=PASSWORD, now=NOW)
    yield store
    store.engine.dispose()


@pytest.fixture
def client(province: Store, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(province, cache_dir=tmp_path / "pictures", clock=lambda: NOW)) as c:
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
        assert c.post("/login", data={"username": "bench-province", "password": PASSWORD, "csrf_token": token,
                                      "next": "/flags"}, follow_redirects=False).status_code == 303
        yield c


def _open_flags(page: str) -> int:
    return int(re.search(r"<b>(\d+)</b> / \d+ flags open", page).group(1))


def test_the_dashboard_counts_flags_at_every_request_and_shows_the_ends_of_a_long_ranking(
        province: Store, client: TestClient) -> None:
    with province.session() as s:
        n_open = s.scalar(select(func.count()).select_from(FlagRow).where(FlagRow.status == "open"))
        flag_id = s.scalar(select(FlagRow.id).where(FlagRow.status == "open", FlagRow.rule != "uncertain_label")
                           .order_by(FlagRow.id).limit(1))
    page = client.get("/dashboard").text
    assert _open_flags(page) == n_open
    gap = re.search(r'<tr class="ranking-gap"><td colspan="9">&hellip; (\d+) licences ranked between these', page)
    assert gap is not None
    assert int(gap.group(1)) == LICENCES - 2 * RANKING_ENDS
    ranked = re.findall(r'<tr><td>(\d+)</td><td><a href="/sites/', page)
    assert len(ranked) == 2 * RANKING_ENDS
    assert ranked[0] == "1"
    # a decision changes the counts at once (the flags are not kept between requests)
    service.decide(province, flag_id, auth.get_user(province, "bench-province"), "confirm", "violation", "seen")
    assert _open_flags(client.get("/dashboard").text) == n_open - 1
    # the figures are the store's, as the report computes them
    tables = summary_tables(province, "county")
    assert tables["totals"]["open_flags"] == n_open - 1
    counts = licence_flag_counts(province)
    assert sum(c["flags"] for c in counts.values()) == 700
    assert tables["worst"][0]["score"] == max(c["score"] for c in counts.values())


def test_what_only_scans_change_is_kept_until_the_scan_stamp_moves(province: Store, client: TestClient) -> None:
    assert "uranium" not in client.get("/flags").text
    with province.session() as s, s.begin():
        site = s.scalar(select(SiteRow).order_by(SiteRow.site_id).limit(1))
        # A change no command makes without stamping it: the kept filter choices do not see it...
        s.execute(update(SiteRow).where(SiteRow.site_id == site.site_id)
                  .values(attrs={**site.attrs, "mineral_class": "uranium"}))
    assert "uranium" not in client.get("/flags").text
    with province.session() as s, s.begin():
        # ... until the licence is stamped as every licence write does (gmsense.store: upsert_sites).
        s.execute(update(SiteRow).where(SiteRow.site_id == site.site_id).values(updated_at=datetime(2030, 1, 1)))
    assert 'option value="uranium"' in client.get("/flags").text


def _ranking(page: str) -> list[list[str]]:
    table = page[page.index('id="scorecards"'):]
    rows = re.findall(r"<tr>((?:<td>.*?</td>)+)</tr>", table[:table.index("</table>")])
    return [[re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td>(.*?)</td>", row)] for row in rows]


def test_the_ranking_kept_between_requests_follows_every_decision(province: Store, client: TestClient) -> None:
    """The green-survey ranking is kept by the flag counts it was ranked with: a confirmed violation
    ranks again at once, and the page always shows what ranking afresh shows."""
    from gmsense.outputs.scorecards import licence_figures
    from gmsense.outputs.summary_report import scorecard_rows

    def fresh() -> list[list[str]]:
        figures = licence_figures(province, None, years=False)
        _, rows = scorecard_rows(province, "en", figures=figures, flag_counts=licence_flag_counts(province),
                                 ends=RANKING_ENDS)
        return [row for row in rows if not isinstance(row, int)]

    before = _ranking(client.get("/dashboard").text)
    assert before == _ranking(client.get("/dashboard").text) == fresh()
    shown = {row[1]: row for row in before}
    with province.session() as s:
        flag = s.scalars(select(FlagRow).where(FlagRow.status == "open", FlagRow.site_id.in_(shown),
                                               FlagRow.rule.not_in(("uncertain_label", "new_disturbance")))
                         .order_by(FlagRow.id).limit(1)).one()
    service.decide(province, flag.id, auth.get_user(province, "bench-province"), "confirm", "violation", "seen")
    after = _ranking(client.get("/dashboard").text)
    assert after == fresh()
    assert after != before
    moved = {row[1]: row for row in after}.get(flag.site_id)
    if moved is not None:  # still among the ends shown: one more confirmed violation
        assert int(moved[7]) == int(shown[flag.site_id][7]) + 1
