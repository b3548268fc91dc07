"""Large licences in tiles: a tiled scan finds what the whole scan finds, pieces of a patch cut by
a tile edge are joined, distinct patches are not, and a failing tile fails only its licence."""

from __future__ import annotations

from pathlib import Path

import pyproj
import pytest
from shapely import wkt
from shapely.geometry import box

from gmsense.batch.estimate import default_shape
from gmsense.batch.planner import Tile, estimate_bytes
from gmsense.batch.request import ScanOptions, ScanRequest
from gmsense.batch.scan import ScanProgress, run_scan
from gmsense.batch.tiles import TileResult, merge_tiles
from gmsense.config import Settings, configs_dir
from gmsense.geo.sites import WGS84, Site, read_sites, reproject_geometry
from gmsense.records import PatchRecord
from gmsense.sources import SyntheticSource, get_source
from gmsense.store import Store

UTM = pyproj.CRS.from_epsg(32652)
SETTINGS = Settings()


def _scan(site: Site, db: Path, memory_limit: int | None, source: object | None = None) -> object:
    return run_scan(ScanRequest([site], source or get_source("synthetic", SETTINGS), SETTINGS), Store(str(db)),
                    options=ScanOptions(memory_limit=memory_limit))


@pytest.mark.slow
def test_a_tiled_scan_finds_what_the_whole_scan_finds(tmp_path: Path) -> None:
    site = next(s for s in read_sites(configs_dir() / "demo_sites.geojson") if s.site_id == "HLJ-EXP-001")
    need = estimate_bytes(site.buffered(SETTINGS.sites.buffer_m), SyntheticSource(SETTINGS).describe(site, None, None))
    whole = _scan(site, tmp_path / "whole.db", None)
    tiled = _scan(site, tmp_path / "tiled.db", need * 2 // 3)
    assert whole.status == tiled.status == "completed"
    assert "tiles" not in whole.sites[site.site_id]
    assert tiled.sites[site.site_id]["tiles"] >= 4
    a, b = Store(str(tmp_path / "whole.db")).patch_rows(), Store(str(tmp_path / "tiled.db")).patch_rows()
    for p in a:
        g = wkt.loads(p.local_wkt)
        best = max(b, key=lambda q: wkt.loads(q.local_wkt).intersection(g).area)
        q = wkt.loads(best.local_wkt)
        assert q.intersection(g).area / q.union(g).area > 0.75, p.patch_id
        assert best.disturbance_class == p.disturbance_class
    assert abs(sum(p.area_m2 for p in b) - sum(p.area_m2 for p in a)) < 0.1 * sum(p.area_m2 for p in a)
    whole_rules = {f.rule for f in Store(str(tmp_path / "whole.db")).flag_rows()}
    assert whole_rules <= {f.rule for f in Store(str(tmp_path / "tiled.db")).flag_rows()}


def _record(geom: object, klass: str = "trench", first: str = "2021-06-01") -> PatchRecord:
    return PatchRecord(site_id="T", geometry_wkt=reproject_geometry(geom, UTM, WGS84).wkt, local_wkt=geom.wkt,
                       local_crs=UTM.to_string(), disturbance_class=klass, confidence=0.9, first_detected=first,
                       confirmed_on=first, last_seen="2021-09-01", area_m2=geom.area, inside_licence=True,
                       area_outside_m2=0.0, recovery_status="active", recovery_ratio=None)


def _stats() -> dict:
    return {"n_dates": 50, "n_season_dates": 40, "clear_share": 0.8, "crs": UTM.to_string(),
            "first_date": "2019-05-01", "last_date": "2021-09-30", "last_acquisition": "2021-10-01",
            "tile_area_m2": 1e6}


def test_pieces_cut_by_a_tile_edge_are_joined_and_neighbours_are_not() -> None:
    site = Site("T", box(0, 0, 2000, 1000), UTM, {})
    left = Tile(0, 2, box(-500, -500, 1000, 1500), box(-500, -500, 1300, 1500))
    right = Tile(1, 2, box(1000, -500, 2500, 1500), box(700, -500, 2500, 1500))
    # A trench 800 m long across the edge at x = 1000, longer than the margin: each tile kept a piece.
    piece_left, piece_right = box(500, 500, 1300, 508), box(700, 500, 1600, 508)
    # Two distinct pads 8 m apart inside the left tile.
    pad_a, pad_b = box(100, 100, 130, 130), box(138, 100, 168, 130)
    tiles = [TileResult("T", left, [_record(piece_left, first="2021-06-11"), _record(pad_a, "pad"),
                                    _record(pad_b, "pad")], _stats()),
             TileResult("T", right, [_record(piece_right, first="2021-06-01")], _stats())]
    result = merge_tiles(site, tiles, SETTINGS)
    assert len(result.patches) == 3
    trench = next(p for p in result.patches if p.disturbance_class == "trench")
    assert wkt.loads(trench.local_wkt).bounds == pytest.approx((500, 500, 1600, 508))
    assert trench.first_detected == "2021-06-01"
    assert trench.metrics["joined_from_tiles"] == 2
    assert sum(p.disturbance_class == "pad" for p in result.patches) == 2
    assert result.stats["tiles"] == 2
    assert {f.rule for f in result.flags} >= {"new_disturbance"}


@pytest.mark.slow
def test_a_licence_cut_for_two_workers_finds_what_the_whole_scan_finds_reading_each_tile_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One licence and two worker processes: the planner cuts it in two tiles (its cores here
    lowered to 900 m so the demo licence splits), each read once and held for its analysis; the
    patches are those of the whole licence in one process."""
    from gmsense.batch import planner
    from gmsense.testutils import CountingSource

    monkeypatch.setattr(planner, "PARALLEL_MIN_CORE_M", 900.0)
    site = next(s for s in read_sites(configs_dir() / "demo_sites.geojson") if s.site_id == "HLJ-EXP-001")
    whole = _scan(site, tmp_path / "whole.db", None)
    log = tmp_path / "loads.txt"
    split = run_scan(ScanRequest([site], CountingSource(get_source("synthetic", SETTINGS), log), SETTINGS),
                     Store(str(tmp_path / "split.db")), options=ScanOptions(workers=2))
    assert whole.status == split.status == "completed"
    assert split.sites[site.site_id]["tiles"] == 2
    assert len(log.read_text().splitlines()) == 2, "each tile is read once"
    a, b = Store(str(tmp_path / "whole.db")).patch_rows(), Store(str(tmp_path / "split.db")).patch_rows()
    assert len(a) == len(b) > 0
    for p in a:
        g = wkt.loads(p.local_wkt)
        best = max(b, key=lambda q: wkt.loads(q.local_wkt).intersection(g).area)
        q = wkt.loads(best.local_wkt)
        assert q.intersection(g).area / q.union(g).area >= 0.95, p.patch_id
        assert best.disturbance_class == p.disturbance_class
    assert whole.sites[site.site_id]["flags"] == split.sites[site.site_id]["flags"]


class _TileBreaker:
    """The synthetic source, but loads that cover the given point fail with a corrupt-file error."""

    name = "synthetic"

    def __init__(self, bad_x: float, bad_y: float) -> None:
        self.inner, self.x, self.y = get_source("synthetic", SETTINGS), bad_x, bad_y

    def load(self, site, region, start, end):
        from shapely.geometry import Point

        from gmsense.errors import ImageryError

        if region.contains(Point(self.x, self.y)) and not region.covers(site.buffered(SETTINGS.sites.buffer_m)):
            raise ImageryError("2020-06-13_S2L2A.tif is corrupt")
        return self.inner.load(site, region, start, end)

    def latest_date(self, site, start, end):
        return None


@pytest.mark.slow
def test_a_failing_tile_fails_its_licence_and_not_the_others(tmp_path: Path) -> None:
    sites = [s for s in read_sites(configs_dir() / "demo_sites.geojson") if s.site_id in ("HLJ-EXP-001", "HLJ-MIN-003")]
    big = sites[0]
    need = estimate_bytes(big.buffered(SETTINGS.sites.buffer_m), default_shape(SETTINGS, None, None))  # no describe
    centre = big.geometry.centroid  # in the reads of one to four of the tiles
    source = _TileBreaker(centre.x, centre.y)
    events: list[ScanProgress] = []
    summary = run_scan(ScanRequest(sites, source, SETTINGS), Store(str(tmp_path / "s.db")),
                       options=ScanOptions(memory_limit=need * 2 // 3), progress=events.append)
    assert summary.status == "partial"
    assert "corrupt" in summary.failures["HLJ-EXP-001"]
    assert "HLJ-MIN-003" not in summary.failures
    assert not [p for p in Store(str(tmp_path / "s.db")).patch_rows() if p.site_id == "HLJ-EXP-001"]
    # Progress: each licence once (the tiled one when its first tile fails), every unit counted.
    outcomes = {e.site_id: e.outcome for e in events if e.site_id is not None}
    assert outcomes == {"HLJ-EXP-001": "failed", "HLJ-MIN-003": "stored"}
    assert len([e for e in events if e.site_id is not None]) == 2
    units = events[0].units
    assert units > 2, "the large licence is cut into tiles"
    assert [e.units_done for e in events[1:]] == sorted(e.units_done for e in events[1:])
    assert (events[-1].done, events[-1].failed, events[-1].units_done) == (2, 1, units)


@pytest.mark.slow
def test_tiles_of_lazy_imagery_never_deadlock_the_workers(tmp_path: Path) -> None:
    """Many more tiles than worker threads, each computing a lazy (dask) Zarr cube inside its
    task (before the fix, this scan hung with every thread waiting for sub-tasks)."""
    import subprocess
    import sys

    from gmsense.bench.scale import large_scene
    from gmsense.geo.sites import write_sites

    site = large_scene(4, tmp_path / "cube.zarr")
    sites_file = write_sites([site], tmp_path / "large.geojson")
    command = [str(Path(sys.executable).with_name("gmsense")), "scan", "--sites", str(sites_file), "--source", "local",
               "--imagery", str(tmp_path / "cube.zarr"), "--start", "2019-04-01", "--end", "2021-10-31",
               "--db", str(tmp_path / "z.db"), "--memory-limit", "100MB", "--no-progress"]
    # The timeout only catches a hang; a loaded machine takes minutes for what takes 30 s idle.
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = Store(str(tmp_path / "z.db")).scans()[-1].summary["sites"][site.site_id]
    assert summary["tiles"] >= 8
