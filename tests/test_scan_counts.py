"""The counts a scan reports are what the store holds: detections the store merges into one patch
count once, and the licence's coverage and its warning reach the summary and the scan's record."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from shapely.geometry import box

import gmsense.batch.scan as scan_module
from gmsense.batch.request import ScanOptions, ScanRequest
from gmsense.batch.scan import run_scan
from gmsense.config import Settings
from gmsense.geo.coverage import coverage_stats
from gmsense.geo.sites import WGS84, reproject_geometry
from gmsense.records import FlagRecord, PatchRecord, SiteResult
from gmsense.store import Store
from gmsense.testutils import cube_site, make_cube, run_cli

SITE = cube_site(make_cube(ny=4, nx=4), "S-1")
X0, Y0 = 600_010, 5_289_990
COVERAGE = coverage_stats({"licence_px": 100, "licence_observed_px": 80, "area_px": 400, "area_observed_px": 300},
                          0.95)


def _record(geom, first: str = "2020-06-01") -> PatchRecord:
    return PatchRecord(
        site_id="S-1", geometry_wkt=reproject_geometry(geom, SITE.crs, WGS84).wkt, local_wkt=geom.wkt,
        local_crs=SITE.crs.to_string(), disturbance_class="trench", confidence=0.8, first_detected=first,
        confirmed_on=first, last_seen="2020-09-01", area_m2=geom.area, inside_licence=True, area_outside_m2=0.0,
        recovery_status="active", recovery_ratio=0.0)


def _result(*geoms) -> SiteResult:
    flags = [FlagRecord("new_disturbance", "warning", f"patch {i}", i, {}) for i in range(len(geoms))]
    return SiteResult("S-1", [_record(g) for g in geoms], flags,
                      {"last_acquisition": "2020-10-01", **COVERAGE})


class _NoSource:
    name = "fixed"

    def load(self, site, region, start, end):  # pragma: no cover - the analysis is replaced
        raise AssertionError("not loaded")

    def latest_date(self, site, start, end):
        return None


def test_patches_the_store_merges_are_counted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    results = iter([
        # Two detections of one scan overlapping each other: the store keeps one patch.
        _result(box(X0, Y0 - 20, X0 + 30, Y0), box(X0 + 20, Y0 - 20, X0 + 50, Y0)),
        # A rescan: one detection extends the stored patch, another is new.
        _result(box(X0 + 40, Y0 - 20, X0 + 70, Y0), box(X0 + 300, Y0 - 20, X0 + 330, Y0)),
    ])
    monkeypatch.setattr(scan_module, "analyse_site", lambda *args, **kwargs: next(results))
    store = Store(str(tmp_path / "s.db"))
    request = ScanRequest([SITE], _NoSource(), Settings())
    with caplog.at_level(logging.WARNING, logger="gmsense.batch.scan"):
        first = run_scan(request, store).sites["S-1"]
    assert (first["patches"], first["by_class"], first["flags"]) == (1, {"trench": 1}, 1)
    assert first["area_m2"] == pytest.approx(50 * 20)
    assert (first["coverage_licence"], first["coverage_area"]) == (0.8, 0.75)
    assert "75.0% of the monitoring area" in first["coverage_warning"]
    assert "S-1: the imagery observes only 80.0%" in caplog.text

    second = run_scan(request, store, options=ScanOptions(force=True))
    row = second.sites["S-1"]
    assert (row["patches"], row["new_patches"], row["updated_patches"], row["flags"]) == (2, 1, 1, 2)
    assert row["area_m2"] == pytest.approx(sum(p.area_m2 for p in store.patch_rows()))
    assert len(store.patch_rows()) == 2
    _scan, units = store.scan(second.scan_id)
    assert (units[0].n_patches, units[0].n_flags) == (2, 2)
    assert units[0].stats["coverage_area"] == 0.75

    code, output = run_cli("scans", "show", second.scan_id, "--db", tmp_path / "s.db")
    assert code == 0
    assert "80.0%" in output
    assert "75.0%" in output
    assert "below 95%" in output
