"""Coverage: the share of a licence and of its monitoring area that the imagery observes, the same
whole or in tiles, with a warning below the threshold, even when the imagery stops short of the buffer."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import xarray as xr
from affine import Affine
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from gmsense.batch.planner import tile_grid
from gmsense.batch.request import ScanRequest
from gmsense.batch.tiles import analyse_tile, merge_tiles
from gmsense.config import Settings
from gmsense.geo.coverage import coverage_stats, merge_counts, observed_counts
from gmsense.geo.sites import Site
from gmsense.pipeline import analyse_cube
from gmsense.testutils import make_cube

SETTINGS = Settings()
X0, Y0 = 600_000.0, 5_290_000.0  # the cube's upper-left corner (make_cube's origin), metres
SIDE = 600.0  # the cube is 60 x 60 pixels of 10 m
BLIND_FROM = X0 + 400.0  # the imagery never observes east of here (the right third)


def _cube() -> xr.Dataset:
    cube = make_cube(ny=60, nx=60, years=(2020, 2021), every_days=16, cloud_share=0.0)
    blind = cube["x"] > BLIND_FROM
    bands = [v for v in cube.data_vars if v != "clear"]
    return cube.assign({b: cube[b].where(~blind) for b in bands}).assign(clear=cube["clear"] & ~blind)


def _site(cube: xr.Dataset) -> Site:
    """A 300 m square licence in the middle of the cube."""
    return Site("C-1", box(X0 + 150, Y0 - 450, X0 + 450, Y0 - 150), pyproj.CRS.from_user_input(cube.rio.crs), {})


def _expected(geom: BaseGeometry) -> float:
    """The share of ``geom`` west of the blind line and on the cube."""
    return geom.intersection(box(X0, Y0 - SIDE, BLIND_FROM, Y0)).area / geom.area


@pytest.mark.parametrize("buffer_m", [100.0, 250.0])
def test_coverage_is_the_observed_share_and_warns(buffer_m: float) -> None:
    """buffer 250 m: the monitoring area reaches 100 m beyond the cube, which counts as unobserved."""
    cube = _cube()
    site = _site(cube)
    settings = SETTINGS.with_overrides({"sites.buffer_m": buffer_m})
    stats = analyse_cube(site, cube, settings).stats
    area = site.buffered(buffer_m)
    assert stats["coverage_licence"] == pytest.approx(_expected(site.geometry), abs=0.01)  # 250 / 300
    assert stats["coverage_area"] == pytest.approx(_expected(area), abs=0.01)
    assert stats["area_px"] == pytest.approx(area.area / 100.0, rel=0.01)
    assert stats["licence_px"] == 900
    assert "of the licence and" in stats["coverage_warning"]
    assert "of the monitoring area" in stats["coverage_warning"]
    assert stats["coverage_min"] == 0.95


def test_full_coverage_does_not_warn() -> None:
    cube = make_cube(ny=40, nx=40, years=(2020, 2021), every_days=16, cloud_share=0.0)
    site = Site("C-2", box(X0 + 100, Y0 - 300, X0 + 300, Y0 - 100), _site(cube).crs, {})
    stats = analyse_cube(site, cube, SETTINGS.with_overrides({"sites.buffer_m": 50.0})).stats
    assert stats["coverage_licence"] == stats["coverage_area"] == 1.0
    assert "coverage_warning" not in stats


class _CubeSource:
    """A fixed cube, cut to the bounds of what is asked for (pixel centres inside)."""

    name = "fixed"

    def __init__(self, cube: xr.Dataset) -> None:
        self.cube = cube

    def load(self, site: Site, region: BaseGeometry, start: str | None, end: str | None) -> xr.Dataset:
        minx, miny, maxx, maxy = region.bounds
        x, y = self.cube["x"], self.cube["y"]
        return self.cube.isel(x=np.flatnonzero((x > minx) & (x < maxx)),
                              y=np.flatnonzero((y > miny) & (y < maxy)))

    def latest_date(self, site: Site, start: str | None, end: str | None) -> str | None:
        return None


def test_tiles_count_the_coverage_of_the_whole() -> None:
    cube = _cube()
    site = _site(cube)
    settings = SETTINGS.with_overrides({"sites.buffer_m": 250.0})
    whole = analyse_cube(site, cube, settings).stats
    request = ScanRequest([site], _CubeSource(cube), settings)
    tiles = tile_grid(site.buffered(250.0), 3, 2)
    merged = merge_tiles(site, [analyse_tile(site, tile, request) for tile in tiles], settings).stats
    keys = ("licence_px", "licence_observed_px", "area_px", "area_observed_px", "coverage_licence", "coverage_area")
    assert {k: merged[k] for k in keys} == {k: whole[k] for k in keys}
    assert merged["coverage_warning"] == whole["coverage_warning"]


def test_counts_add_up_over_parts_of_an_area() -> None:
    observed = np.ones((10, 10), dtype=bool)
    observed[:, 7:] = False
    transform = Affine(10.0, 0, 0.0, 0, -10.0, 100.0)
    licence, area = box(20, 20, 80, 80), box(-50, -50, 150, 150)  # the area reaches beyond the grid
    whole = observed_counts(observed, transform, licence, area)
    assert whole == {"licence_px": 36, "licence_observed_px": 30, "area_px": 400, "area_observed_px": 70}
    halves = [observed_counts(observed, transform, licence, area, within=box(-100, y0, 200, y1))
              for y0, y1 in ((-100.0, 30.0), (30.0, 200.0))]
    assert merge_counts(halves) == whole
    stats = coverage_stats(whole, 0.95)
    assert (stats["coverage_licence"], stats["coverage_area"]) == (0.833, 0.175)
    assert coverage_stats({}, 0.95) == {}
