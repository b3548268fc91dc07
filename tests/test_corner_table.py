"""Corner-point licence tables in CGCS2000 (EPSG:4490, zone-prefixed 4513-4533, 4534-4554)."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyproj
import pytest
from typer.testing import CliRunner

from gmsense.cli import app
from gmsense.errors import SitesError
from gmsense.geo.corner_table import read_corner_table, write_corner_table
from gmsense.geo.sites import read_sites

runner = CliRunner()
GEOD = pyproj.Geod(ellps="GRS80")


def _rect(north: float, east: float, height: float, width: float) -> list[tuple[float, float]]:
    """Corners as (X northing, Y easting), clockwise from the north-west."""
    return [(north + height, east), (north + height, east + width), (north, east + width), (north, east)]


def _table(path: Path, rings: dict[tuple[str, int, int], list[tuple[float, float]]], chinese: bool = False,
           extra: dict[str, dict[str, str]] | None = None) -> Path:
    rows = []
    for (licence, part, ring), points in rings.items():
        for i, (x, y) in enumerate(points, start=1):
            rows.append({"licence_no": licence, "part": part, "ring": ring, "point": i, "x": x, "y": y,
                         **(extra or {}).get(licence, {})})
    frame = pd.DataFrame(rows)
    if chinese:
        frame = frame.rename(columns={"licence_no": "许可证号", "part": "圈号", "ring": "环号", "point": "拐点号",
                                      "x": "X坐标", "y": "Y坐标"})
    if path.suffix == ".xlsx":
        frame.to_excel(path, index=False)
    else:
        frame.to_csv(path, index=False, encoding="utf-8-sig")
    return path


def _gk_area(frame: gpd.GeoDataFrame, licence: str) -> float:
    geom = frame.set_index("site_id").loc[licence, "geometry"]
    return abs(GEOD.geometry_area_perimeter(geom)[0])


def test_gauss_kruger_cm129_without_prefix(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv", {("C2301001", 1, 1): _rect(5_290_000, 500_000, 800, 1000)})
    with pytest.raises(SitesError, match="--crs"):
        read_corner_table(path)
    frame = read_corner_table(path, crs="EPSG:4552")
    assert frame.crs.to_epsg() == 4326
    assert frame.loc[0, "area_m2"] == pytest.approx(800_000, rel=1e-3), "at the central meridian GK scale ~1"
    assert _gk_area(frame, "C2301001") == pytest.approx(800_000, rel=1e-3)
    centroid = frame.geometry.iloc[0].centroid
    assert centroid.x == pytest.approx(129.0, abs=0.01)
    assert 47.0 < centroid.y < 48.0


def test_zone_prefix_is_detected(tmp_path: Path) -> None:
    # Zone 42 (CM 126 E): 42 500 000 is the central meridian.
    path = _table(tmp_path / "t.csv", {("T2302002", 1, 1): _rect(5_200_000, 42_510_000, 500, 600)}, chinese=True)
    frame = read_corner_table(path)
    assert frame.loc[0, "source_crs"] == "EPSG:4530"
    assert frame.geometry.iloc[0].centroid.x == pytest.approx(126.13, abs=0.02)
    assert frame.loc[0, "area_m2"] == pytest.approx(300_000, rel=2e-3)


def test_geographic_cgcs2000(tmp_path: Path) -> None:
    corners = [(47.01, 128.00), (47.01, 128.02), (47.00, 128.02), (47.00, 128.00)]  # (lat, lon) = (X, Y)
    path = _table(tmp_path / "t.csv", {("G1", 1, 1): corners})
    frame = read_corner_table(path)
    assert frame.loc[0, "source_crs"] == "EPSG:4490"
    lons, lats = [c[1] for c in corners], [c[0] for c in corners]
    expected = abs(GEOD.polygon_area_perimeter(lons, lats)[0])
    assert frame.loc[0, "area_m2"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("points", "crs"),
    [
        ([(y, x) for x, y in _rect(5_290_000, 500_000, 800, 1000)], "EPSG:4552"),
        ([(y, x) for x, y in _rect(5_290_000, 43_500_000, 800, 1000)], None),
        ([(128.00, 47.01), (128.02, 47.01), (128.02, 47.00)], None),
    ],
)
def test_swapped_axes_are_refused(tmp_path: Path, points: list, crs: str | None) -> None:
    path = _table(tmp_path / "t.csv", {("S1", 1, 1): points})
    with pytest.raises(SitesError, match="swapped"):
        read_corner_table(path, crs=crs)


def test_parts_holes_closing_point_and_chinese_attributes(tmp_path: Path) -> None:
    outer = _rect(5_290_000, 500_000, 1000, 1000)
    hole = _rect(5_290_400, 500_400, 200, 200)
    second = _rect(5_295_000, 500_000, 100, 100)
    rings = {("C1", 1, 1): [*outer, outer[0]], ("C1", 1, 2): hole, ("C1", 2, 1): second}
    attrs = {"C1": {"矿业权人": "伊春金山勘查有限公司", "矿种": "石墨", "类型": "勘查", "有效期起": "2021年5月1日",
                    "有效期止": "2026/04/30", "面积(平方公里)": "0.97", "县": "嘉荫县"}}
    path = _table(tmp_path / "t.xlsx", rings, chinese=True, extra=attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = read_corner_table(path, crs="EPSG:4552")
    row = frame.iloc[0]
    assert row.geometry.geom_type == "MultiPolygon"
    assert len(row.geometry.geoms[0].interiors) == 1
    assert row.area_m2 == pytest.approx(1_000_000 - 40_000 + 10_000, rel=1e-3)
    assert (row.holder, row.mineral_class, row.licence_type) == ("伊春金山勘查有限公司", "non_metal", "exploration")
    assert (row.licence_start, row.licence_end, row.county) == ("2021-05-01", "2026-04-30", "嘉荫县")


def test_stated_area_is_checked(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv", {("A1", 1, 1): _rect(5_290_000, 500_000, 800, 1000)},
                  extra={"A1": {"area_km2": "0.85"}})
    with pytest.warns(UserWarning, match=r"licence A1: .*0\.8000 km2 .*0\.8500 km2"):
        read_corner_table(path, crs="EPSG:4552")


def test_bad_tables(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"id": [1], "east": [5], "north": [6]}).to_csv(path, index=False)
    with pytest.raises(SitesError, match="no column for licence_no, point, x, y"):
        read_corner_table(path)
    two_points = _table(tmp_path / "two.csv", {("B1", 1, 1): _rect(5_290_000, 500_000, 800, 1000)[:2]})
    with pytest.raises(SitesError, match="needs at least 3"):
        read_corner_table(two_points, crs="EPSG:4552")
    wrong_zone = _table(tmp_path / "z.csv", {("Z1", 1, 1): _rect(5_290_000, 500_000, 800, 1000)})
    with pytest.raises(SitesError, match="zone number 43"):
        read_corner_table(wrong_zone, crs="EPSG:4531")


def test_round_trip_through_the_cli(tmp_path: Path) -> None:
    rings = {("C1", 1, 1): _rect(5_290_000, 500_000, 800, 1000), ("C2", 1, 1): _rect(5_292_000, 501_000, 300, 300)}
    table = _table(tmp_path / "in.csv", rings, chinese=True)
    result = runner.invoke(app, ["sites", "import", str(table), "--crs", "EPSG:4552", "--out",
                                 str(tmp_path / "licences.gpkg")])
    assert result.exit_code == 0, result.output
    sites = read_sites(tmp_path / "licences.gpkg")
    assert sorted(s.site_id for s in sites) == ["C1", "C2"]
    result = runner.invoke(app, ["sites", "export-table", str(tmp_path / "licences.gpkg"), "--crs", "EPSG:4552",
                                 "--out", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    back = read_corner_table(tmp_path / "out.csv", crs="EPSG:4552")
    original = read_corner_table(table, crs="EPSG:4552")
    for licence in ("C1", "C2"):
        a = original.set_index("site_id").loc[licence, "geometry"]
        b = back.set_index("site_id").loc[licence, "geometry"]
        assert a.symmetric_difference(b).area < 1e-12
    written = pd.read_csv(tmp_path / "out.csv", encoding="utf-8-sig")
    assert list(written.columns) == ["许可证号 licence_no", "圈号 part", "环号 ring", "拐点号 point", "X", "Y"]
    assert written["X"].between(5_290_000, 5_293_000).all(), "X is the northing"


def test_write_patches_as_corner_table(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame({"patch_id": ["P1"]}, geometry=gpd.GeoSeries.from_wkt(
        ["POLYGON ((129 47, 129.001 47, 129.001 47.001, 129 47))"]), crs=4326)
    path = write_corner_table(frame, tmp_path / "p.csv", "EPSG:4490", "patch_id")
    written = pd.read_csv(path, encoding="utf-8-sig")
    assert written["X"].tolist() == [47.0, 47.0, 47.001]
    assert written["Y"].tolist() == [129.0, 129.001, 129.001]


SAMPLES = Path(__file__).resolve().parent.parent / "docs" / "samples"


@pytest.mark.parametrize("attributes", ["register_attributes_zh.csv", "register_attributes_en.csv"])
def test_sample_register_with_a_separate_attributes_table_reaches_the_store(tmp_path: Path, attributes: str) -> None:
    from gmsense.store import Store

    out = tmp_path / "licences.gpkg"
    result = runner.invoke(app, ["sites", "import", str(SAMPLES / "register_corners.csv"), "--attributes",
                                 str(SAMPLES / attributes), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "attributes for 3 of 3 licences" in result.output
    assert "T2312202205007: the corner points enclose 1.3800 km2 but the table states 1.5000 km2" in " ".join(
        result.output.split())
    store = Store(str(tmp_path / "s.db"))
    store.upsert_sites(read_sites(out))  # what a scan stores first
    attrs = {row.site_id: row.attrs for row in store.site_rows()}
    assert set(attrs) == {"T2312202104001", "C2300002019061002", "T2312202205007"}
    graphite, limestone, gold = attrs["T2312202104001"], attrs["C2300002019061002"], attrs["T2312202205007"]
    assert (graphite["mineral_class"], graphite["licence_type"]) == ("non_metal", "exploration")
    assert (limestone["mineral_class"], limestone["licence_type"]) == ("non_metal", "mining")
    assert (gold["mineral_class"], gold["licence_type"]) == ("metal", "exploration")
    assert graphite["stated_area_m2"] == pytest.approx(800_000)
    assert (graphite["stated_area_check"], limestone["stated_area_check"]) == ("ok", "ok")
    assert gold["stated_area_m2"] == pytest.approx(1_500_000)
    assert gold["stated_area_check"] == "differs"
    assert gold["stated_area_difference"] == pytest.approx(-0.08, abs=1e-3)
    assert (graphite["licence_start"], gold["licence_end"]) == ("2021-05-01", "2027-05-19")
    assert graphite["holder"] in ("黑龙江省某地质勘查院", "Heilongjiang geological survey institute")
    assert graphite["county"] in ("嘉荫县", "Jiayin")


def test_attributes_table_overrides_and_completes_the_corner_table(tmp_path: Path) -> None:
    rings = {("A1", 1, 1): _rect(5_290_000, 500_000, 800, 1000), ("A2", 1, 1): _rect(5_292_000, 501_000, 300, 300)}
    table = _table(tmp_path / "t.csv", rings, chinese=True, extra={"A1": {"矿种": "煤"}})
    attrs = tmp_path / "attrs.csv"
    pd.DataFrame({"许可证号": [" A1 ", "A2"], "矿种": ["石墨", ""], "类型": ["采矿", "勘查"],
                  "面积(公顷)": ["80", "9"]}).to_csv(attrs, index=False, encoding="utf-8-sig")
    frame = read_corner_table(table, crs="EPSG:4552", attributes=attrs).set_index("site_id")
    assert frame.loc["A1", "mineral_class"] == "non_metal", "the attributes table wins over the point rows"
    assert frame.loc["A1", "licence_type"] == "mining"
    assert pd.isna(frame.loc["A2", "mineral_class"])
    assert frame.loc["A2", "licence_type"] == "exploration"
    assert frame.loc["A2", "stated_area_check"] == "ok"


def test_attributes_table_without_licence_numbers_is_refused(tmp_path: Path) -> None:
    table = _table(tmp_path / "t.csv", {("A1", 1, 1): _rect(5_290_000, 500_000, 800, 1000)})
    attrs = tmp_path / "attrs.csv"
    pd.DataFrame({"编号": ["A1"], "矿种": ["煤"]}).to_csv(attrs, index=False)
    with pytest.raises(SitesError, match="no licence number column"):
        read_corner_table(table, crs="EPSG:4552", attributes=attrs)
    result = runner.invoke(app, ["sites", "import", str(table), "--crs", "EPSG:4552", "--attributes", str(attrs),
                                 "--out", str(tmp_path / "l.gpkg")])
    assert result.exit_code == 2
    assert "no licence number column" in result.output
    assert not (tmp_path / "l.gpkg").exists()


def test_point_rows_without_a_licence_number_and_broken_workbooks_are_refused(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv", {("C1", 1, 1): _rect(5_290_000, 500_000, 800, 1000)})
    frame = pd.read_csv(path, encoding="utf-8-sig", dtype=str)
    frame.loc[2, "licence_no"] = None
    frame.to_csv(path, index=False, encoding="utf-8-sig")
    with pytest.raises(SitesError, match=r"rows 4: corner points without a licence number"):
        read_corner_table(path, crs="EPSG:4552")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not a workbook")
    result = runner.invoke(app, ["sites", "import", str(broken), "--out", str(tmp_path / "l.gpkg")])
    assert result.exit_code == 2
    assert "cannot be read as an Excel workbook" in result.output
