"""The restoration page's trend chart (inline SVG): damaged and restored area and the restoration rate per year,
for the polygons the user may see (the scope applied in SQL) and the filter chose, equal to the figures of
``gmsense restoration report`` (the planted world of tests/test_review_restoration.py, its counties named as
real divisions so that a county reviewer's scope applies)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from gmsense.review import auth
from gmsense.review.app import create_app
from gmsense.review.charts import trend_svg
from gmsense.store import Store
from gmsense.testutils import run_cli, write_annual_composites
from tests.test_review_restoration import ATTRS, PLANTS, YEARS

PASSWORD = "chart-password-1"
#: The planted counties A and B as real divisions of Harbin: Shangzhi and Wuchang.
COUNTIES = {"A": "尚志市", "B": "五常市"}
USERS = {"ada": ("admin", "province"), "sz": ("reviewer", "county:Shangzhi"), "vic": ("viewer", "county:Wuchang")}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The store (users added) and the report of ``gmsense restoration report`` over the whole register."""
    folder = tmp_path_factory.mktemp("chart")
    db = str(folder / "store.db")
    write_annual_composites(folder / "composites", YEARS, PLANTS)
    rows = [{"register_id": p.register_id, "kind": "open_pit", "mineral_class": "metal",
             "responsible_party": "none: historical", "province": "黑龙江省", "city": "哈尔滨市",
             "county": COUNTIES[ATTRS[p.register_id][0]], "geometry": p.geometry} for p in PLANTS]
    gpd.GeoDataFrame(rows, crs="EPSG:32652").to_file(folder / "register.gpkg")
    for args in (("register", "import", folder / "register.gpkg"),
                 ("restoration", "run", "--imagery", folder / "composites"),
                 ("restoration", "report", "--out", folder / "report", "--format", "tables")):
        code, output = run_cli(*args, "--db", db)
        assert code == 0, output
    store = Store(db)
    for name, (role, scope) in USERS.items():
        auth.add_user(store, name, PASSWORD, role, scope=scope)
    store.engine.dispose()
    return folder / "store.db", folder / "report"


@pytest.fixture
def client(planted: tuple[Path, Path], tmp_path: Path) -> Iterator[TestClient]:
    db = tmp_path / "review.db"
    with sqlite3.connect(planted[0]) as source, sqlite3.connect(db) as target:
        source.backup(target)
    with TestClient(create_app(Store(str(db)), cache_dir=tmp_path / "pictures")) as c:
        yield c


def login(client: TestClient, name: str) -> None:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    response = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text


def chart(page: str) -> dict[str, dict[int, float]]:
    """The chart's figures: damaged and restored m2 per year (the bars), the rate per year (the points)."""
    svg = re.search(r'<svg[^>]* id="trend-chart".*?</svg>', page, re.S)
    assert svg, "the page has the trend chart"
    out: dict[str, dict[int, float]] = {"damaged": {}, "restored": {}, "rate": {}}
    for kind, year, m2 in re.findall(r'<rect class="bar (\w+)" data-year="(\d+)" data-m2="([\d.]+)"', svg.group(0)):
        out[kind][int(year)] = float(m2)
    for year, rate in re.findall(r'<circle class="rate" data-year="(\d+)" data-rate="([\d.]+)"', svg.group(0)):
        out["rate"][int(year)] = float(rate)
    assert " style=" not in svg.group(0), "nothing the page's Content-Security-Policy refuses"
    return out


def expected(frame: pd.DataFrame) -> dict[str, dict[int, float]]:
    return {"damaged": dict(zip(frame["year"], frame["damaged_m2"].round(2), strict=True)),
            "restored": dict(zip(frame["year"], frame["restored_m2"].round(2), strict=True)),
            "rate": {int(y): round(r, 4) for y, r in zip(frame["year"], frame["restoration_rate"], strict=True)
                     if pd.notna(r)}}


def test_the_chart_holds_the_report_figures(client: TestClient, planted: tuple[Path, Path]) -> None:
    login(client, "ada")
    got = chart(client.get("/restoration").text)
    total = pd.read_csv(planted[1] / "total.csv")
    assert got == expected(total)
    assert sorted(got["damaged"]) == list(YEARS), "one bar pair per year"
    assert got["damaged"][2016] > 0, "everything planted damaged in 2016"


def test_a_county_reviewer_sees_the_trend_of_their_county(client: TestClient, planted: tuple[Path, Path]) -> None:
    by_county = pd.read_csv(planted[1] / "by_county.csv")
    login(client, "sz")
    shangzhi = chart(client.get("/restoration").text)
    assert shangzhi == expected(by_county[by_county["group"] == "尚志市"].sort_values("year"))
    full = pd.read_csv(planted[1] / "total.csv")
    assert shangzhi["damaged"][2016] < full["damaged_m2"].iloc[0], "not the province's figures"
    # a filter outside the scope shows nothing more: the scope is applied first
    assert 'id="trend-chart"' not in client.get("/restoration", params={"county": "五常市"}).text


def test_a_filter_narrows_the_chart(client: TestClient, planted: tuple[Path, Path]) -> None:
    by_county = pd.read_csv(planted[1] / "by_county.csv")
    login(client, "ada")
    wuchang = chart(client.get("/restoration", params={"county": "五常市"}).text)
    assert wuchang == expected(by_county[by_county["group"] == "五常市"].sort_values("year"))


def test_the_chart_in_chinese_and_mu() -> None:
    rows = [{"year": 2020, "damaged_m2": 30_000.0, "restored_m2": 10_000.0, "restoration_rate": 0.25,
             "target_rate": 0.4},
            {"year": 2021, "damaged_m2": 20_000.0, "restored_m2": 20_000.0, "restoration_rate": float("nan"),
             "target_rate": 0.4}]
    svg = trend_svg(rows, "zh", "mu")
    assert "<title>2020: 损毁面积 45.00亩</title>" in svg
    assert "修复率" in svg
    assert 'data-rate="0.4000"' in svg, "the target"
    assert svg.count('<circle class="rate"') == 1, "a year without a rate has no point"
    assert trend_svg([]) == ""
