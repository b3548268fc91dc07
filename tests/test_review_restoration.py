"""The review app's restoration page (issue 19): the figures of ``gmsense restoration report``, the queue
of register polygons whose status changed in the latest year, and reviewers' decisions on them (CSRF,
roles, the append-only log, 404), over a store filled by ``gmsense restoration run`` on synthetic
annual composites (FastAPI's TestClient, no browser)."""

from __future__ import annotations

import html
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import box
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gmsense.review import auth
from gmsense.review import restoration as rs
from gmsense.review.app import create_app
from gmsense.store import Store
from gmsense.testutils import PlantedMineLand, run_cli, write_annual_composites

YEARS = tuple(range(2016, 2023))
PASSWORDS = {"ada": "admin-password-1", "rita": "reviewer-password-1", "vic": "viewer-password-1"}
ROLES = {"ada": "admin", "rita": "reviewer", "vic": "viewer"}
#: Register polygons planted so that 2022, the latest year, changes three of them.
PLANTS = (
    PlantedMineLand("R-RESTORED", box(600200, 5289650, 600350, 5289800), 2016, restoration=(2019, 2021)),
    PlantedMineLand("R-REVERTED", box(600600, 5289650, 600750, 5289800), 2016, (2017, 2018), reverted_in=2022),
    PlantedMineLand("R-OVERDUE", box(601000, 5289650, 601150, 5289800), 2016),
    PlantedMineLand("R-LATER", box(600200, 5289100, 600350, 5289250), 2016),
    PlantedMineLand("R-MET", box(600600, 5289100, 600750, 5289250), 2016, (2017, 2018)),
    PlantedMineLand("R-ZONE", box(601000, 5289100, 601150, 5289250)),
)
#: register_id -> (county, restoration_deadline, demonstration_zone attribute)
ATTRS = {"R-RESTORED": ("A", None, "Z1"), "R-REVERTED": ("A", None, None), "R-OVERDUE": ("B", "2021-06-30", None),
         "R-LATER": ("B", "2030-12-31", None), "R-MET": ("A", "2020-12-31", None), "R-ZONE": ("B", None, "Z1")}
QUEUED = {"R-RESTORED": "restored", "R-REVERTED": "reverted", "R-OVERDUE": "deadline_passed"}


def plant_restoration(folder: Path, db: str) -> None:
    """Composites, register and zone under ``folder``; imported into ``db`` and analysed by the CLI."""
    write_annual_composites(folder / "composites", YEARS, PLANTS)
    rows = [{"register_id": p.register_id, "kind": "open_pit", "mineral_class": "metal",
             "responsible_party": "none: historical", "province": "HLJ", "city": "Hegang",
             "county": ATTRS[p.register_id][0], "restoration_deadline": ATTRS[p.register_id][1],
             "demonstration_zone": ATTRS[p.register_id][2], "geometry": p.geometry} for p in PLANTS]
    gpd.GeoDataFrame(rows, crs="EPSG:32652").to_file(folder / "register.gpkg")
    gpd.GeoDataFrame([{"zone_id": "Z1", "name": "demonstration zone", "target_rate": 0.6,
                       "geometry": box(601900, 5289000, 602000, 5289100)}],
                     crs="EPSG:32652").to_file(folder / "zones.geojson")
    for args in (("register", "import", folder / "register.gpkg"), ("zones", "import", folder / "zones.geojson"),
                 ("restoration", "run", "--imagery", folder / "composites")):
        code, output = run_cli(*args, "--db", db)
        assert code == 0, output


@pytest.fixture(scope="module")
def planted_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("restoration-review")
    db = folder / "store.db"
    plant_restoration(folder, str(db))
    store = Store(str(db))
    for name, role in ROLES.items():
        auth.add_user(store, name, PASSWORDS[name], role)
    store.engine.dispose()
    return db


@pytest.fixture
def store(planted_db: Path, tmp_path: Path) -> Store:
    db = tmp_path / "review.db"
    with sqlite3.connect(planted_db) as source, sqlite3.connect(db) as target:
        source.backup(target)  # a consistent copy, whatever sits in the write-ahead log
    return Store(str(db))


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(store, cache_dir=tmp_path / "pictures")) as c:
        yield c


def login(client: TestClient, name: str) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    response = client.post("/login", data={"username": name, "password": PASSWORDS[name], "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text


def csrf_of(client: TestClient, path: str = "/restoration") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def cells(page: str, table_id: str) -> list[list[str]]:
    """The body rows of the table ``table_id`` as lists of cell texts."""
    body = re.search(rf'<table[^>]* id="{table_id}".*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def queued(page: str) -> dict[str, str]:
    return dict(re.findall(
        r'class="polygon-link">([^<]+)</a></td>\s*<td><span class="badge change-(\w+)"', page))


def decide(client: TestClient, register_id: str, **form: str) -> object:
    data = {"csrf_token": csrf_of(client, f"/restoration/{register_id}"), "decision": "confirm",
            "reason": "change_seen", "comment": "grass cover on the benches", **form}
    return client.post(f"/restoration/{register_id}/decision", data=data, follow_redirects=False)


def test_the_page_shows_the_report_figures(client: TestClient, store: Store, tmp_path: Path) -> None:
    code, output = run_cli("restoration", "report", "--out", tmp_path / "report", "--db", store.url)
    assert code == 0, output
    summary = (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")
    login(client, "vic")  # viewers see the page
    page = client.get("/restoration").text
    assert 'href="/restoration"' in page, "a link in the navigation"
    total = [html.unescape(li) for li in re.findall(r"<li>(.*?)</li>", re.search(
        r'<ul id="restoration-total">(.*?)</ul>', page, re.S).group(1))]
    assert [f"- {line}" for line in total] == summary.splitlines()[2:4], "the report's own sentences"
    sections = re.findall(r"## (.+?)\n\n\|.*?\|\n\|[-|]+\n((?:\|.*\|\n)+)", summary)
    assert [s[0] for s in sections] == ["By province", "By demonstration zone", "By county"]
    for (_, rows), level in zip(sections, ("province", "zone", "county"), strict=True):
        report = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows.strip().splitlines()]
        assert cells(page, f"by-{level}") == report, level
    # county B in 2022: R-OVERDUE and R-LATER damaged, R-ZONE restored (150 m x 150 m each)
    assert cells(page, "by-county")[1][:5] == ["B", "4.50 ha", "2.25 ha", "33.3%", "40.0%"]
    trend = cells(page, "trend")
    assert [r[0] for r in trend] == [str(y) for y in YEARS]
    totals = pd.read_csv(tmp_path / "report" / "total.csv")
    assert [r[3] for r in trend] == [f"{v:.1%}" if v == v else "-" for v in totals["restoration_rate"]]


def test_the_queue_holds_the_changes_of_the_latest_year(client: TestClient, store: Store) -> None:
    assert {c["register_id"]: c["change"] for c in rs.queue(store)} == QUEUED
    login(client, "vic")
    page = client.get("/restoration").text
    assert queued(page) == QUEUED
    assert "Register polygons whose status changed in 2022" in page
    only_a = client.get("/restoration?county=A").text
    assert queued(only_a) == {k: v for k, v in QUEUED.items() if ATTRS[k][0] == "A"}
    assert [r[0] for r in cells(only_a, "by-county")] == ["A"], "the figures follow the filter too"


def test_a_polygon_page_shows_its_years_and_attributes(client: TestClient) -> None:
    login(client, "vic")
    page = client.get("/restoration/R-REVERTED").text
    years = cells(page, "status-years")
    assert [r[0] for r in years] == [str(y) for y in YEARS]
    assert years[-1][1:3] == ["reverted", "reverted"]
    assert years[-1][-1] == "2022.tif", "each year names its composite"
    assert "reverted after restoration" in page
    assert "none: historical" in page
    assert 'id="decision-form"' not in page, "viewers see but cannot decide"
    assert "Viewers can see flags but not decide them" in page
    quiet = client.get("/restoration/R-LATER").text
    assert "no status change in the latest analysed year" in quiet


def test_decisions_need_the_csrf_token_and_the_reviewer_role(client: TestClient, store: Store) -> None:
    login(client, "vic")
    token = csrf_of(client)
    form = {"decision": "confirm", "reason": "change_seen", "comment": "green"}
    viewer = client.post("/restoration/R-RESTORED/decision", data={"csrf_token": token, **form},
                         follow_redirects=False)
    assert viewer.status_code == 403
    client.cookies.clear()
    login(client, "rita")
    for bad in ("", "forged-token"):
        response = client.post("/restoration/R-RESTORED/decision", data={"csrf_token": bad, **form},
                               follow_redirects=False)
        assert response.status_code == 403
    assert rs.history(store) == []
    page = client.get("/restoration/R-RESTORED").text
    assert 'id="decision-form"' in page
    assert decide(client, "R-RESTORED").status_code == 303
    log = rs.history(store)
    assert [(r.register_id, r.year, r.change, r.decision, r.reason, r.username, r.previous_status) for r in log] == [
        ("R-RESTORED", 2022, "restored", "confirmed", "change_seen", "rita", "pending")]
    assert log[0].at is not None
    assert log[0].comment == "grass cover on the benches"


def test_a_decided_change_leaves_the_queue_and_is_in_the_audit_log(client: TestClient, store: Store) -> None:
    login(client, "rita")
    assert decide(client, "R-OVERDUE", decision="reject", reason="deadline_extended",
                  comment="deadline moved to 2024 by the county").status_code == 303
    assert "R-OVERDUE" not in queued(client.get("/restoration").text)
    page = client.get("/restoration/R-OVERDUE").text
    assert "rejected" in page
    assert "deadline moved to 2024" in cells(page, "history")[0][5]
    assert decide(client, "R-OVERDUE", decision="confirm", reason="change_seen",
                  comment="no works on site").status_code == 303  # a changed decision: a new entry
    assert [(r.decision, r.previous_status) for r in rs.history(store, "R-OVERDUE")] == [
        ("rejected", "pending"), ("confirmed", "rejected")]
    audit = cells(client.get("/audit").text, "restoration-audit")
    assert [(r[2], r[3], r[5], r[7]) for r in audit] == [("rita", "R-OVERDUE", "confirmed", "no works on site"),
                                                         ("rita", "R-OVERDUE", "rejected",
                                                          "deadline moved to 2024 by the county")]
    with store.engine.begin() as connection:
        for statement in ("UPDATE restoration_decisions SET comment = 'x'", "DELETE FROM restoration_decisions"):
            with pytest.raises(DBAPIError, match="audit log"), connection.begin_nested():
                connection.execute(text(statement))


def test_a_decision_needs_a_reason_and_a_comment_and_the_current_change(client: TestClient, store: Store) -> None:
    login(client, "rita")
    for form in ({"comment": "  "}, {"reason": "natural_change"}, {"decision": "reject", "reason": "change_seen"},
                 {"year": "2021"}, {"change": "restored"}):
        response = decide(client, "R-REVERTED", **form)
        assert response.status_code == 303
        assert "error=" in response.headers["location"], form
    assert rs.history(store) == []
    assert "no status change to decide" in decide(client, "R-LATER").headers["location"].replace("%20", " ")


def test_unknown_polygons_are_404(client: TestClient, store: Store) -> None:
    login(client, "rita")
    assert client.get("/restoration/NO-SUCH").status_code == 404
    response = client.post("/restoration/NO-SUCH/decision", data={
        "csrf_token": csrf_of(client), "decision": "confirm", "reason": "change_seen", "comment": "x"})
    assert response.status_code == 404
    assert rs.history(store) == []


def test_anonymous_visitors_are_sent_to_login_and_chinese_works(client: TestClient) -> None:
    for path in ("/restoration", "/restoration/R-RESTORED"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")
    login(client, "vic")
    page = client.get("/restoration?lang=zh").text
    assert "矿山生态修复" in page
    assert "待确认的状态变化" in page
    assert "亩" in cells(page, "by-county")[0][1]
    assert "修复后退化" in page
    assert "台账图斑" in client.get("/restoration/R-REVERTED").text


def test_an_empty_store_says_what_to_run(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "empty.db"))
    auth.add_user(store, "vic", PASSWORDS["vic"], "viewer")
    with TestClient(create_app(store, cache_dir=tmp_path / "pictures")) as c:
        login(c, "vic")
        page = c.get("/restoration")
    assert page.status_code == 200
    assert "gmsense restoration run" in page.text


@pytest.mark.postgres
def test_restoration_decisions_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    plant_restoration(tmp_path, postgres_url)
    store = Store(postgres_url)
    rita = auth.add_user(store, "rita", PASSWORDS["rita"], "reviewer")
    rs.decide(store, "R-REVERTED", rita, "confirm", "change_seen", "bare again")
    assert [c["register_id"] for c in rs.queue(store)] == ["R-OVERDUE", "R-RESTORED"]
    for statement in ("UPDATE restoration_decisions SET comment = 'x'", "DELETE FROM restoration_decisions",
                      "TRUNCATE restoration_decisions"):
        with store.engine.connect() as connection, pytest.raises(DBAPIError, match="audit log"):
            connection.execute(text(statement))
    store.engine.dispose()
