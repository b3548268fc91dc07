"""The planner's memory estimate against the measured peak of an analysis, and what the sources
say of their imagery before reading it."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pyproj
import pytest
from shapely.geometry import box

from gmsense.batch.estimate import estimate_bytes, estimate_seconds
from gmsense.config import Settings
from gmsense.cube.ops import in_season
from gmsense.geo.sites import Site
from gmsense.pipeline import analyse_cube
from gmsense.sources import EarthEngineSource, LocalSource, SyntheticSource
from gmsense.sources.shape import shape_from_times
from gmsense.testutils import PlantedBreak, cube_site, make_cube

SETTINGS = Settings()


def _measured_peak(cube: object, site: Site) -> int:
    """Bytes of the cube as given plus the peak tracemalloc sees (numpy allocations are traced)
    while :func:`analyse_cube` runs, after a first run (one-time costs of the process are not a unit's)."""
    held = sum(v.nbytes for v in cube.data_vars.values())
    analyse_cube(site, cube, SETTINGS)  # once untraced: a process's first analysis loads compiled kernels
    gc.collect()
    tracemalloc.start()
    try:
        analyse_cube(site, cube, SETTINGS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return held + peak


@pytest.mark.parametrize(("resolution", "every_days"), [(10.0, 4), (30.0, 6)])
def test_the_estimate_is_within_30_percent_of_the_measured_peak(resolution: float, every_days: int) -> None:
    cube = make_cube(ny=60, nx=60, every_days=every_days, resolution=resolution, noise=0.01, cloud_share=0.0,
                     breaks=(PlantedBreak(slice(10, 16), slice(12, 30), "2020-07-01"),))
    assert 100 <= cube.sizes["time"] <= 200
    shape = shape_from_times(cube["time"].values, SETTINGS.season, resolution, bands=6)
    estimate = estimate_bytes(box(*cube.rio.bounds()), shape)
    measured = _measured_peak(cube, cube_site(cube, inset_m=2 * resolution))
    assert abs(estimate - measured) <= 0.3 * measured, (estimate, measured)


def test_coarser_pixels_need_less_memory_and_time_for_the_same_area() -> None:
    area = box(0, 0, 3000, 3000)
    fine = shape_from_times(make_cube(ny=2, nx=2)["time"].values, SETTINGS.season, 10.0)
    coarse = shape_from_times(make_cube(ny=2, nx=2)["time"].values, SETTINGS.season, 30.0)
    assert estimate_bytes(area, coarse) * 9 == pytest.approx(estimate_bytes(area, fine))
    assert estimate_seconds(area, coarse) < estimate_seconds(area, fine)


def _small_site(site_id: str = "P-1", **attrs: object) -> Site:
    return Site(site_id, box(600_000, 5_290_000, 600_300, 5_290_300), pyproj.CRS.from_epsg(32652), dict(attrs))


@pytest.mark.parametrize("domain", ["classic", "steppe_grassland+landsat"])
def test_the_synthetic_source_describes_the_cube_it_draws(domain: str) -> None:
    settings = Settings.model_validate({"sites": {"buffer_m": 60.0}, "synthetic": {"domain": domain}})
    source, site = SyntheticSource(settings), _small_site()
    shape = source.describe(site, "2020-01-01", "2021-12-31")
    cube = source.load(site, site.buffered(60.0), "2020-01-01", "2021-12-31")
    assert shape.dates == cube.sizes["time"]
    assert shape.season_dates == int(in_season(cube["time"], settings.season).sum())
    assert shape.resolution_m == cube.attrs["resolution_m"]
    pixel_dates = cube.sizes["time"] * cube.sizes["y"] * cube.sizes["x"]
    assert shape.bytes_per_pixel_date == sum(v.nbytes for v in cube.data_vars.values()) / pixel_dates


def test_a_local_cube_is_described_from_its_coordinates(tmp_path: Path) -> None:
    cube = make_cube(ny=8, nx=8, resolution=30.0, years=(2020, 2021))
    path = tmp_path / "cube.nc"
    cube.to_netcdf(path)
    shape = LocalSource(path, SETTINGS).describe(_small_site(), "2021-01-01", None)
    times = cube["time"].values
    in_2021 = times[times >= np.datetime64("2021-01-01")]
    assert (shape.resolution_m, shape.dates, shape.bands, shape.lazy) == (30.0, in_2021.size, 6, True)
    assert shape.season_dates == int(in_season(in_2021, SETTINGS.season).sum())


def test_earth_engine_is_described_by_its_collection_without_a_request() -> None:
    landsat = Settings.model_validate({"earthengine": {"collection": "landsat"}})
    s2 = EarthEngineSource(SETTINGS).describe(_small_site(), "2020-01-01", "2020-12-31")
    l89 = EarthEngineSource(landsat).describe(_small_site(), "2020-01-01", "2020-12-31")
    assert (s2.resolution_m, l89.resolution_m) == (10.0, 30.0)
    assert 70 <= s2.dates <= 75
    assert 44 <= l89.dates <= 47
    assert 0 < l89.season_dates < l89.dates
