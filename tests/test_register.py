"""The register of mine land and demonstration zones: reading, validation, repair, the store, the CLI."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Polygon, box

from gmsense.errors import SitesError
from gmsense.geo.register import KINDS, NO_PARTY, read_register, read_zones
from gmsense.geo.sites import SiteRepairWarning
from gmsense.store import RestorationStatusRow, Store
from gmsense.testutils import run_cli

CRS = "EPSG:32652"  # UTM 52N: Heilongjiang
X0, Y0 = 600_000.0, 5_290_000.0


def _entry(register_id: str, geometry=None, **attrs) -> dict:
    base = {"register_id": register_id, "kind": "open_pit", "mineral_class": "metal",
            "responsible_party": "none: historical", "province": "230000", "city": "230100", "county": "230102"}
    return {**base, **attrs, "geometry": geometry if geometry is not None else box(X0, Y0 - 100, X0 + 100, Y0)}


def _write(path: Path, rows: list[dict], crs: str = CRS) -> Path:
    gpd.GeoDataFrame(rows, geometry="geometry", crs=crs).to_file(path, engine="pyogrio")
    return path


@pytest.mark.filterwarnings("ignore:Column names longer", "ignore:Normalized/laundered")
def test_a_good_register_in_each_format(tmp_path: Path) -> None:
    rows = [_entry("R-1", kind="Open pit", restoration_deadline="2026/06/30", planned_measure="terracing",
                   demonstration_zone="Z1"),
            _entry("R-2", box(X0 + 500, Y0 - 200, X0 + 700, Y0), kind="waste-dump", responsible_party="Coal Co.",
                   mineral_class="Energy")]
    for name in ("register.gpkg", "register.geojson", "register.shp"):
        [one, two] = read_register(_write(tmp_path / name, rows))
        assert (one.register_id, one.kind, two.kind) == ("R-1", "open_pit", "waste_dump")
        assert one.attrs["restoration_deadline"] == "2026-06-30", name  # Shapefile names cut to 10 come back too
        assert one.attrs["responsible_party"] == NO_PARTY
        assert one.attrs["demonstration_zone"] == "Z1"
        assert two.attrs["mineral_class"] == "energy"
        assert two.attrs["responsible_party"] == "Coal Co."
        assert one.crs.to_epsg() == 32652
        assert one.area_m2 == pytest.approx(10_000.0)
        assert two.area_m2 == pytest.approx(40_000.0)


def test_any_crs_ends_in_the_local_utm_zone(tmp_path: Path) -> None:
    lonlat = gpd.GeoSeries([box(X0, Y0 - 100, X0 + 100, Y0)], crs=CRS).to_crs("EPSG:4326")[0]
    [polygon] = read_register(_write(tmp_path / "r.geojson", [_entry("R-1", lonlat)], "EPSG:4326"))
    assert polygon.crs.to_epsg() == 32652
    assert polygon.area_m2 == pytest.approx(10_000.0, rel=1e-4)


@pytest.mark.parametrize(("rows", "message"), [
    ([{k: v for k, v in _entry("R-1").items() if k not in ("kind", "county")}],
     r"missing columns kind, county \(columns found: .*\); a mine land file needs register_id, kind, mineral_class, "
     r"responsible_party, province, city, county"),
    ([_entry("R-1"), _entry("R-1")], r"duplicate register_id 'R-1' \(features 1, 2\); register_id must be unique"),
    ([_entry("R-1", kind="quarry")], r"feature 1 \(register_id 'R-1'\): kind is 'quarry', expected one of "
     + ", ".join(KINDS)),
    ([_entry("R-1", mineral_class="gold")], r"mineral_class is 'gold', expected one of energy, metal, non_metal"),
    ([_entry("R-1", restoration_deadline="soon")], r"restoration_deadline is 'soon', not a date"),
    ([_entry("R-1", county=None)], r"feature 1 \(register_id 'R-1'\): county is missing \(fill it in\)"),
    ([_entry(None)], r"feature 1: register_id is missing"),
])
def test_bad_registers_say_what_is_wrong(tmp_path: Path, rows: list[dict], message: str) -> None:
    with pytest.raises(SitesError, match=message):
        read_register(_write(tmp_path / "bad.gpkg", rows))


def test_every_problem_in_one_message(tmp_path: Path) -> None:
    rows = [_entry("R-1", kind="quarry"), _entry("R-2", mineral_class="gold"), _entry("R-2")]
    with pytest.raises(SitesError) as caught:
        read_register(_write(tmp_path / "bad.gpkg", rows))
    text = str(caught.value)
    assert "duplicate register_id 'R-2'" in text
    assert "kind is 'quarry'" in text
    assert "mineral_class is 'gold'" in text


def test_invalid_polygon_is_repaired_with_a_warning(tmp_path: Path) -> None:
    bowtie = Polygon([(X0, Y0), (X0 + 100, Y0 - 100), (X0 + 100, Y0), (X0, Y0 - 100)])
    path = _write(tmp_path / "r.gpkg", [_entry("R-9", bowtie)])
    with pytest.warns(SiteRepairWarning, match=r"register_id 'R-9': invalid polygon .* check the mine land boundary"):
        [polygon] = read_register(path)
    assert polygon.geometry.is_valid
    assert polygon.area_m2 == pytest.approx(5_000.0)
    with pytest.raises(SitesError, match=r"register_id 'R-9'\): polygon is invalid"):
        read_register(path, repair_invalid=False)


def test_missing_file_and_empty_geometry(tmp_path: Path) -> None:
    with pytest.raises(SitesError, match=r"file does not exist \(check the path; register polygons are read from"):
        read_register(tmp_path / "nope.gpkg")
    from shapely.geometry import LineString

    line = _write(tmp_path / "line.gpkg", [_entry("R-1", LineString([(X0, Y0), (X0 + 10, Y0)]))])
    with pytest.raises(SitesError, match=r"geometry is a LineString, expected a Polygon .*redraw the mine land"):
        read_register(line)


def test_zones(tmp_path: Path) -> None:
    z1_box, z2_box = box(X0, Y0 - 1000, X0 + 1000, Y0), box(X0 + 2000, Y0 - 500, X0 + 2500, Y0)
    rows = [{"zone_id": "Z1", "name": "Hegang demonstration zone", "target_rate": "60%", "geometry": z1_box},
            {"zone_id": "Z2", "name": "other", "target_rate": None, "geometry": z2_box}]
    [z1, z2] = read_zones(_write(tmp_path / "z.geojson", rows))
    assert (z1.zone_id, z1.name, z1.target_rate, z2.target_rate) == ("Z1", "Hegang demonstration zone", 0.6, None)
    bad = [{**rows[0], "target_rate": 40}, {**rows[1], "name": None}]
    with pytest.raises(SitesError, match=r"target_rate is 40\.0, expected a share between 0 and 1.*"
                                         r"feature 2 \(zone_id 'Z2'\): name is missing"):
        read_zones(_write(tmp_path / "bad.geojson", bad))
    with pytest.raises(SitesError, match=r"missing column zone_id"):
        read_zones(_write(tmp_path / "noid.geojson", [{"name": "x", "geometry": box(0, 0, 1, 1)}]))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "store.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def test_store_reimport_replaces_and_resets_changed_boundaries(tmp_path: Path, db: str) -> None:
    first = read_register(_write(tmp_path / "a.gpkg", [_entry("R-1"), _entry("R-2", box(X0 + 500, Y0 - 100,
                                                                                          X0 + 600, Y0))]))
    store = Store(db)
    assert store.upsert_register(first) == {"new": 2, "replaced": 0, "reset": 0, "located": 0, "unlocated": 0}
    run = store.begin_restoration_run("x", {}, "0")
    from gmsense.records import RestorationRecord

    for rid in ("R-1", "R-2"):
        store.save_restoration(run, rid, [RestorationRecord(rid, 2020, "damaged", 0.1, 0.8, 0.125, 0.0, 100, 400)])
    again = read_register(_write(tmp_path / "b.gpkg", [
        _entry("R-1", kind="tailings", county="230103"),  # same boundary: its status rows stay
        _entry("R-2", box(X0 + 500, Y0 - 200, X0 + 600, Y0))]))  # new boundary: its rows no longer describe it
    assert store.upsert_register(again) == {"new": 0, "replaced": 2, "reset": 1, "located": 0, "unlocated": 0}
    rows = {r.register_id: r for r in store.register_rows()}
    assert len(rows) == 2
    assert rows["R-1"].kind == "tailings"
    assert rows["R-1"].attrs["county"] == "230103"
    assert rows["R-2"].area_m2 == pytest.approx(20_000.0)
    assert [r.register_id for r in store.restoration_rows()] == ["R-1"]
    assert isinstance(store.restoration_rows()[0], RestorationStatusRow)


def test_cli_imports_and_refuses_bad_files(tmp_path: Path, db: str) -> None:
    good = _write(tmp_path / "r.gpkg", [_entry("R-1"), _entry("R-2", box(X0 + 500, Y0 - 100, X0 + 600, Y0),
                                                                kind="tailings")])
    code, output = run_cli("register", "import", good, "--db", db)
    assert code == 0, output
    assert "imported 2 register polygons (open_pit 1, tailings 1; 2.00 ha): 2 new, 0 replaced" in output
    code, output = run_cli("register", "import", good, "--db", db)
    assert code == 0
    assert "0 new, 2 replaced" in output
    bad = _write(tmp_path / "bad.gpkg", [_entry("R-3", kind="quarry")])
    code, output = run_cli("register", "import", bad, "--db", db)
    assert code == 2
    assert "kind is 'quarry', expected one of open_pit" in " ".join(output.split())
    assert [r.register_id for r in Store(db).register_rows()] == ["R-1", "R-2"], "nothing written"
    zones = _write(tmp_path / "z.gpkg", [{"zone_id": "Z1", "name": "zone", "geometry": box(X0, Y0 - 900, X0 + 900,
                                                                                          Y0)}])
    code, output = run_cli("zones", "import", zones, "--db", db)
    assert code == 0
    assert "imported 1 zone: 1 new, 0 replaced" in output
    assert [(z.zone_id, z.target_rate) for z in Store(db).zone_rows()] == [("Z1", None)]
