"""The same answer however a licence is cut: whole and in 2, 4 and 9 tiles, the same patches
(IoU >= 0.95 each, same classes), on the synthetic world, the real Romania cube and a 30 m cube
whose large clearing covers most of one tile; a tile without observations cannot fail a licence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr
from shapely import wkt
from shapely.geometry import box

from gmsense.batch.planner import tile_grid
from gmsense.batch.request import ScanRequest
from gmsense.batch.tiles import analyse_in_tiles, analyse_tile, tile_sample
from gmsense.config import Settings, configs_dir
from gmsense.detect.context import merge_samples
from gmsense.errors import NoObservationsError
from gmsense.geo.sites import Site, read_sites
from gmsense.pipeline import analyse_site
from gmsense.records import SiteResult
from gmsense.sources import LocalSource, get_source
from gmsense.testutils import PlantedBreak, cube_site, make_cube

CUTS = [(2, 1), (2, 2), (3, 3)]  # 2, 4 and 9 tiles
SETTINGS = Settings()
CLEARING = PlantedBreak(slice(0, 45), slice(0, 45), "2019-06-20", 0.7)  # 1.35 km square at 30 m


def _assert_same_patches(whole: SiteResult, tiled: SiteResult) -> None:
    assert len(tiled.patches) == len(whole.patches)
    found = [wkt.loads(p.local_wkt) for p in tiled.patches]
    for patch in whole.patches:
        geom = wkt.loads(patch.local_wkt)
        k = max(range(len(found)), key=lambda i: found[i].intersection(geom).area)
        iou = found[k].intersection(geom).area / found[k].union(geom).area
        assert iou >= 0.95, (patch.disturbance_class, patch.area_m2, patch.first_detected, iou)
        assert tiled.patches[k].disturbance_class == patch.disturbance_class
        assert tiled.patches[k].first_detected == patch.first_detected


def _cut(site: Site, request: ScanRequest, cols: int, rows: int) -> SiteResult:
    tiles = tile_grid(site.buffered(request.settings.sites.buffer_m), cols, rows)
    assert len(tiles) == cols * rows
    return analyse_in_tiles(site, tiles, request)


@pytest.fixture(scope="module")
def clearing_30m(tmp_path_factory: pytest.TempPathFactory) -> tuple[Site, LocalSource]:
    """A 3 x 3 km cube at 30 m, 2015-2021, with a 1.35 km square clearing in 2019 at its corner."""
    cube = make_cube(100, 100, years=tuple(range(2015, 2022)), every_days=16, resolution=30.0, breaks=(CLEARING,),
                     seed=5, cloud_share=0.0, noise=0.01)
    path = tmp_path_factory.mktemp("c30") / "clearing_30m.nc"
    cube.to_netcdf(path)
    return cube_site(cube, "L30", inset_m=SETTINGS.sites.buffer_m), LocalSource(path, SETTINGS)


@pytest.mark.parametrize(("cols", "rows"), CUTS)
def test_a_clearing_filling_most_of_a_tile_is_found_however_the_licence_is_cut(
        clearing_30m: tuple[Site, LocalSource], cols: int, rows: int) -> None:
    site, source = clearing_30m
    whole = analyse_site(site, source, SETTINGS)
    planted_m2 = 45 * 45 * 30.0**2
    assert len(whole.patches) == 1
    assert whole.patches[0].area_m2 == pytest.approx(planted_m2, rel=0.05)
    assert whole.patches[0].first_detected[:7] == "2019-06"
    _assert_same_patches(whole, _cut(site, ScanRequest([site], source, SETTINGS), cols, rows))


def test_a_tile_scaled_by_its_own_median_would_lose_the_clearing(clearing_30m: tuple[Site, LocalSource]) -> None:
    """What the shared context fixes: the top-left tile of a 2 x 2 cut, analysed with its own scene
    median (no context), does not see the clearing that fills most of it."""
    site, source = clearing_30m
    request = ScanRequest([site], source, SETTINGS)
    top_left = max(tile_grid(site.buffered(SETTINGS.sites.buffer_m), 2, 2),
                   key=lambda t: (-t.core.bounds[0], t.core.bounds[1]))
    tiles = tile_grid(site.buffered(SETTINGS.sites.buffer_m), 2, 2)
    alone = analyse_tile(site, top_left, request)
    assert sum(p.area_m2 for p in alone.patches) < 0.5 * 45 * 45 * 30.0**2
    context = merge_samples([tile_sample(site, tile, request) for tile in tiles])
    shared = analyse_tile(site, top_left, request, context)
    assert sum(p.area_m2 for p in shared.patches) > 0.9 * 45 * 45 * 30.0**2


@pytest.mark.slow
@pytest.mark.parametrize(("cols", "rows"), CUTS)
def test_the_synthetic_world_gives_the_same_patches_in_tiles(cols: int, rows: int) -> None:
    site = next(s for s in read_sites(configs_dir() / "demo_sites.geojson") if s.site_id == "HLJ-EXP-001")
    source = get_source("synthetic", SETTINGS)
    whole = analyse_site(site, source, SETTINGS)
    assert len(whole.patches) >= 5
    _assert_same_patches(whole, _cut(site, ScanRequest([site], source, SETTINGS), cols, rows))


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(("cols", "rows"), CUTS)
def test_the_real_romania_cube_gives_the_same_patches_in_tiles(real_data: Path, cols: int, rows: int) -> None:
    path = real_data / "nrt_romania_s2" / "sentinel2_cube_subset_romania_10m.nc"
    settings = Settings.model_validate({**SETTINGS.model_dump(), "sites": {**SETTINGS.sites.model_dump(),
                                                                           "buffer_m": 100.0}})
    with xr.open_dataset(path) as ds:
        x, y = ds["x"].values, ds["y"].values
    footprint = box(x.min() - 5, y.min() - 5, x.max() + 5, y.max() + 5)
    site = Site("RO", footprint.buffer(-100, join_style="mitre"), pyproj.CRS.from_epsg(3035), {})
    source = LocalSource(path, settings)
    whole = analyse_site(site, source, settings)
    assert len(whole.patches) >= 20
    _assert_same_patches(whole, _cut(site, ScanRequest([site], source, settings), cols, rows))


def _blind(cube: xr.Dataset, cols: slice) -> xr.Dataset:
    """``cube`` with no observation (no-data, not clear) in the columns ``cols``."""
    out = cube.copy(deep=True)
    for band in ("blue", "green", "red", "nir", "swir1", "swir2"):
        out[band][{"x": cols}] = np.nan
    out["clear"][{"x": cols}] = False
    return out


def test_a_tile_without_observations_answers_empty_and_the_licence_goes_on(tmp_path: Path) -> None:
    cube = make_cube(40, 150, years=(2019, 2020, 2021), breaks=(PlantedBreak(slice(10, 20), slice(5, 15),
                                                                            "2020-06-15"),), seed=2, cloud_share=0.0)
    path = tmp_path / "half_blind.nc"
    _blind(cube, slice(60, None)).to_netcdf(path)  # x >= 600 m: the last tile, margins and all
    site = cube_site(cube, "HALF", inset_m=100.0)
    settings = Settings.model_validate({**SETTINGS.model_dump(), "sites": {**SETTINGS.sites.model_dump(),
                                                                           "buffer_m": 100.0}})
    source = LocalSource(path, settings)
    request = ScanRequest([site], source, settings)
    tiles = tile_grid(site.buffered(100.0), 3, 1)  # the last tile lies wholly in the blind third
    result = analyse_in_tiles(site, tiles, request)
    assert result.stats["tiles"] == 3
    assert len(result.stats["tiles_without_data"]) == 1
    assert "3/3" in result.stats["tiles_without_data"][0]
    assert len(result.patches) == 1
    assert result.patches[0].first_detected[:4] == "2020"
    # the blind tile's pixels count as unobserved: the licence spans x 100..1400 m, seen to 600 m
    assert result.stats["coverage_licence"] == pytest.approx(500 / 1300, abs=0.02)
    assert "coverage_warning" in result.stats


def test_a_licence_without_any_observation_fails_with_the_reason(tmp_path: Path) -> None:
    cube = make_cube(20, 40, years=(2019, 2020), seed=1, cloud_share=0.0)
    path = tmp_path / "blind.nc"
    _blind(cube, slice(None)).to_netcdf(path)
    site = cube_site(cube, "BLIND", inset_m=50.0)
    settings = Settings.model_validate({**SETTINGS.model_dump(), "sites": {**SETTINGS.sites.model_dump(),
                                                                           "buffer_m": 50.0}})
    request = ScanRequest([site], LocalSource(path, settings), settings)
    with pytest.raises(NoObservationsError, match="none of its 2 tiles"):
        analyse_in_tiles(site, tile_grid(site.buffered(50.0), 2, 1), request)
