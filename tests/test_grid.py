"""The one pixel grid (gmsense.geo.grid): crops of an imagery lattice, pixel centres, and the grid
read back from a cube's coordinates being the one a source drew it on."""

from __future__ import annotations

import pickle

import numpy as np
import pyproj
import pytest
from affine import Affine
from shapely.geometry import box

from gmsense.config import Settings
from gmsense.errors import ImageryError
from gmsense.geo.grid import Grid, crop_grid, grid_transform
from gmsense.geo.sites import Site
from gmsense.sources.synthetic import scene_grid, synthesize
from gmsense.testutils import make_cube

UTM52N = pyproj.CRS.from_epsg(32652)
LATTICE = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 0.0)  # 10 m pixels anchored at the CRS origin


def test_a_crop_covers_the_bounds_with_one_pixel_of_margin() -> None:
    grid = crop_grid(UTM52N, LATTICE, (100.0, -260.0, 150.0, -200.0))
    assert grid.transform == Affine(10.0, 0.0, 90.0, 0.0, -10.0, -190.0)
    assert (grid.width, grid.height) == (7, 8)
    assert grid.bounds == (90.0, -270.0, 160.0, -190.0)
    assert crop_grid(UTM52N, LATTICE, (100.0, -260.0, 150.0, -200.0), pad=0).bounds == (100.0, -260.0, 150.0, -200.0)


def test_a_bound_a_rounding_error_past_a_pixel_edge_gains_no_pixel() -> None:
    exact = crop_grid(UTM52N, LATTICE, (100.0, -260.0, 150.0, -200.0))
    noisy = crop_grid(UTM52N, LATTICE, (100.0 + 1e-10, -260.0 - 1e-10, 150.0 + 1e-10, -200.0 - 1e-10))
    assert noisy == exact
    wider = crop_grid(UTM52N, LATTICE, (100.0, -260.0, 150.1, -200.0))
    assert wider.width == exact.width + 1


def test_a_rotated_lattice_is_refused() -> None:
    with pytest.raises(ImageryError, match="rotated"):
        crop_grid(UTM52N, LATTICE * Affine.rotation(5.0), (0.0, 0.0, 100.0, 100.0))


def test_pixel_centres_and_shape() -> None:
    grid = Grid(UTM52N, Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_290_000.0), 3, 2)
    np.testing.assert_array_equal(grid.xs(), [600_005.0, 600_015.0, 600_025.0])
    np.testing.assert_array_equal(grid.ys(), [5_289_995.0, 5_289_985.0])
    assert grid.shape == (2, 3)
    assert pickle.loads(pickle.dumps(grid)) == grid


def test_the_grid_of_a_cube_is_read_from_its_coordinates_and_crs() -> None:
    cube = make_cube(ny=5, nx=7, years=(2021,), origin=(600_000.0, 5_290_000.0))
    grid = Grid.of(cube)
    assert grid == Grid(UTM52N, Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_290_000.0), 7, 5)
    assert grid.transform == cube.rio.transform()
    np.testing.assert_array_equal(grid.xs(), cube["x"].values)
    np.testing.assert_array_equal(grid.ys(), cube["y"].values)
    with pytest.raises(ImageryError, match="no CRS"):
        Grid.of(cube.drop_vars("spatial_ref"))


def test_a_cube_one_pixel_wide_needs_its_resolution() -> None:
    cube = make_cube(ny=4, nx=1, years=(2021,), resolution=20.0)
    assert grid_transform(cube) == Affine(20.0, 0.0, 600_000.0, 0.0, -20.0, 5_290_000.0)
    cube.attrs.pop("resolution_m")
    with pytest.raises(ImageryError, match="resolution_m"):
        grid_transform(cube)


def test_the_synthetic_world_is_drawn_on_the_grid_its_cube_describes() -> None:
    settings = Settings().with_overrides({"synthetic.start": "2021-05-01", "synthetic.end": "2021-06-30"})
    site = Site("G-1", box(600_003.0, 5_290_007.0, 600_410.0, 5_290_290.0), UTM52N, {"synthetic_scenario": "quiet"})
    region = site.buffered(100.0)
    cube, _truth = synthesize(site, region, settings.synthetic)
    grid = scene_grid(region, UTM52N, settings.synthetic.resolution_m)
    assert Grid.of(cube) == grid
    minx, miny, maxx, maxy = grid.bounds
    rminx, rminy, rmaxx, rmaxy = region.bounds
    # the licence's lattice, no margin: each edge of the region lies in the outermost pixels
    assert minx <= rminx < minx + 10
    assert maxx - 10 < rmaxx <= maxx
    assert miny <= rminy < miny + 10
    assert maxy - 10 < rmaxy <= maxy
