"""Protected land and zoning (issue 20, item 4): layers read, validated, repaired and versioned in the
store; the rule ``protected_land`` in a real scan (a layer in EPSG:4326 over a licence in UTM, a
planted clearing half on basic farmland); register polygons on protected land; the CLI."""

from __future__ import annotations

import pickle
from pathlib import Path

import geopandas
import numpy as np
import pyproj
import pytest
import xarray as xr
from shapely import wkt
from shapely.geometry import Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from gmsense.batch.request import ScanRequest
from gmsense.batch.scan import run_scan
from gmsense.config import Settings, load_settings
from gmsense.errors import SitesError
from gmsense.geo.layers import LayerSet, normalise_kind, read_layer
from gmsense.geo.register import RegisterPolygon
from gmsense.geo.sites import WGS84, Site, SiteRepairWarning, reproject_geometry
from gmsense.restoration.protected import check_register_layers
from gmsense.store import Store
from gmsense.testutils import PlantedBreak, cube_site, make_cube, run_cli

UTM = pyproj.CRS.from_epsg(32652)
#: The planted clearing: rows 10-20, columns 10-22 of a 10 m grid at (600000, 5290000): 120 m x 100 m.
CLEARING = box(600_100, 5_289_800, 600_220, 5_289_900)
#: Basic farmland over the clearing's western 60 m (drawn in UTM, written in EPSG:4326).
FARMLAND_UTM = box(599_900, 5_289_700, 600_160, 5_290_000)


def _write_layer(path: Path, geometries_utm: list[BaseGeometry], crs: str | None = "EPSG:4326", **props) -> Path:
    frame = geopandas.GeoDataFrame({"name": [f"plot {i}" for i in range(len(geometries_utm))], **props},
                                   geometry=[g.segmentize(5.0) for g in geometries_utm], crs=UTM)
    if crs is not None:
        frame = frame.to_crs(crs)
    frame.to_file(path, engine="pyogrio")
    return path


class _CubeSource:
    """A fixed cube, cut to the bounds of what is asked for."""

    name = "fixed"

    def __init__(self, cube: xr.Dataset) -> None:
        self.cube = cube

    def load(self, site: Site, region: BaseGeometry, start: str | None, end: str | None) -> xr.Dataset:
        minx, miny, maxx, maxy = reproject_geometry(region, site.crs, UTM).bounds
        x, y = self.cube["x"], self.cube["y"]
        return self.cube.isel(x=np.flatnonzero((x > minx) & (x < maxx)), y=np.flatnonzero((y > miny) & (y < maxy)))

    def latest_date(self, site: Site, start: str | None, end: str | None) -> str | None:
        return None


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return make_cube(ny=40, nx=40, years=(2019, 2020, 2021), breaks=(PlantedBreak(slice(10, 20), slice(10, 22),
                                                                                  "2020-07-01"),),
                     cloud_share=0.0, seed=3)


def _expected_overlap(patch_local_wkt: str, layer_file: Path) -> float:
    """The overlap computed independently: the stored layer file reprojected to UTM by geopandas."""
    layer = geopandas.read_file(layer_file).to_crs(UTM).union_all()
    return float(wkt.loads(patch_local_wkt).intersection(layer).area)


def test_a_planted_clearing_on_basic_farmland_is_flagged_with_its_overlap_and_layer_version(
        cube: xr.Dataset, tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    store = Store(db)
    farmland = _write_layer(tmp_path / "farmland.geojson", [FARMLAND_UTM])
    row, change = store.add_layer(read_layer(farmland, "farmland", "basic_farmland"), source_file=str(farmland))
    assert (row.version, change, row.kind, row.n_features) == (1, "new", "basic_farmland", 1)
    # a red line far away (another licence's business): never near this licence, never in its tasks
    far = _write_layer(tmp_path / "far.geojson", [box(640_000, 5_250_000, 641_000, 5_251_000)])
    store.add_layer(read_layer(far, "far_red_line", "ecological_red_line"))
    # The licence in UTM (a zone of its own: the cube's), the layer in EPSG:4326.
    site = cube_site(cube, "L-1", inset_m=50, mineral_class="metal", licence_type="exploration")
    settings = Settings().with_overrides({"sites.buffer_m": 50.0})
    layers = store.layer_set()
    request = ScanRequest([site], _CubeSource(cube), settings, layers=layers)
    assert [layer.name for layer in request.only([site]).layers.layers] == ["farmland"]
    summary = run_scan(request, store)
    assert summary.status == "completed", summary.sites
    flags = [f for f in store.flag_rows() if f.rule == "protected_land"]
    [patch] = [p for p in store.patch_rows() if p.disturbance_class == "clearing"]
    assert len(flags) == 1
    flag = flags[0]
    expected = _expected_overlap(patch.local_wkt, farmland)
    assert expected == pytest.approx(60 * 100, rel=0.01)  # the clearing's western 60 m
    assert flag.severity == load_settings().rules.protected_land_severity["basic_farmland"] == "critical"
    assert flag.patch_id == patch.patch_id
    assert flag.flag_key == "farmland"
    assert (flag.layer_name, flag.layer_kind, flag.layer_version) == ("farmland", "basic_farmland", 1)
    assert flag.overlap_m2 == pytest.approx(expected, abs=0.5)
    assert flag.evidence["overlap_m2"] == pytest.approx(expected, abs=0.5)
    assert "basic farmland layer farmland (version 1)" in flag.message
    assert not [f for f in store.flag_rows() if f.rule == "new_disturbance" and f.patch_id == patch.patch_id]
    [scan] = store.scans()
    assert scan.params["request"]["layers"]

    # A new version of the layer (the farmland now covers the whole clearing): the licence is scanned
    # again (its key follows the layers near it) and the flag names version 2 and the new overlap.
    bigger = _write_layer(tmp_path / "farmland2.geojson", [box(599_900, 5_289_700, 600_400, 5_290_000)])
    row, change = store.add_layer(read_layer(bigger, "farmland", "basic_farmland"))
    assert (row.version, change) == (2, "changed")
    again = ScanRequest([site], _CubeSource(cube), settings, layers=store.layer_set())
    assert again.unit_key(site) != request.unit_key(site)
    assert run_scan(again, store).status == "completed"
    [flag] = [f for f in store.flag_rows() if f.rule == "protected_land"]
    assert flag.layer_version == 2
    assert flag.overlap_m2 == pytest.approx(_expected_overlap(patch.local_wkt, bigger), abs=0.5)
    assert flag.overlap_m2 == pytest.approx(12_000, rel=0.01)


def test_kinds_set_the_severity_and_an_unknown_kind_takes_the_rules_own() -> None:
    rules = load_settings().rules
    assert rules.protected_severity("ecological_red_line") == "critical"
    assert rules.protected_severity("public_welfare_forest") == "warning"
    assert rules.protected_severity("wetland_park") == rules.protected_land.severity == "warning"
    assert normalise_kind("永久基本农田") == "basic_farmland"
    assert normalise_kind("Wetland Park") == "wetland_park"
    with pytest.raises(SitesError, match="not a name"):
        normalise_kind("../etc")


def test_default_protected_land_settings_keep_the_config_hash() -> None:
    settings = Settings()
    changed = settings.with_overrides({"rules.protected_land_severity": {"basic_farmland": "warning"}})
    assert changed.config_hash() != settings.config_hash()
    data = settings.model_dump(mode="json")
    for key in ("protected_land", "protected_land_severity", "protected_min_overlap_m2"):
        data["rules"].pop(key)
    assert Settings.model_validate(data).config_hash() == settings.config_hash()


def test_versions_identical_files_add_nothing_and_removal_keeps_history(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    first = _write_layer(tmp_path / "a.geojson", [FARMLAND_UTM, box(601_000, 5_289_000, 601_500, 5_289_500)])
    assert store.add_layer(read_layer(first, "reserve", "nature_reserve"))[1] == "new"
    # The same polygons in another CRS, in another order: the same content.
    frame = geopandas.read_file(first).iloc[::-1].to_crs(UTM)
    frame.to_file(tmp_path / "b.gpkg", engine="pyogrio")
    assert store.add_layer(read_layer(tmp_path / "b.gpkg", "reserve", "nature_reserve"))[1] == "unchanged"
    assert store.add_layer(read_layer(first, "reserve", "basic_farmland"))[1] == "changed"  # the kind is content
    assert [r.version for r in store.layer_history("reserve")] == [1, 2]
    assert store.remove_layer("reserve").version == 2
    assert store.current_layers() == []
    assert not store.layer_set()
    assert store.add_layer(read_layer(first, "reserve", "basic_farmland"))[1] == "re-added"
    history = store.layer_history("reserve")
    assert [(r.version, r.change, r.valid_to is None) for r in history] == [
        (1, "new", False), (2, "changed", False), (3, "re-added", True)]
    assert store.remove_layer("nothing") is None


def test_a_layer_set_travels_to_workers_and_narrows_to_a_licence(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    path = _write_layer(tmp_path / "a.geojson", [FARMLAND_UTM, box(640_000, 5_250_000, 641_000, 5_251_000)])
    store.add_layer(read_layer(path, "farmland", "basic_farmland"))
    layers = store.layer_set()
    layers.layers[0].near(Point(0, 0))  # builds the spatial index, which is not pickled
    back = pickle.loads(pickle.dumps(layers))
    assert back.refs() == layers.refs()
    site = Site("L", CLEARING, UTM, {})
    local = back.localised(UTM, site.buffered(50))
    assert len(local) == 1
    assert local[0].version == 1
    assert local[0].geometry.area == pytest.approx(FARMLAND_UTM.area, rel=0.01)  # the far polygon left out
    assert LayerSet().near(Point(0, 0)).layers == ()


@pytest.mark.parametrize(("make", "message"), [
    ("no_crs", "no coordinate reference system"),
    ("point", "geometry is a Point, expected a Polygon or MultiPolygon"),
    ("projected_as_degrees", "outside the longitude/latitude range"),
    ("not_vector", "cannot be read as a vector file"),
    ("missing", "file does not exist"),
])
def test_bad_layer_files_are_one_clear_error(tmp_path: Path, make: str, message: str) -> None:
    path = tmp_path / "layer.geojson"
    if make == "no_crs":
        path = _write_layer(tmp_path / "layer.shp", [FARMLAND_UTM], crs=None)
        path.with_suffix(".prj").unlink()
    elif make == "point":
        frame = geopandas.GeoDataFrame(geometry=[box(126, 47, 126.1, 47.1), Point(126, 47)], crs="EPSG:4326")
        frame.to_file(path, engine="pyogrio")
    elif make == "projected_as_degrees":
        frame = geopandas.GeoDataFrame(geometry=[FARMLAND_UTM], crs=UTM).set_crs("EPSG:4326", allow_override=True)
        frame.to_file(tmp_path / "layer.gpkg", engine="pyogrio")
        path = tmp_path / "layer.gpkg"
    elif make == "not_vector":
        path.write_text("this is not GeoJSON")
    with pytest.raises(SitesError, match=message):
        read_layer(path, "x", "basic_farmland")
    code, output = run_cli("layers", "add", "x", path, "--kind", "basic_farmland", "--db", tmp_path / "s.db")
    assert code == 2
    assert message.split()[0] in " ".join(output.split())
    if (tmp_path / "s.db").exists():
        assert Store(str(tmp_path / "s.db")).current_layers() == []


def test_invalid_polygons_are_repaired_with_a_warning_naming_the_feature(tmp_path: Path) -> None:
    bowtie = Polygon([(126.0, 47.0), (126.1, 47.1), (126.1, 47.0), (126.0, 47.1)])
    frame = geopandas.GeoDataFrame(geometry=[box(126, 47, 126.01, 47.01), bowtie], crs="EPSG:4326")
    frame.to_file(tmp_path / "bow.geojson", engine="pyogrio")
    with pytest.warns(SiteRepairWarning, match="feature 2: invalid polygon"):
        layer = read_layer(tmp_path / "bow.geojson", "bow", "nature_reserve")
    assert all(f.is_valid for f in layer.features)
    with pytest.raises(SitesError, match="feature 2: polygon is invalid"):
        read_layer(tmp_path / "bow.geojson", "bow", "nature_reserve", repair_invalid=False)


def test_register_polygons_on_protected_land_are_flagged(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    polygons = [RegisterPolygon("R-1", "open_pit", CLEARING, UTM, {"mineral_class": "metal", "county": "230183"}),
                RegisterPolygon("R-2", "tailings", box(610_000, 5_280_000, 610_100, 5_280_100), UTM, {})]
    store.upsert_register(polygons)
    path = _write_layer(tmp_path / "red.geojson", [FARMLAND_UTM])
    store.add_layer(read_layer(path, "red", "ecological_red_line"))
    assert check_register_layers(store, load_settings().rules) == 1
    [row] = store.register_layer_flags()
    assert (row.register_id, row.layer_kind, row.layer_version, row.severity) == ("R-1", "ecological_red_line", 1,
                                                                                   "critical")
    assert row.overlap_m2 == pytest.approx(_expected_overlap(CLEARING.wkt, path), abs=0.5)
    assert row.county_code == "230183"
    assert "Register polygon R-1 overlaps" in row.message
    store.remove_layer("red")
    assert check_register_layers(store, load_settings().rules) == 0
    assert store.register_layer_flags() == []


def test_layers_commands(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    path = _write_layer(tmp_path / "wf.geojson", [FARMLAND_UTM])
    code, output = run_cli("layers", "add", "forest", path, "--kind", "公益林", "--db", db)
    assert code == 0, output
    assert "layer forest (public_welfare_forest) added as version 1; 1 polygon" in " ".join(output.split())
    code, output = run_cli("layers", "add", "forest", path, "--kind", "public_welfare_forest", "--db", db)
    assert "unchanged (version 1): nothing added" in " ".join(output.split())
    code, output = run_cli("layers", "list", "--db", db)
    assert code == 0
    assert "forest" in output
    code, output = run_cli("layers", "show", "forest", "--db", db)
    assert code == 0
    assert "layer forest: public_welfare_forest, version 1 of 1 (current)" in " ".join(output.split())
    code, output = run_cli("layers", "show", "nope", "--db", db)
    assert code == 2
    assert "there is no layer 'nope'" in output
    code, output = run_cli("layers", "add", "bad name!", path, "--kind", "nature_reserve", "--db", db)
    assert code == 2
    assert "layer name 'bad name!'" in output
    code, output = run_cli("layers", "remove", "forest", "--db", db)
    assert code == 0
    assert "removed (version 1 ended" in output
    code, output = run_cli("layers", "remove", "forest", "--db", db)
    assert code == 2



# --- totals by kind in the summary report and the dashboard, within scopes --------------------------

def _licence_on_farmland(store: Store, scan_id: int, site_id: str, county: str, dx: float) -> None:
    from gmsense.flags import evaluate
    from gmsense.geo.layers import LocalLayer
    from gmsense.records import PatchRecord, SiteResult

    licence = box(600_000 + dx, 5_289_600, 600_400 + dx, 5_290_000)
    site = Site(site_id, licence, UTM, {"county": county, "mineral_class": "metal"})
    store.upsert_sites([site])
    patch_geom = box(600_100 + dx, 5_289_800, 600_220 + dx, 5_289_900)
    record = PatchRecord(site_id, reproject_geometry(patch_geom, UTM, WGS84).wkt, patch_geom.wkt, UTM.to_string(),
                         "clearing", 0.9, "2020-07-06", "2020-07-14", "2021-09-01", patch_geom.area, True, 0.0,
                         "active", None)
    farmland = LocalLayer("farmland", "basic_farmland", 3, box(599_900 + dx, 5_289_700, 600_160 + dx, 5_290_000))
    flags = evaluate(site, [record], [patch_geom], "2021-09-01", load_settings().rules, layers=[farmland])
    store.save_site_result(scan_id, SiteResult(site_id, [record], flags, {"last_acquisition": "2021-09-01"}))


@pytest.fixture
def two_counties(tmp_path: Path) -> Store:
    from gmsense.review import auth

    store = Store(str(tmp_path / "two.db"))
    scan_id = store.begin_scan(source="fixed", detector="rules", config_hash="x", gmsense_version="t", params={})
    _licence_on_farmland(store, scan_id, "SHANGZHI-1", "230183", 0.0)
    _licence_on_farmland(store, scan_id, "WUCHANG-1", "230184", 5_000.0)
    store.finish_scan(scan_id, "completed", {"sites": {}})
    store.upsert_register([RegisterPolygon("R-1", "open_pit", CLEARING, UTM, {"county": "230184"})])
    path = _write_layer(tmp_path / "farm.geojson", [FARMLAND_UTM])
    store.add_layer(read_layer(path, "farmland", "basic_farmland"))
    check_register_layers(store, load_settings().rules)
    auth.add_user(store, "shangzhi", "layers-password-1", "reviewer", scope="county:230183")
    return store


def test_overlap_totals_by_kind_follow_the_scope(two_counties: Store, tmp_path: Path) -> None:
    from gmsense.outputs.summary_report import summary_tables, write_summary_report
    from gmsense.store.scope import PROVINCE, Scope

    [everything] = summary_tables(two_counties, scope=PROVINCE)["protected"]
    assert everything["kind"] == "basic_farmland"
    assert (everything["flags"], everything["licences"], everything["register_polygons"]) == (2, 2, 1)
    assert everything["overlap_m2"] == pytest.approx(2 * 60 * 100, abs=1.0)
    [county] = summary_tables(two_counties, scope=Scope("county", ("230183",)))["protected"]
    assert (county["flags"], county["licences"], county["register_polygons"]) == (1, 1, 0)
    assert county["overlap_m2"] == pytest.approx(60 * 100, abs=1.0)
    assert summary_tables(two_counties, scope=Scope("licence", ("NONE",)))["protected"] == []
    html = write_summary_report(two_counties, tmp_path / "summary.html").read_text()
    assert "Protected land" in html
    assert "permanent basic farmland" in html
    assert "1.20" in html  # 12,000 m2 of overlap, in ha
    zh = write_summary_report(two_counties, tmp_path / "summary_zh.html", lang="zh", unit="mu").read_text()
    assert "永久基本农田" in zh
    assert write_summary_report(two_counties, tmp_path / "summary.pdf").stat().st_size > 0


def test_the_dashboard_gives_a_county_reviewer_the_totals_of_their_county(two_counties: Store,
                                                                           tmp_path: Path) -> None:
    import re

    from fastapi.testclient import TestClient

    from gmsense.review.app import create_app

    with TestClient(create_app(two_counties, cache_dir=tmp_path / "pictures")) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        client.post("/login", data={"username": "shangzhi", "password": "layers-password-1", "csrf_token": token,
                                    "next": "/flags"}, follow_redirects=False)
        dashboard = client.get("/dashboard", params={"unit": "ha"}).text
        [mine] = [f for f in two_counties.flag_rows() if f.rule == "protected_land" and f.site_id == "SHANGZHI-1"]
        [other] = [f for f in two_counties.flag_rows() if f.rule == "protected_land" and f.site_id == "WUCHANG-1"]
        page = client.get(f"/flags/{mine.id}")
        assert page.status_code == 200
        assert "basic farmland layer farmland (version 3)" in page.text
        assert client.get(f"/flags/{other.id}").status_code == 404
        assert client.get("/flags", params={"rule": "protected_land", "status": "all"}).status_code == 200
    table = dashboard[dashboard.index('id="protected-land"'):]
    table = table[:table.index("</table>")]
    assert "permanent basic farmland" in table
    assert "0.60 ha" in table  # their licence's 6,000 m2, not the province's 12,000
    assert "1.20 ha" not in table


# --- the public disclosure export (issue 20, item 5) -------------------------------------------------

def test_the_disclosure_lists_confirmed_violations_without_reviewers_or_comments(two_counties: Store,
                                                                                tmp_path: Path) -> None:
    import csv

    from gmsense.review import auth, service

    boss = auth.add_user(two_counties, "wang_reviewer", "layers-password-2", "admin")
    flags = {f.site_id: f for f in two_counties.flag_rows() if f.rule == "protected_land"}
    service.decide(two_counties, flags["SHANGZHI-1"].id, boss, "confirm", "violation",
                   "INTERNAL-NOTE: the holder's manager phoned me")
    service.decide(two_counties, flags["WUCHANG-1"].id, boss, "dismiss", "approved_work", "DISMISSED-NOTE")
    code, output = run_cli("export", "disclosure", "--out", tmp_path / "public", "--db", two_counties.url)
    assert code == 0, output
    files = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "public").iterdir()}
    assert set(files) == {"index.html", "violations.csv", "restoration.csv"}
    for text in files.values():
        for secret in ("wang_reviewer", "INTERNAL-NOTE", "DISMISSED-NOTE", "phoned", "violation\",", "shangzhi"):
            assert secret not in text, secret
    rows = list(csv.DictReader(io_text(files["violations.csv"])))
    assert [r["licence"] for r in rows] == ["SHANGZHI-1"], "confirmed violations only"
    assert rows[0]["protected_kind"] == "permanent basic farmland"
    assert float(rows[0]["protected_overlap_m2"]) == pytest.approx(6_000, abs=1)
    assert rows[0]["confirmed_on"]
    [polygon] = list(csv.DictReader(io_text(files["restoration.csv"])))
    assert polygon["register_id"] == "R-1"
    assert "permanent basic farmland" in polygon["protected_land"]
    assert "<script" not in files["index.html"]
    code, output = run_cli("export", "disclosure", "--out", tmp_path / "public", "--db", two_counties.url,
                           "--lang", "zh")
    assert code == 0, output
    assert "永久基本农田" in (tmp_path / "public" / "violations.csv").read_text(encoding="utf-8")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    code, output = run_cli("export", "disclosure", "--out", tmp_path / "other", "--db", two_counties.url)
    assert code == 2


def io_text(text: str):
    import io

    return io.StringIO(text.lstrip("\ufeff"))
