"""The licence register (issue 21, item 3): licences in the store with their history, flags that name
the licence version they were checked against, and ``gmsense scan --all-active``.

Store parts run on SQLite and on a real PostgreSQL server; the scans replace the analysis by a
stand-in (the register, not the detector, is under test here)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Polygon, box
from sqlalchemy import func, select

import gmsense.batch.scan as scan_module
from gmsense.batch.request import ScanRequest
from gmsense.config import Settings
from gmsense.geo.licences import diff_versions, inactive_reason, same_licence, site_digest, version_site
from gmsense.geo.sites import read_sites
from gmsense.records import FlagRecord, SiteResult
from gmsense.sources import SyntheticSource
from gmsense.store import FlagRow, LicenceVersionRow, ScanUnitRow, Store
from gmsense.testutils import run_cli

CRS = "EPSG:32652"  # UTM 52N: Heilongjiang
X0, Y0 = 600_000.0, 5_290_000.0
LAST_ACQUISITION = "2021-10-01"


def _licence(site_id: str, dx: float = 0.0, geometry=None, **attrs) -> dict:
    base = {"site_id": site_id, "name": f"licence {site_id}", "licence_type": "exploration",
            "licence_start": "2019-01-01", "licence_end": "2030-12-31", "status": "active"}
    geom = geometry if geometry is not None else box(X0 + dx, Y0 - 200, X0 + dx + 200, Y0)
    return {**base, **attrs, "geometry": geom}


def _write(path: Path, rows: list[dict], crs: str = CRS) -> Path:
    gpd.GeoDataFrame(rows, geometry="geometry", crs=crs).to_file(path, engine="pyogrio")
    return path


THREE = [_licence("A"), _licence("B", 1000), _licence("C", 2000)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL: a SQLite file, or a real (emptied) PostgreSQL database."""
    return f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" \
        else request.getfixturevalue("postgres_url")


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as they need (the test terminal has 80 columns, which wraps their cells)."""
    from gmsense.cli._common import err, out

    monkeypatch.setattr(out, "width", 250)
    monkeypatch.setattr(err, "width", 250)


def _versions(store: Store) -> list[tuple[str, int, str]]:
    with store.session() as s:
        return [(r.licence_id, r.version, r.change) for r in s.scalars(
            select(LicenceVersionRow).order_by(LicenceVersionRow.licence_id, LicenceVersionRow.version))]


def _import(db: str, path: Path, *more: str) -> str:
    code, output = run_cli("licences", "import", path, "--db", db, *more)
    assert code == 0, output
    return " ".join(output.split())


def test_import_keeps_history_and_identical_reimports_add_nothing(db: str, tmp_path: Path) -> None:
    first = _import(db, _write(tmp_path / "v1.gpkg", THREE))
    assert "3 new, 0 changed (a new version each), 0 unchanged" in first
    store = Store(db)
    assert _versions(store) == [("A", 1, "new"), ("B", 1, "new"), ("C", 1, "new")]

    # The same licences again, and again in lon/lat with rings starting at another vertex: no change.
    assert "0 new, 0 changed (a new version each), 3 unchanged" in _import(db, tmp_path / "v1.gpkg")
    rotated = [{**row, "geometry": Polygon(list(row["geometry"].exterior.coords)[2:-1]
                                           + list(row["geometry"].exterior.coords)[:3])} for row in THREE]
    lonlat = gpd.GeoDataFrame(rotated, geometry="geometry", crs=CRS).to_crs("EPSG:4326")
    lonlat.to_file(tmp_path / "v1-lonlat.geojson", engine="pyogrio")
    assert "3 unchanged" in _import(db, tmp_path / "v1-lonlat.geojson")
    assert len(_versions(store)) == 3
    assert all(row.valid_to is None for row in store.latest_licence_versions())

    # A grows 50 m east; B's end date moves; C is absent: kept, and said so.
    changed = [_licence("A", geometry=box(X0, Y0 - 200, X0 + 250, Y0)), _licence("B", 1000, licence_end="2025-06-30")]
    text = _import(db, _write(tmp_path / "v2.gpkg", changed))
    assert "0 new, 2 changed (a new version each), 0 unchanged" in text
    assert ("1 licence of the store is not in this file and was kept unchanged: C; pass --retire-missing to mark it "
            "ended") in text
    assert _versions(store) == [("A", 1, "new"), ("A", 2, "changed"), ("B", 1, "new"), ("B", 2, "changed"),
                                ("C", 1, "new")]
    a1, a2 = store.licence_history("A")
    assert a1.valid_to == a2.valid_from
    assert a2.valid_to is None
    diff = diff_versions(a1, a2)
    assert diff.attributes == {}
    assert (diff.area_from_m2, diff.area_to_m2) == (pytest.approx(40_000.0), pytest.approx(50_000.0))
    assert (diff.added_m2, diff.removed_m2, diff.symmetric_difference_m2) == (
        pytest.approx(10_000.0), pytest.approx(0.0, abs=1e-6), pytest.approx(10_000.0))
    b1, b2 = store.licence_history("B")
    assert diff_versions(b1, b2).attributes == {"licence_end": ("2030-12-31", "2025-06-30")}
    assert not diff_versions(b1, b2).boundary_changed

    # --retire-missing: C gets a last version, status ended; doing it again adds nothing.
    text = _import(db, tmp_path / "v2.gpkg", "--retire-missing")
    assert "2 unchanged" in text
    assert "retired 1 licence absent from this file (a last version with status 'ended'): C" in text
    c1, c2 = store.licence_history("C")
    assert (c2.version, c2.change, c2.attrs["status"], c2.local_wkt) == (2, "retired", "ended", c1.local_wkt)
    assert c1.valid_to == c2.valid_from
    again = _import(db, tmp_path / "v2.gpkg", "--retire-missing")
    assert "kept unchanged (already ended or revoked): C" in again
    assert len(store.licence_history("C")) == 2
    # The first file again: A and B go back to their first content, C comes back: a new version each.
    assert "0 new, 3 changed" in _import(db, tmp_path / "v1.gpkg")
    assert [r.change for r in store.licence_history("C")] == ["new", "retired", "changed"]


@pytest.mark.usefixtures("wide")
def test_list_show_and_diff(db: str, tmp_path: Path) -> None:
    _import(db, _write(tmp_path / "v1.gpkg", THREE))
    grown = _licence("A", geometry=box(X0, Y0 - 200, X0 + 250, Y0), status="Suspended", holder="New Holder Ltd.")
    _import(db, _write(tmp_path / "v2.gpkg", [grown, *THREE[1:]]))
    code, output = run_cli("licences", "list", "--db", db)
    assert code == 0, output
    lines = {line.split()[1]: line for line in output.splitlines() if line.startswith("│ ")}
    assert lines["A"].split("│")[2].strip() == "2"
    assert "Suspended" in lines["A"]
    assert lines["B"].split("│")[2].strip() == "1"
    assert "active" in lines["B"]

    code, output = run_cli("licences", "show", "A", "--db", db)
    assert code == 0, output
    assert "licence A: version 2 of 2" in output
    assert "New Holder Ltd." in output
    assert "boundary (10000.0 m2 differ), holder, status" in output

    code, output = run_cli("licences", "diff", "A", "--db", db)
    assert code == 0, output
    text = " ".join(output.split())
    assert "version 1" in text
    assert "version 2" in text
    assert "status │ active │ Suspended" in text
    assert "holder │ - │ New Holder Ltd." in text
    assert ("boundary: changed; area 40000.0 m2 -> 50000.0 m2 (difference +10000.0 m2); symmetric difference "
            "10000.0 m2 (10000.0 m2 added, 0.0 m2 removed)") in text
    code, output = run_cli("licences", "diff", "A", "--from", "2", "--to", "1", "--db", db)
    assert code == 0, output
    assert "(0.0 m2 added, 10000.0 m2 removed)" in " ".join(output.split())
    code, output = run_cli("licences", "diff", "B", "--db", db)
    assert code == 2
    assert "licence B has one version only: there is nothing to compare" in " ".join(output.split())


@pytest.mark.parametrize(("args", "expected"), [
    (["licences", "show", "Z"], "there is no licence 'Z' in the register"),
    (["licences", "diff", "A", "--to", "7"], "licence A has no version 7 (--to); its versions are 1"),
    (["scan", "--all-active", "--sites", "x.geojson"], "--sites and --all-active are mutually exclusive"),
    (["scan"], "say which licences to scan: --sites FILE (licence areas), or --all-active"),
])
def test_bad_commands_are_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    db = tmp_path / "s.db"
    _import(str(db), _write(tmp_path / "v1.gpkg", THREE))
    code, output = run_cli(*args, "--db", db)
    assert code == 2, output
    assert "Traceback" not in output
    assert expected in " ".join(output.split())


def test_all_active_needs_a_store_with_licences(tmp_path: Path) -> None:
    code, output = run_cli("scan", "--all-active", "--db", tmp_path / "none.db")
    assert code == 2
    assert "no store at" in output
    assert not (tmp_path / "none.db").exists()
    Store(str(tmp_path / "empty.db"))
    code, output = run_cli("scan", "--all-active", "--db", tmp_path / "empty.db")
    assert code == 2
    assert "holds no licences to scan with --all-active: import them first with 'gmsense licences import FILE'" \
        in " ".join(output.split())
    _import(str(tmp_path / "empty.db"), _write(tmp_path / "revoked.gpkg", [_licence("A", status="revoked")]))
    code, output = run_cli("scan", "--all-active", "--db", tmp_path / "empty.db")
    assert code == 0, output
    assert "no licence of the register is active in the window: nothing to scan" in " ".join(output.split())
    assert Store(str(tmp_path / "empty.db")).scans() == []


@pytest.mark.parametrize(("rows", "message"), [
    ([_licence("A"), _licence("A", 1000)], "duplicate site_id 'A'"),
    ([_licence("A", licence_end="soon")], "licence_end is 'soon', not a date"),
    ([_licence("A", licence_start="2025-01-01", licence_end="2020-01-01")], "licence_end 2020-01-01 is before"),
    ([{k: v for k, v in _licence("A").items() if k != "site_id"}], "no site_id property"),
])
def test_bad_licence_files_write_nothing(db: str, tmp_path: Path, rows: list[dict], message: str) -> None:
    _import(db, _write(tmp_path / "v1.gpkg", THREE))
    before = _versions(Store(db))
    code, output = run_cli("licences", "import", _write(tmp_path / "bad.gpkg", rows), "--db", db,
                           "--retire-missing")
    assert code == 2, output
    assert message in " ".join(output.split())
    assert _versions(Store(db)) == before, "a bad file imports nothing and retires nothing"


def test_missing_or_empty_files_are_refused(tmp_path: Path) -> None:
    code, output = run_cli("licences", "import", tmp_path / "nope.geojson", "--db", tmp_path / "s.db")
    assert code == 2
    assert "does not exist" in output
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    code, output = run_cli("licences", "import", empty, "--db", tmp_path / "s.db", "--retire-missing")
    assert code == 2, output
    assert "has no features (add the licence polygons, one per licence)" in " ".join(output.split())
    assert not (tmp_path / "s.db").exists()


def test_what_active_means() -> None:
    active = {"status": "active", "licence_start": "2019-01-01", "licence_end": "2022-12-31"}
    assert inactive_reason(active, "2020-01-01", "2021-12-31") is None
    assert inactive_reason({**active, "status": "Suspended"}, "2020-01-01", "2021-12-31") is None
    assert inactive_reason({}, None, None) is None, "a licence without dates or status is active"
    assert inactive_reason({**active, "status": "REVOKED"}, None, None) == "status REVOKED"
    assert inactive_reason({**active, "status": "ended"}, None, None) == "status ended"
    assert "ended 2022-12-31, before the window starts (2023-01-01)" in inactive_reason(active, "2023-01-01", None)
    assert inactive_reason(active, "2022-12-31", None) is None, "ending on the first day of the window: active"
    assert inactive_reason(active, None, None) is None, "no --start: no lower bound"
    late = {**active, "licence_start": "2024-06-01"}
    assert "starts 2024-06-01, after the window ends (2024-05-31)" in inactive_reason(late, None, "2024-05-31")
    assert "after the window ends (2024-01-01)" in inactive_reason(late, None, None, today=dt.date(2024, 1, 1))
    assert inactive_reason(late, None, None, today=dt.date(2024, 6, 1)) is None


def _stand_in(calls: list[str]):
    """The analysis of one licence replaced: one licence-level flag, analysed through LAST_ACQUISITION."""

    def analyse(site, source, settings, start, end, *args, **kwargs) -> SiteResult:
        calls.append(site.site_id)
        flag = FlagRecord("permitted_area_exceeded", "warning", f"{site.site_id}: area", None,
                          {"area_m2": site.geometry.area})
        return SiteResult(site.site_id, [], [flag], {"last_acquisition": LAST_ACQUISITION})

    return analyse


def _flags(store: Store) -> dict[str, int | None]:
    return {row.site_id: row.licence_version for row in store.flag_rows()}


@pytest.mark.usefixtures("wide")
def test_scan_all_active_picks_the_active_licences_and_flags_name_the_version(
        db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(scan_module, "analyse_site", _stand_in(calls))
    monkeypatch.setattr(SyntheticSource, "latest_date", lambda self, site, start, end: LAST_ACQUISITION)
    register = [
        _licence("ACTIVE"),
        _licence("SUSPENDED", 1000, status="suspended"),
        _licence("REVOKED", 2000, status="revoked"),
        _licence("ENDED-EARLY", 3000, licence_start="2010-01-01", licence_end="2019-12-31"),
        _licence("STARTS-LATE", 4000, licence_start="2023-01-01"),
        _licence("NO-DATES", 5000, geometry=box(X0 + 5000, Y0 - 200, X0 + 5200, Y0)),
    ]
    register[5].pop("licence_start")
    register[5].pop("licence_end")
    register[5].pop("status")
    _import(db, _write(tmp_path / "v1.gpkg", register))
    window = ("--start", "2020-01-01", "--end", "2021-12-31")
    code, output = run_cli("scan", "--all-active", *window, "--db", db, "--no-progress")
    assert code == 0, output
    text = " ".join(output.split())
    assert "--all-active: 3 licences of the register active in the window" in text
    assert "REVOKED (status revoked)" in text
    assert "ENDED-EARLY (licence ended 2019-12-31" in text
    assert "STARTS-LATE (licence starts 2023-01-01, after the window ends (2021-12-31))" in text
    assert sorted(calls) == ["ACTIVE", "NO-DATES", "SUSPENDED"]
    store = Store(db)
    assert _flags(store) == {"ACTIVE": 1, "NO-DATES": 1, "SUSPENDED": 1}
    [scan] = store.scans()
    assert (scan.params["licences"], scan.params["sites_file"]) == ("register", None)

    # Nothing new: every licence is up to date and skipped.
    calls.clear()
    code, output = run_cli("scan", "--all-active", *window, "--db", db, "--no-progress")
    assert code == 0, output
    assert calls == []
    assert output.count("up to date (analysed through 2021-10-01)") == 3

    # ACTIVE's boundary changes and SUSPENDED is revoked: ACTIVE alone is scanned again, in full,
    # and its flag now names version 2; the revoked licence's flag keeps the version it was checked against.
    register[0] = _licence("ACTIVE", geometry=box(X0, Y0 - 300, X0 + 200, Y0))
    register[1] = _licence("SUSPENDED", 1000, status="revoked")
    _import(db, _write(tmp_path / "v2.gpkg", register))
    code, output = run_cli("scan", "--all-active", *window, "--db", db, "--no-progress")
    assert code == 0, output
    assert calls == ["ACTIVE"]
    assert _flags(store) == {"ACTIVE": 2, "NO-DATES": 1, "SUSPENDED": 1}
    [active_flag] = [f for f in store.flag_rows() if f.site_id == "ACTIVE"]
    assert active_flag.evidence["area_m2"] == pytest.approx(60_000.0), "the scan analysed the new boundary"
    with store.session() as s:
        n_units = s.scalar(select(func.count()).select_from(ScanUnitRow).where(ScanUnitRow.site_id == "ACTIVE",
                                                                               ScanUnitRow.status == "done"))
    assert n_units == 2
    [site_row] = [r for r in store.site_rows() if r.site_id == "ACTIVE"]
    assert site_row.geometry_wkt == store.licence_history("ACTIVE")[-1].geometry_wkt

    # A --sites scan of the same licences records no register version on the flags it checks.
    calls.clear()
    code, output = run_cli("scan", "--sites", tmp_path / "v2.gpkg", *window, "--db", db, "--no-progress", "--force")
    assert code == 0, output
    with store.session() as s:
        versions = dict(s.execute(select(FlagRow.site_id, FlagRow.licence_version)).all())
    assert versions["ACTIVE"] is None


def test_the_unit_key_of_a_register_licence_follows_its_content(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    read = read_sites(_write(tmp_path / "v1.gpkg", THREE[:1]))
    store.import_licences(read)
    [row] = store.latest_licence_versions()
    site = version_site(row)
    assert site_digest(site) == row.digest == site_digest(read[0])
    settings = Settings()
    plain = ScanRequest([site], SyntheticSource(settings), settings)
    registered = ScanRequest([site], SyntheticSource(settings), settings, licence_versions={"A": (1, row.digest)})
    changed = ScanRequest([site], SyntheticSource(settings), settings, licence_versions={"A": (2, "other")})
    assert len({plain.unit_key(site), registered.unit_key(site), changed.unit_key(site)}) == 3
    assert registered.only([site]).licence_version("A") == 1
    assert plain.licence_version("A") is None


def test_coordinates_that_round_to_either_side_of_the_grid_are_the_same_boundary(tmp_path: Path) -> None:
    import shapely

    store = Store(str(tmp_path / "s.db"))
    [site] = read_sites(_write(tmp_path / "v1.gpkg", THREE[:1]))
    store.import_licences([site])
    [row] = store.latest_licence_versions()
    for shift in (3e-10, -3e-10, 6e-10):  # degrees: a few centimetres at most
        moved = shapely.transform(site.geometry_wgs84, lambda xy, d=shift: xy + d)
        assert same_licence(row, moved, dict(site.attrs), "another digest"), shift
    assert not same_licence(row, shapely.transform(site.geometry_wgs84, lambda xy: xy + 1e-6), dict(site.attrs), "x")
    assert not same_licence(row, site.geometry_wgs84, {**site.attrs, "status": "revoked"}, "x")
