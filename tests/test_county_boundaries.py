"""Divisions from geometry (issue 20): county boundaries loaded into a real store (SQLite and
PostgreSQL); licences and register polygons without division attributes get the county holding
the largest share of their area; splits, polygons in no boundary and attributes at odds with the
geometry are warned about; attributes win. Small constructed boundaries: two counties of Harbin
side by side, 10 km squares."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box
from sqlalchemy import select

from gmsense.errors import SitesError
from gmsense.geo.county_boundaries import SHARE_TOLERANCE, CountyLocator, DivisionWarning, read_boundaries
from gmsense.geo.register import read_register
from gmsense.geo.sites import read_sites
from gmsense.store import LicenceVersionRow, RegisterRow, SiteRow, Store
from gmsense.store.scope import parse_scope, site_clause
from gmsense.testutils import run_cli

CRS = "EPSG:32652"  # UTM 52N: Heilongjiang
X0, Y0 = 600_000.0, 5_290_000.0
KM = 1000.0
SHANGZHI, WUCHANG, HARBIN, PROVINCE = "230183", "230184", "230100", "230000"
#: Shangzhi west of Wuchang (constructed, not their real shapes): two 10 km squares sharing an edge at X0 + 10 km.
COUNTIES = {SHANGZHI: box(X0, Y0, X0 + 10 * KM, Y0 + 10 * KM),
            WUCHANG: box(X0 + 10 * KM, Y0, X0 + 20 * KM, Y0 + 10 * KM)}
EDGE = X0 + 10 * KM


def _square(x_west: float, width: float, y: float = Y0 + 2 * KM, height: float = 1 * KM):
    return box(x_west, y, x_west + width, y + height)


#: Licences without division attributes, by where they lie.
PLACES = {
    "INSIDE": _square(X0 + 2 * KM, 1 * KM),                          # wholly in Shangzhi
    "SPLIT": _square(EDGE - 700, 1 * KM, Y0 + 4 * KM),               # 70 % Shangzhi, 30 % Wuchang
    "SLIVER": _square(EDGE - 990, 1 * KM, Y0 + 6 * KM),              # 99 % Shangzhi, 1 % Wuchang: imprecision
    "OUTSIDE": _square(X0 + 30 * KM, 1 * KM),                        # in no boundary
    "MOSTLY_OUT": _square(X0 + 20 * KM - 400, 1 * KM, Y0 + 5 * KM),  # 40 % Wuchang, 60 % outside every boundary
}


def _write(path: Path, rows: list[dict], crs: str = CRS) -> Path:
    gpd.GeoDataFrame(rows, geometry="geometry", crs=crs).to_file(path, engine="pyogrio")
    return path


def _boundary_file(path: Path, crs: str = "EPSG:3857", names: dict[str, str] | None = None) -> Path:
    """The two counties, named by ``names`` (default: their codes), written in ``crs``."""
    names = names or {SHANGZHI: SHANGZHI, WUCHANG: WUCHANG}
    frame = gpd.GeoDataFrame([{"county": names[c], "NAME_EN": c, "geometry": g} for c, g in COUNTIES.items()],
                             geometry="geometry", crs=CRS).to_crs(crs)
    frame.to_file(path, engine="pyogrio")
    return path


def _licence_file(path: Path, extra: dict[str, dict] | None = None) -> Path:
    rows = [{"site_id": site_id, "name": f"licence {site_id}", "geometry": geom} for site_id, geom in PLACES.items()]
    for site_id, (geom, attrs) in (extra or {}).items():
        rows.append({"site_id": site_id, "name": f"licence {site_id}", **attrs, "geometry": geom})
    return _write(path, rows)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" \
        else request.getfixturevalue("postgres_url")


def _codes(store: Store, table: type, key: str) -> dict[str, tuple[str | None, str | None, str | None]]:
    with store.session() as s:
        rows = s.scalars(select(table).where(table.valid_to.is_(None)) if table is LicenceVersionRow
                         else select(table))
        return {getattr(r, key): (r.province_code, r.city_code, r.county_code) for r in rows}


def test_boundaries_in_any_crs_named_by_code_name_or_pinyin(tmp_path: Path) -> None:
    by_code = read_boundaries(_boundary_file(tmp_path / "codes.gpkg"))
    by_name = read_boundaries(_boundary_file(tmp_path / "names.geojson", "EPSG:4326",
                                             {SHANGZHI: "尚志市", WUCHANG: "Wuchang"}))
    assert [b.code for b in by_code] == [b.code for b in by_name] == [SHANGZHI, WUCHANG]
    locator = CountyLocator(by_name)
    shares, outside = locator.shares(gpd.GeoSeries([PLACES["SPLIT"]], crs=CRS).to_crs("EPSG:4326")[0])
    assert [code for code, _ in shares] == [SHANGZHI, WUCHANG]
    assert shares[0][1] == pytest.approx(0.7, abs=0.002)
    assert shares[1][1] == pytest.approx(0.3, abs=0.002)
    assert outside == pytest.approx(0.0, abs=0.002)
    # Two features of one county (say an exclave) are one boundary; --field picks another column.
    halves = [{"code": SHANGZHI, "geometry": box(X0, Y0, X0 + 5 * KM, Y0 + 10 * KM)},
              {"code": SHANGZHI, "geometry": box(X0 + 5 * KM, Y0, X0 + 10 * KM, Y0 + 10 * KM)},
              {"code": WUCHANG, "geometry": COUNTIES[WUCHANG]}]
    [shangzhi, _wuchang] = read_boundaries(_write(tmp_path / "halves.gpkg", halves))
    assert shangzhi.n_features == 2
    assert CountyLocator([shangzhi]).shares(gpd.GeoSeries([PLACES["INSIDE"]], crs=CRS).to_crs(4326)[0])[0] == [
        (SHANGZHI, pytest.approx(1.0, abs=1e-6))]
    [one, _two] = read_boundaries(_boundary_file(tmp_path / "en.gpkg"), field_name="name_en")
    assert one.code == SHANGZHI


def test_a_bad_boundary_file_is_one_message_listing_every_problem(tmp_path: Path) -> None:
    rows = [{"county": "Atlantis", "geometry": COUNTIES[SHANGZHI]},
            {"county": "向阳区", "geometry": COUNTIES[WUCHANG]},  # Hegang's and Jiamusi's
            {"county": HARBIN, "geometry": box(X0, Y0 - 20 * KM, X0 + 5 * KM, Y0 - 10 * KM)},
            {"county": None, "geometry": box(X0, Y0 - 40 * KM, X0 + 5 * KM, Y0 - 30 * KM)}]
    with pytest.raises(SitesError) as caught:
        read_boundaries(_write(tmp_path / "bad.gpkg", rows))
    text = str(caught.value)
    assert "feature 1: 'Atlantis' is not a county of the shipped division table" in text
    assert "feature 2: county '向阳区' is ambiguous: 230402" in text
    assert "feature 3: 230100 is the code of a city (哈尔滨市), not of a county" in text
    assert "feature 4: names no county" in text
    with pytest.raises(SitesError, match=r"no column names the county of each boundary: looked for county_code, "
                                         r"code, adcode, county, name \(columns found: label\); name it with --field"):
        read_boundaries(_write(tmp_path / "nocol.gpkg", [{"label": "x", "geometry": COUNTIES[SHANGZHI]}]))
    with pytest.raises(SitesError, match=r"no column 'district' \(columns found: county, NAME_EN\)"):
        read_boundaries(_boundary_file(tmp_path / "b.gpkg"), field_name="district")
    gpd.GeoDataFrame([{"county": SHANGZHI, "geometry": COUNTIES[SHANGZHI]}], geometry="geometry").to_file(
        tmp_path / "nocrs.geojson", engine="pyogrio")
    with pytest.raises(SitesError, match="CRS"):
        read_boundaries(tmp_path / "nocrs.geojson")


def test_licences_without_divisions_get_the_county_holding_most_of_their_area(db: str, tmp_path: Path) -> None:
    store = Store(db)
    store.import_boundaries(read_boundaries(_boundary_file(tmp_path / "counties.gpkg")), source_file="counties.gpkg")
    extra = {"ATTR_WINS": (PLACES["INSIDE"], {"county": "Wuchang"}),       # attributes at odds with the geometry
             "ATTR_AGREES": (PLACES["INSIDE"], {"county": "尚志市"}),
             "CITY_ONLY": (_square(EDGE + 3 * KM, 1 * KM), {"city": "Harbin"}),  # the county comes from the geometry
             "UNKNOWN_NAME": (PLACES["INSIDE"], {"county": "Atlantis"})}    # names no known division: as absent
    sites = read_sites(_licence_file(tmp_path / "licences.gpkg", extra))
    with pytest.warns(DivisionWarning) as caught:
        outcome = store.import_licences(sites)
    messages = {str(w.message).split(":")[0]: str(w.message) for w in caught}
    assert set(messages) == {"licence SPLIT", "licence OUTSIDE", "licence MOSTLY_OUT", "licence ATTR_WINS"}
    assert "split across counties (230183 尚志市 70.0%, 230184 五常市 30.0%); assigned to 230183 尚志市" in \
        messages["licence SPLIT"]
    assert "lies in no county boundary of the store (outside every boundary 100.0%): it stays without a division, " \
           "so only province-wide users see it" in messages["licence OUTSIDE"]
    assert "(230184 五常市 40.0%, outside every boundary 60.0%)" in messages["licence MOSTLY_OUT"]
    assert "attributes name the county 230184 五常市 (Wuchang), which holds 0.0% of its area; the county boundaries " \
           "put it in 230183 尚志市 100.0%; the attributes are kept" in messages["licence ATTR_WINS"]
    codes = _codes(store, LicenceVersionRow, "licence_id")
    shangzhi, wuchang, none = (PROVINCE, HARBIN, SHANGZHI), (PROVINCE, HARBIN, WUCHANG), (None, None, None)
    assert codes == {"INSIDE": shangzhi, "SPLIT": shangzhi, "SLIVER": shangzhi, "OUTSIDE": none,
                     "MOSTLY_OUT": none, "ATTR_WINS": wuchang, "ATTR_AGREES": shangzhi, "CITY_ONLY": wuchang,
                     "UNKNOWN_NAME": shangzhi}
    assert sorted(outcome["located"]) == ["CITY_ONLY", "INSIDE", "SLIVER", "SPLIT", "UNKNOWN_NAME"]
    assert sorted(outcome["unlocated"]) == ["MOSTLY_OUT", "OUTSIDE"]
    # A scan stores its licences with the same divisions, quietly (the import warned), so scopes see them.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivisionWarning)
        store.upsert_sites(sites)
    assert _codes(store, SiteRow, "site_id") == codes
    with store.session() as s:
        seen = set(s.scalars(select(SiteRow.site_id).where(site_clause(parse_scope("county:Shangzhi")))))
    assert seen == {"INSIDE", "SPLIT", "SLIVER", "ATTR_AGREES", "UNKNOWN_NAME"}
    store.engine.dispose()


def test_licences_stored_before_the_boundaries_get_divisions_when_imported_again(db: str, tmp_path: Path) -> None:
    store = Store(db)
    path = _write(tmp_path / "one.gpkg", [{"site_id": "L1", "geometry": PLACES["INSIDE"]}])
    store.import_licences(read_sites(path))
    assert _codes(store, LicenceVersionRow, "licence_id") == {"L1": (None, None, None)}
    store.import_boundaries(read_boundaries(_boundary_file(tmp_path / "counties.gpkg")))
    outcome = store.import_licences(read_sites(path))
    assert (outcome["unchanged"], outcome["relocated"]) == (["L1"], ["L1"])
    assert _codes(store, LicenceVersionRow, "licence_id") == {"L1": (PROVINCE, HARBIN, SHANGZHI)}
    with store.session() as s:
        assert len(list(s.scalars(select(LicenceVersionRow)))) == 1, "no new version: the content is the same"
    store.engine.dispose()


def test_register_polygons_without_division_columns(db: str, tmp_path: Path) -> None:
    rows = [{"register_id": rid, "kind": "open_pit", "mineral_class": "metal", "responsible_party": "none: historical",
             "geometry": geom} for rid, geom in (("R-IN", PLACES["INSIDE"]), ("R-SPLIT", PLACES["SPLIT"]),
                                                 ("R-OUT", PLACES["OUTSIDE"]))]
    path = _write(tmp_path / "register.gpkg", rows)
    with pytest.raises(SitesError, match=r"missing columns province, city, county .*load county boundaries first "
                                         r"\(gmsense divisions import FILE\)"):
        read_register(path)
    store = Store(db)
    store.import_boundaries(read_boundaries(_boundary_file(tmp_path / "counties.gpkg")))
    with pytest.warns(DivisionWarning) as caught:
        counts = store.upsert_register(read_register(path, divisions_required=False))
    assert sorted(str(w.message).split(":")[0] for w in caught) == ["register polygon R-OUT",
                                                                     "register polygon R-SPLIT"]
    assert (counts["new"], counts["located"], counts["unlocated"]) == (3, 2, 1)
    assert _codes(store, RegisterRow, "register_id") == {"R-IN": (PROVINCE, HARBIN, SHANGZHI),
                                                         "R-SPLIT": (PROVINCE, HARBIN, SHANGZHI),
                                                         "R-OUT": (None, None, None)}
    store.engine.dispose()


def test_without_boundaries_nothing_changes(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "plain.db"))
    assert store.county_locator() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivisionWarning)
        outcome = store.import_licences(read_sites(_licence_file(tmp_path / "l.gpkg")))
    assert outcome["located"] == outcome["unlocated"] == []
    assert set(_codes(store, LicenceVersionRow, "licence_id").values()) == {(None, None, None)}
    store.engine.dispose()


def test_the_tolerance_is_two_percent() -> None:
    assert SHARE_TOLERANCE == 0.02, "README and the module docstring say 2 %"


def test_the_divisions_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gmsense.cli._common import err, out

    monkeypatch.setattr(out, "width", 250)
    monkeypatch.setattr(err, "width", 250)
    db = str(tmp_path / "cli.db")
    register = _write(tmp_path / "register.gpkg", [{"register_id": "R-1", "kind": "open_pit", "mineral_class": "metal",
                                                   "responsible_party": "Coal Co.", "geometry": PLACES["SPLIT"]}])
    code, output = run_cli("register", "import", register, "--db", db)
    assert code == 2, output
    assert "load county boundaries first (gmsense divisions import FILE)" in output
    assert not (tmp_path / "cli.db").exists(), "a refused import creates no store"
    code, output = run_cli("divisions", "list", "--db", db)
    assert code == 2, "no store yet"
    code, output = run_cli("divisions", "import", _boundary_file(tmp_path / "counties.gpkg"), "--db", db)
    assert code == 0, output
    text = " ".join(output.split())
    assert "imported 2 county boundaries" in text
    assert "2 new, 0 replaced; the store holds 2 (cities: 230100 哈尔滨市 (Harbin))" in text
    code, output = run_cli("divisions", "import", _boundary_file(tmp_path / "again.gpkg"), "--db", db)
    assert "0 new, 2 replaced" in " ".join(output.split())
    code, output = run_cli("divisions", "list", "--db", db)
    assert code == 0, output
    assert "230183 尚志市 (Shangzhi)" in output
    assert "100.0" in output, "10 km x 10 km"
    code, output = run_cli("licences", "import", _licence_file(tmp_path / "licences.gpkg"), "--db", db)
    assert code == 0, output
    text = " ".join(output.split())
    assert "warning: licence SPLIT: split across counties (230183 尚志市 70.0%, 230184 五常市 30.0%)" in text
    assert "warning: licence OUTSIDE: names no division and lies in no county boundary" in text
    assert "divisions from the county boundaries (no division attributes): 3 licences; 2 in no boundary" in text
    code, output = run_cli("register", "import", register, "--db", db)
    assert code == 0, output
    assert "divisions from the county boundaries (no division attributes): 1 polygon" in " ".join(output.split())
    bad = _write(tmp_path / "bad.gpkg", [{"county": "Atlantis", "geometry": COUNTIES[SHANGZHI]}])
    code, output = run_cli("divisions", "import", bad, "--db", db)
    assert code == 2
    assert "'Atlantis' is not a county" in output
    assert "Traceback" not in output
