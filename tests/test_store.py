"""The store: identity of patches across scans, idempotent re-runs, one transaction per licence."""

from __future__ import annotations

from pathlib import Path

import pytest
from shapely.geometry import box
from sqlalchemy import func, select

from gmsense.geo.sites import WGS84, reproject_geometry
from gmsense.records import FlagRecord, PatchRecord, RecoveryObservation, SiteResult
from gmsense.store import FlagRow, PatchRow, RecoveryRow, Store, resolve_db_url
from gmsense.testutils import cube_site as _cube_site
from gmsense.testutils import make_cube

SITE = _cube_site(make_cube(ny=4, nx=4), "S-1")


def _record(geom, first: str = "2020-06-01", last: str = "2020-09-01", klass: str = "trench") -> PatchRecord:
    return PatchRecord(
        site_id="S-1", geometry_wkt=reproject_geometry(geom, SITE.crs, WGS84).wkt, local_wkt=geom.wkt,
        local_crs=SITE.crs.to_string(), disturbance_class=klass, confidence=0.8, first_detected=first,
        confirmed_on=first, last_seen=last, area_m2=geom.area, inside_licence=True, area_outside_m2=0.0,
        recovery_status="active", recovery_ratio=0.0, metrics={"n_pixels": 3},
        recovery=[RecoveryObservation(2020, "ndvi", 3, 0.3, 0.8, -0.5)],
    )


def _result(*records: PatchRecord) -> SiteResult:
    flags = [FlagRecord("new_disturbance", "warning", f"patch {i}", i, {}) for i in range(len(records))]
    return SiteResult("S-1", list(records), flags, {})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The same tests on a SQLite file and on a real PostgreSQL server."""
    url = str(tmp_path / "store.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = Store(url)
    s.upsert_sites([SITE])
    return s


def _scan(store: Store) -> int:
    return store.begin_scan(source="test", detector="rules", config_hash="x", gmsense_version="0", params={})


def _count(store: Store, table: type) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(table))


def test_rerun_changes_nothing(store: Store) -> None:
    x0, y0 = 600_010, 5_289_990
    result = _result(_record(box(x0, y0 - 20, x0 + 30, y0)))
    first = store.save_site_result(_scan(store), result)
    again = store.save_site_result(_scan(store), result)
    stored = {"patches": 1, "by_class": {"trench": 1}, "area_m2": 600.0, "flags": 1}
    assert first == {"new_patches": 1, "updated_patches": 0, "new_flags": 1, **stored}
    assert again == {"new_patches": 0, "updated_patches": 0, "new_flags": 0, **stored}
    assert (_count(store, PatchRow), _count(store, FlagRow), _count(store, RecoveryRow)) == (1, 1, 1)


def test_overlapping_detection_extends_the_stored_patch(store: Store) -> None:
    x0, y0 = 600_010, 5_289_990
    store.save_site_result(_scan(store), _result(_record(box(x0, y0 - 20, x0 + 30, y0))))
    grown = _record(box(x0 + 20, y0 - 20, x0 + 60, y0), first="2021-06-01", last="2021-09-01")
    counts = store.save_site_result(_scan(store), _result(grown))
    assert counts["new_patches"] == 0
    assert counts["updated_patches"] == 1
    [row] = store.patch_rows()
    assert row.patch_id == "S-1-P0001"
    assert row.first_detected == "2020-06-01"
    assert row.last_seen == "2021-09-01"
    assert row.area_m2 == pytest.approx(60 * 20)


def test_a_neighbour_sharing_only_an_edge_is_its_own_patch(store: Store) -> None:
    """A pixel confirmed the season after, next to a large patch: in WGS84 their outlines overlap
    by reprojection slivers, which must not merge them (the pixel's class and status would
    overwrite the large patch's: a 30 ha natural change turned into a pad)."""
    x0, y0 = 600_010, 5_289_990
    large = _record(box(x0, y0 - 400, x0 + 600, y0), first="2021-06-15", klass="natural")
    large.recovery_status, large.recovery_ratio = "not_recovering", 0.02
    pixel = _record(box(x0 + 600, y0 - 20, x0 + 620, y0), first="2022-08-03", klass="pad")
    in_wgs84 = [reproject_geometry(box(*b), SITE.crs, WGS84)
                for b in ((x0, y0 - 400, x0 + 600, y0), (x0 + 600, y0 - 20, x0 + 620, y0))]
    assert in_wgs84[0].intersection(in_wgs84[1]).area > 0, "reprojected, the outlines overlap by a sliver"
    counts = store.save_site_result(_scan(store), _result(large, pixel))
    assert (counts["new_patches"], counts["updated_patches"]) == (2, 0)
    rows = store.patch_rows()
    assert [(r.disturbance_class, r.first_detected, r.recovery_status, r.area_m2) for r in rows] == [
        ("natural", "2021-06-15", "not_recovering", 240_000.0), ("pad", "2022-08-03", "active", 400.0)]
    overlapping = _record(box(x0 + 590, y0 - 20, x0 + 620, y0), first="2022-08-03", klass="pad")
    assert store.save_site_result(_scan(store), _result(large, overlapping))["new_patches"] == 0, \
        "a detection overlapping by 200 m2 is the same disturbance"


def test_separate_detection_gets_a_new_id(store: Store) -> None:
    x0, y0 = 600_010, 5_289_990
    store.save_site_result(_scan(store), _result(_record(box(x0, y0 - 20, x0 + 30, y0))))
    store.save_site_result(_scan(store), _result(_record(box(x0 + 200, y0 - 20, x0 + 230, y0))))
    assert [r.patch_id for r in store.patch_rows()] == ["S-1-P0001", "S-1-P0002"]


def test_a_failing_write_leaves_nothing_of_that_licence(store: Store) -> None:
    x0, y0 = 600_010, 5_289_990
    bad = _result(_record(box(x0, y0 - 20, x0 + 30, y0)))
    bad.flags.append(FlagRecord("broken", "warning", "points at a patch that does not exist", 5, {}))
    with pytest.raises(IndexError):
        store.save_site_result(_scan(store), bad)
    assert (_count(store, PatchRow), _count(store, FlagRow), _count(store, RecoveryRow)) == (0, 0, 0)


def test_db_url_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMSENSE_DB", str(tmp_path / "env.db"))
    assert resolve_db_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    assert resolve_db_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    monkeypatch.delenv("GMSENSE_DB")
    monkeypatch.chdir(tmp_path)
    assert resolve_db_url(None) == f"sqlite:///{tmp_path / 'gmsense.db'}"


def test_extending_keeps_the_evidence_of_the_first_detection(store: Store) -> None:
    x0, y0 = 600_010, 5_289_990
    first = _record(box(x0, y0 - 20, x0 + 30, y0), first="2020-06-01")
    first.metrics = {"evidence": {"before_date": "2020-05-20", "after_date": "2020-06-01"}}
    store.save_site_result(_scan(store), _result(first))
    later = _record(box(x0 + 20, y0 - 20, x0 + 60, y0), first="2021-06-01")
    later.metrics = {"evidence": {"before_date": "2021-05-20", "after_date": "2021-06-01"}, "n_pixels": 4}
    store.save_site_result(_scan(store), _result(later))
    [row] = store.patch_rows()
    assert row.first_detected == "2020-06-01"
    assert row.metrics["evidence"]["after_date"] == "2020-06-01"
    assert row.metrics["n_pixels"] == 4


def test_a_later_disturbance_of_recovered_ground_is_a_new_patch(store: Store) -> None:
    x0, y0 = 600_010, 5_289_990
    ground = box(x0, y0 - 20, x0 + 30, y0)
    cleared = _record(ground, first="2016-06-20", last="2018-09-01")
    cleared.recovery_status, cleared.recovery_ratio = "recovered", 0.95
    store.save_site_result(_scan(store), _result(cleared))
    # A later scan sees the first clearing again (up to its recovery) and the same ground cleared in 2020.
    again = _record(ground, first="2020-07-06", last="2022-09-01")
    counts = store.save_site_result(_scan(store), _result(cleared, again))
    assert counts["new_patches"] == 1
    rows = store.patch_rows()
    assert [(r.patch_id, r.first_detected, r.recovery_status) for r in rows] == [
        ("S-1-P0001", "2016-06-20", "recovered"), ("S-1-P0002", "2020-07-06", "active")]
    assert store.save_site_result(_scan(store), _result(cleared, again))["new_patches"] == 0, "a rerun matches each"
    assert len(store.patch_rows()) == 2


def test_a_second_disturbance_the_season_after_keeps_its_own_class(store: Store) -> None:
    """A trench dug in a field in 2020, the field harvested over it in 2021 (a later break of the same
    pixels, one season on): two disturbances, two patches. Merged, the harvest's `natural` would
    have overwritten the trench's class and silenced it."""
    x0, y0 = 600_010, 5_289_990
    ground = box(x0, y0 - 20, x0 + 30, y0)
    trench = _record(ground, first="2020-06-10", last="2020-09-01")
    harvest = _record(ground, first="2021-08-20", last="2021-09-30", klass="natural")
    harvest.metrics = {"n_pixels": 3, "earlier_disturbance": "2020-06-10"}
    for _ in range(2):  # the same scan again matches each to its own patch
        store.save_site_result(_scan(store), _result(trench, harvest))
        rows = store.patch_rows()
        assert [(r.first_detected, r.disturbance_class) for r in rows] == [("2020-06-10", "trench"),
                                                                            ("2021-08-20", "natural")]
    # A plain detection the season after (no earlier disturbance under it: a spreading clearing) still extends.
    spreading = _record(box(x0 + 20, y0 - 20, x0 + 60, y0), first="2021-06-01", last="2021-09-01")
    assert store.save_site_result(_scan(store), _result(spreading))["new_patches"] == 0
