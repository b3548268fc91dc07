"""Registers of mine land and demonstration zones from CGCS2000 corner-point tables (issue 19):
Chinese headers and values, Gauss-Kruger zones with and without the zone prefix, XLSX and CSV,
a second attributes table, the CLI into a real store, the round trip through write_corner_table,
and every problem in one message.

The corner coordinates are made by projecting known WGS 84 polygons with pyproj, so the imported
polygons can be checked against where and how large they really are."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyproj
import pytest
import shapely
from shapely.geometry import Polygon, box

from gmsense.errors import SitesError
from gmsense.geo.corner_table import write_corner_table
from gmsense.geo.register import read_register
from gmsense.geo.register_table import read_register_table, read_zones_table
from gmsense.store import Store
from gmsense.testutils import run_cli

GEOD = pyproj.Geod(ellps="WGS84")
#: Near Luobei (鹤岗市萝北县), Heilongjiang: CGCS2000 3-degree zone 43, CM 129 E (EPSG:4552 / 4531).
LON0, LAT0 = 129.05, 47.30
#: Register polygons in WGS 84 (lon, lat): (kind as the register writes it, kind expected).
PLACES: dict[str, tuple[Polygon, str, str]] = {
    "HG-001": (box(LON0, LAT0, LON0 + 0.010, LAT0 + 0.006), "露天采场", "open_pit"),
    "HG-002": (Polygon([(LON0 + 0.02, LAT0), (LON0 + 0.03, LAT0 + 0.001), (LON0 + 0.028, LAT0 + 0.008),
                        (LON0 + 0.021, LAT0 + 0.006)]), "废石场", "waste_dump"),
    "HG-003": (box(LON0, LAT0 + 0.02, LON0 + 0.004, LAT0 + 0.023), "尾矿库", "tailings"),
    "HG-004": (box(LON0 + 0.04, LAT0 + 0.02, LON0 + 0.05, LAT0 + 0.03), "采空塌陷", "subsidence"),
    "HG-005": (box(LON0 + 0.06, LAT0, LON0 + 0.062, LAT0 + 0.002), "探矿遗留", "exploration_legacy"),
}
ATTRS_ZH = {"矿种类别": "能源矿产", "治理责任人": "历史遗留", "省": "230000", "市": "230400", "县": "230421",
            "治理措施": "削坡覆土种草", "完成时限": "2026年6月30日", "所属示范区": "LB-1"}
POINTS_ZH = {"id": "图斑编号", "point": "拐点号", "x": "X坐标", "y": "Y坐标"}


def _geodesic_area(polygon: Polygon) -> float:
    return abs(GEOD.geometry_area_perimeter(polygon)[0])


def _corner_rows(places: dict[str, Polygon], epsg: int, columns: dict[str, str] = POINTS_ZH,
                 extra: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """One row per corner (X northing, Y easting in ``epsg``, cm), the attributes of ``extra``
    repeated on each of a polygon's rows, as registers print them."""
    to_table = pyproj.Transformer.from_crs(4326, epsg, always_xy=True)
    rows = []
    for the_id, polygon in places.items():
        for number, (lon, lat) in enumerate(list(polygon.exterior.coords)[:-1], start=1):
            east, north = to_table.transform(lon, lat)
            rows.append({columns["id"]: the_id, columns["point"]: number, columns["x"]: round(north, 2),
                         columns["y"]: round(east, 2), **(extra or {}).get(the_id, {})})
    return rows


def _save(rows: list[dict], path: Path) -> Path:
    frame = pd.DataFrame(rows)
    if path.suffix == ".xlsx":
        frame.to_excel(path, index=False)
    else:
        frame.to_csv(path, index=False, encoding="utf-8-sig")
    return path


def _register_table(path: Path, epsg: int = 4552) -> Path:
    extra = {rid: {"图斑类型": kind_zh, **ATTRS_ZH} for rid, (_, kind_zh, _) in PLACES.items()}
    return _save(_corner_rows({rid: p for rid, (p, _, _) in PLACES.items()}, epsg, extra=extra), path)


def _assert_where_they_are(polygons: list) -> None:
    """Every polygon where, and as large as, the WGS 84 polygon its corners were projected from."""
    assert sorted(p.register_id for p in polygons) == sorted(PLACES)
    for polygon in polygons:
        truth = PLACES[polygon.register_id][0]
        assert polygon.crs.to_epsg() == 32652, "Luobei lies in UTM 52N"
        # UTM's scale factor near its central meridian (129 E) makes areas 0.08 % small.
        assert polygon.area_m2 == pytest.approx(_geodesic_area(truth), rel=1.5e-3), polygon.register_id
        assert polygon.geometry_wgs84.hausdorff_distance(truth) < 2e-6, "within ~0.2 m of the true corners"


@pytest.mark.parametrize("name", ["register.csv", "register.xlsx"])
def test_chinese_register_in_a_zone_without_prefix(tmp_path: Path, name: str) -> None:
    path = _register_table(tmp_path / name, 4552)
    with pytest.raises(SitesError, match=r"no zone number in front.*give it with --crs"):
        read_register_table(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        polygons = read_register_table(path, crs="EPSG:4552")
    _assert_where_they_are(polygons)
    assert {p.register_id: p.kind for p in polygons} == {rid: kind for rid, (_, _, kind) in PLACES.items()}
    attrs = polygons[0].attrs
    assert attrs["mineral_class"] == "energy"
    assert attrs["responsible_party"] == "none: historical"
    assert (attrs["province"], attrs["city"], attrs["county"]) == ("230000", "230400", "230421")
    assert attrs["planned_measure"] == "削坡覆土种草"
    assert attrs["restoration_deadline"] == "2026-06-30"
    assert attrs["demonstration_zone"] == "LB-1"
    assert attrs["source_crs"] == "EPSG:4552"


def test_zone_prefixed_eastings_are_detected(tmp_path: Path) -> None:
    path = _register_table(tmp_path / "register.csv", 4531)
    assert pd.read_csv(path, encoding="utf-8-sig")["Y坐标"].between(43_000_000, 44_000_000).all()
    polygons = read_register_table(path)
    _assert_where_they_are(polygons)
    assert {p.attrs["source_crs"] for p in polygons} == {"EPSG:4531"}
    with pytest.raises(SitesError, match=r"eastings carry a zone number but .* expects none"):
        read_register_table(path, crs="EPSG:4552")


def test_english_headers_parts_holes_and_the_register_id_before_a_licence_number(tmp_path: Path) -> None:
    outer, hole = box(LON0, LAT0, LON0 + 0.01, LAT0 + 0.01), box(LON0 + 0.004, LAT0 + 0.004, LON0 + 0.006,
                                                                  LAT0 + 0.006)
    truth = shapely.orient_polygons(Polygon(outer.exterior.coords, [hole.exterior.coords]))
    stated_ha = f"{_geodesic_area(truth) / 1e4:.2f}"
    english = {"id": "register_id", "point": "point", "x": "x", "y": "y"}
    rows = [{"许可证号": "C2300002019061002", **row, "ring": ring, "kind": "tailings", "mineral_class": "metal",
             "responsible_party": "Luobei Gold Co.", "province": "230000", "city": "230400", "county": "230421",
             "面积(公顷)": stated_ha}
            for ring, polygon in ((1, outer), (2, hole)) for row in _corner_rows({"R-1": polygon}, 4552, english)]
    [polygon] = read_register_table(_save(rows, tmp_path / "r.csv"), crs="EPSG:4552")
    assert polygon.register_id == "R-1", "the register's own id wins over the licence number"
    assert len(polygon.geometry.interiors) == 1
    assert polygon.area_m2 == pytest.approx(_geodesic_area(truth), rel=1.5e-3)
    assert polygon.attrs["stated_area_check"] == "ok"
    assert polygon.attrs["stated_area_m2"] == pytest.approx(float(stated_ha) * 1e4)


def test_attributes_in_a_second_table(tmp_path: Path) -> None:
    points = _save(_corner_rows({rid: p for rid, (p, _, _) in PLACES.items()}, 4552,
                                extra={"HG-001": {"类型": "其他"}}), tmp_path / "points.csv")
    attributes = pd.DataFrame([{"编号": rid, "损毁类型": kind_zh, **ATTRS_ZH}
                               for rid, (_, kind_zh, _) in PLACES.items()]
                              + [{"编号": "HG-999", "损毁类型": "尾矿库", **ATTRS_ZH}])
    attributes.loc[attributes["编号"] == "HG-003", "治理责任人"] = "萝北县某矿业有限公司"
    attributes.loc[attributes["编号"] == "HG-005", "目标"] = "ignored"
    path = _save(attributes.to_dict("records"), tmp_path / "attrs.xlsx")
    with pytest.warns(UserWarning, match=r"attrs.xlsx: register_ids with no corner points: HG-999"):
        polygons = {p.register_id: p for p in read_register_table(points, crs="EPSG:4552", attributes=path)}
    assert polygons["HG-001"].kind == "open_pit", "the attributes table wins over the point rows"
    assert polygons["HG-003"].attrs["responsible_party"] == "萝北县某矿业有限公司"
    assert polygons["HG-002"].attrs["responsible_party"] == "none: historical"
    assert "目标" not in polygons["HG-005"].attrs
    without = _save([{"序列": 1, "损毁类型": "尾矿库"}], tmp_path / "no_id.csv")
    with pytest.raises(SitesError, match=r"no_id\.csv: no register_id column; headers accepted include register_id"):
        read_register_table(points, crs="EPSG:4552", attributes=without)


def test_zones_from_a_corner_table(tmp_path: Path) -> None:
    zones = {"LB-1": box(LON0 - 0.01, LAT0 - 0.01, LON0 + 0.08, LAT0 + 0.04),
             "LB-2": box(LON0 + 0.1, LAT0, LON0 + 0.2, LAT0 + 0.05), "LB-3": box(LON0, LAT0 + 0.1, LON0 + 0.1,
                                                                                LAT0 + 0.15)}
    rates = {"LB-1": {"示范区名称": "萝北示范区", "目标治理率": "0.4"},
             "LB-2": {"示范区名称": "二区", "目标治理率": "45 %"},
             "LB-3": {"示范区名称": "三区", "目标治理率": "50%"}}
    path = _save(_corner_rows(zones, 4552, {"id": "示范区编号", "point": "拐点号", "x": "X", "y": "Y"}, rates),
                 tmp_path / "zones.xlsx")
    read = {z.zone_id: z for z in read_zones_table(path, crs="EPSG:4552")}
    assert {k: (z.name, z.target_rate) for k, z in read.items()} == {
        "LB-1": ("萝北示范区", 0.4), "LB-2": ("二区", pytest.approx(0.45)), "LB-3": ("三区", 0.5)}
    assert read["LB-2"].geometry_wgs84.hausdorff_distance(zones["LB-2"]) < 2e-6
    bad = _save(_corner_rows(zones, 4552, {"id": "编号", "point": "拐点号", "x": "X", "y": "Y"},
                             {**rates, "LB-3": {"示范区名称": "三区", "目标治理率": "150%"}}), tmp_path / "bad.csv")
    with pytest.raises(SitesError, match=r"zone_id 'LB-3'\): target_rate is '150%', expected a share"):
        read_zones_table(bad, crs="EPSG:4552")


def test_round_trip_through_write_corner_table(tmp_path: Path) -> None:
    truth = gpd.GeoDataFrame(
        [{"register_id": rid, "kind": kind, "mineral_class": "metal", "responsible_party": "none: historical",
          "province": "230000", "city": "230400", "county": "230421", "geometry": polygon}
         for rid, (polygon, _, kind) in PLACES.items()], geometry="geometry", crs="EPSG:4326")
    truth.to_file(tmp_path / "register.gpkg", engine="pyogrio")
    vector = {p.register_id: p for p in read_register(tmp_path / "register.gpkg")}
    frame = gpd.GeoDataFrame({"register_id": list(vector)}, geometry=[p.geometry_wgs84 for p in vector.values()],
                             crs="EPSG:4326")
    table = write_corner_table(frame, tmp_path / "register_points.csv", "EPSG:4552", id_column="register_id")
    attributes = _save(truth.drop(columns="geometry").to_dict("records"), tmp_path / "attributes.csv")
    back = {p.register_id: p for p in read_register_table(table, crs="EPSG:4552", attributes=attributes)}
    assert set(back) == set(vector)
    for rid, polygon in back.items():
        assert polygon.kind == vector[rid].kind
        rounding_m2 = 0.01 * vector[rid].geometry.length  # corners written to the cm
        assert polygon.area_m2 == pytest.approx(vector[rid].area_m2, abs=rounding_m2)
        assert polygon.geometry.symmetric_difference(vector[rid].geometry).area < rounding_m2


def test_every_problem_in_one_message(tmp_path: Path) -> None:
    places = {rid: p for rid, (p, _, _) in PLACES.items()}
    a, b, c, d = places["HG-004"].exterior.coords[:4]
    places["HG-004"] = Polygon([a, c, b, d])  # corners out of order: the outline crosses itself
    extra = {rid: {"图斑类型": kind_zh, **ATTRS_ZH} for rid, (_, kind_zh, _) in PLACES.items()}
    extra["HG-001"]["图斑类型"] = "采石场"
    extra["HG-002"]["完成时限"] = "明年"
    rows = _corner_rows(places, 4552, extra=extra)
    rows = [r for r in rows if not (r["图斑编号"] == "HG-005" and r["拐点号"] > 2)]  # two points: no ring
    rows[1]["图斑编号"] = None  # the second corner of HG-001 has lost its id
    path = _save(rows, tmp_path / "register.csv")
    with pytest.raises(SitesError) as caught:
        read_register_table(path, crs="EPSG:4552")
    message = str(caught.value)
    assert message.startswith(f"{path}: rows 3: corner points without a register_id")
    assert "register polygon HG-005: a ring has 2 distinct points, needs at least 3 to close" in message
    assert "register polygon HG-004: the corner points do not form a valid polygon (Self-intersection" in message
    assert "(register_id 'HG-001'): kind is '采石场', expected one of open_pit, waste_dump" in message
    assert "露天采场" in message, "the Chinese kinds are listed too"
    assert "(register_id 'HG-002'): restoration_deadline is '明年', not a date" in message


def test_missing_columns_name_the_headers_accepted(tmp_path: Path) -> None:
    rows = _corner_rows({"HG-001": PLACES["HG-001"][0]}, 4552, extra={"HG-001": {"矿种类别": "金属矿产"}})
    path = _save(rows, tmp_path / "r.csv")
    with pytest.raises(SitesError) as caught:
        read_register_table(path, crs="EPSG:4552")
    message = str(caught.value)
    assert "missing columns kind, responsible_party, province, city, county" in message
    assert "a corner table gives kind under kind/类型/图斑类型/损毁类型" in message
    assert "a corner table gives county under county/县/县区/区县" in message
    assert "load county boundaries first" in message
    no_points = _save([{"图斑编号": "HG-001", "X坐标": 1, "Y坐标": 2}], tmp_path / "p.csv")
    with pytest.raises(SitesError, match="no column for point; headers accepted include point: point/point_no"):
        read_register_table(no_points, crs="EPSG:4552")
    # Without the division columns, when the store holds county boundaries:
    rows = _corner_rows({"HG-001": PLACES["HG-001"][0]}, 4552, extra={"HG-001": {
        "类型": "露天采场", "矿种类别": "金属矿产", "责任主体": "无"}})
    [polygon] = read_register_table(_save(rows, tmp_path / "nodiv.csv"), crs="EPSG:4552", divisions_required=False)
    assert (polygon.kind, polygon.attrs["mineral_class"], polygon.attrs["responsible_party"]) == (
        "open_pit", "metal", "none: historical")
    assert "county" not in polygon.attrs


def test_unknown_crs_and_unreadable_tables(tmp_path: Path) -> None:
    path = _register_table(tmp_path / "register.csv")
    with pytest.raises(SitesError, match="--crs EPSG:999999 is not a CRS pyproj knows"):
        read_register_table(path, crs="EPSG:999999")
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(SitesError, match=r"broken.xlsx: cannot be read as an Excel workbook .*save the table as"):
        read_register_table(broken)
    text = tmp_path / "text.xlsx"
    text.write_text("图斑编号,X,Y\n", encoding="utf-8")
    with pytest.raises(SitesError, match=r"text\.xlsx: cannot be read as a table"):
        read_zones_table(text)


def test_vector_registers_take_chinese_values_too(tmp_path: Path) -> None:
    row = {"register_id": "R-1", "kind": "排土场", "mineral_class": "非金属矿产", "responsible_party": "无",
           "province": "230000", "city": "230400", "county": "230421", "geometry": PLACES["HG-001"][0]}
    gpd.GeoDataFrame([row], geometry="geometry", crs="EPSG:4326").to_file(tmp_path / "r.gpkg", engine="pyogrio")
    [polygon] = read_register(tmp_path / "r.gpkg")
    assert (polygon.kind, polygon.attrs["mineral_class"], polygon.attrs["responsible_party"]) == (
        "waste_dump", "non_metal", "none: historical")


def _county_boundary(path: Path) -> Path:
    """Luobei (constructed: a box around the register's polygons), as the divisions command reads it."""
    outline = box(LON0 - 0.05, LAT0 - 0.05, LON0 + 0.15, LAT0 + 0.1)
    gpd.GeoDataFrame([{"county": "230421", "geometry": outline}], geometry="geometry",
                     crs="EPSG:4326").to_file(path, engine="pyogrio")
    return path


def test_the_cli_into_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gmsense.cli._common import err, out

    monkeypatch.setattr(out, "width", 250)
    monkeypatch.setattr(err, "width", 250)
    db = str(tmp_path / "store.db")
    table = _register_table(tmp_path / "register.xlsx", 4552)
    code, output = run_cli("register", "import", table, "--db", db)
    assert code == 2
    assert "error:" in output
    assert "give it with --crs" in output
    assert "Traceback" not in output
    assert not Path(db).exists(), "a refused import creates no store"
    code, output = run_cli("register", "import", table, "--crs", "EPSG:4552", "--db", db)
    assert code == 0, output
    expected_ha = sum(_geodesic_area(p) for p, _, _ in PLACES.values()) / 10_000
    text = " ".join(output.split())
    assert ("imported 5 register polygons (exploration_legacy 1, open_pit 1, subsidence 1, tailings 1, "
            "waste_dump 1; ") in text
    total_ha = float(text.split("; ")[1].split(" ha)")[0])
    assert total_ha == pytest.approx(expected_ha, rel=1.5e-3)
    assert "5 new, 0 replaced" in text
    rows = {r.register_id: r for r in Store(db).register_rows()}
    assert rows["HG-003"].kind == "tailings"
    assert rows["HG-003"].attrs["restoration_deadline"] == "2026-06-30"
    assert rows["HG-003"].area_m2 == pytest.approx(_geodesic_area(PLACES["HG-003"][0]), rel=1.5e-3)
    assert (rows["HG-003"].province_code, rows["HG-003"].county_code) == ("230000", "230421")

    bad = _save([{**r, "图斑类型": "采石场"} if r["图斑编号"] == "HG-001" else r
                 for r in pd.read_excel(table, dtype=str).to_dict("records")], tmp_path / "bad.csv")
    code, output = run_cli("register", "import", bad, "--crs", "EPSG:4552", "--db", db)
    assert code == 2
    assert "kind is '采石场', expected one of open_pit" in " ".join(output.split())
    assert len(Store(db).register_rows()) == 5
    code, output = run_cli("register", "import", tmp_path / "bad.gpkg", "--crs", "EPSG:4552", "--db", db)
    assert code == 2
    assert "--crs and --attributes are for corner-point tables" in " ".join(output.split())
    code, output = run_cli("register", "import", table, "--layer", "register", "--db", db)
    assert code == 2
    assert "--layer is for GeoPackages" in output

    # With county boundaries in the store the division columns may be left out.
    code, output = run_cli("divisions", "import", _county_boundary(tmp_path / "counties.gpkg"), "--db", db)
    assert code == 0, output
    points = _save(_corner_rows({"HG-101": PLACES["HG-001"][0]}, 4531), tmp_path / "points.csv")
    attributes = _save([{"编号": "HG-101", "类型": "尾矿库", "矿种类别": "金属矿产", "责任主体": "无"}],
                       tmp_path / "attributes.csv")
    code, output = run_cli("register", "import", points, "--attributes", attributes, "--db", db)
    assert code == 0, output
    assert "divisions from the county boundaries (no division attributes): 1 polygon" in " ".join(output.split())
    located = {r.register_id: r for r in Store(db).register_rows()}["HG-101"]
    assert (located.kind, located.county_code) == ("tailings", "230421")

    zones = _save(_corner_rows({"LB-1": box(LON0 - 0.01, LAT0 - 0.01, LON0 + 0.08, LAT0 + 0.04)}, 4531,
                               {"id": "示范区编号", "point": "拐点号", "x": "X", "y": "Y"},
                               {"LB-1": {"名称": "萝北示范区", "目标治理率": "40%"}}), tmp_path / "zones.csv")
    code, output = run_cli("zones", "import", zones, "--db", db)
    assert code == 0, output
    assert "imported 1 zone: 1 new, 0 replaced" in output
    assert [(z.zone_id, z.name, z.target_rate) for z in Store(db).zone_rows()] == [("LB-1", "萝北示范区", 0.4)]
