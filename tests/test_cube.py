"""Indices and growing-season selection."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gmsense.config import SeasonSettings
from gmsense.cube import ops as cubeops
from gmsense.testutils import make_cube


def test_indices_match_their_formulas(backend: str) -> None:
    cube = make_cube(ny=4, nx=4, years=(2020,), cloud_share=0.0)
    if backend == "dask":
        cube = cube.chunk({"time": 5})
    b = {k: float(cube[k].isel(time=10, y=0, x=0)) for k in ("blue", "red", "nir", "swir1", "swir2")}
    got = {name: float(cubeops.index(cube, name).isel(time=10, y=0, x=0)) for name in cubeops.INDEX_BANDS}
    assert got["ndvi"] == pytest.approx((b["nir"] - b["red"]) / (b["nir"] + b["red"]), rel=1e-5)
    assert got["nbr"] == pytest.approx((b["nir"] - b["swir2"]) / (b["nir"] + b["swir2"]), rel=1e-5)
    assert got["ndmi"] == pytest.approx((b["nir"] - b["swir1"]) / (b["nir"] + b["swir1"]), rel=1e-5)
    bsi = ((b["swir1"] + b["red"]) - (b["nir"] + b["blue"])) / (b["swir1"] + b["red"] + b["nir"] + b["blue"])
    assert got["bsi"] == pytest.approx(bsi, rel=1e-4)


def test_missing_band_is_named() -> None:
    cube = make_cube(ny=2, nx=2, years=(2020,)).drop_vars("swir2")
    with pytest.raises(KeyError, match="swir2"):
        cubeops.index(cube, "nbr")
    assert "nbr" not in cubeops.available_indices(cube)


def test_masking_and_season() -> None:
    cube = make_cube(ny=3, nx=3, years=(2020,), cloud_share=0.3)
    masked = cubeops.masked(cube)
    assert np.isnan(masked["red"].values[~cube["clear"].values]).all()
    assert np.isfinite(masked["red"].values[cube["clear"].values]).all()
    season = cubeops.growing_season(masked, SeasonSettings(start_month=6, end_month=8))
    months = season["time"].dt.month.values
    assert months.min() == 6
    assert months.max() == 8
    assert isinstance(season, xr.Dataset)


def test_grown_masks_equal_a_maximum_filter() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 30, 3))
        mask = rng.random(shape) < rng.choice([0.0, 0.01, 0.1, 0.5])
        radius = int(rng.integers(0, 9))
        expected = ndimage.maximum_filter(mask, size=(1, 2 * radius + 1, 2 * radius + 1), mode="constant", cval=False)
        np.testing.assert_array_equal(cubeops._grow_masks(mask, radius), expected)


def test_masked_index_equals_the_index_of_masked_reflectance(backend: str) -> None:
    cube = make_cube(ny=9, nx=7, years=(2020,), cloud_share=0.3)
    cube["red"][3, 2, 2] = np.nan  # never observed
    cube["nir"][4, 1, 1] = cube["red"][4, 1, 1] = 0.0  # nir + red == 0
    if backend == "dask":
        cube = cube.chunk({"time": 5, "y": 4})
    for name in ("ndvi", "nbr"):
        got = cubeops.masked_index(cube, name).compute()
        expected = cubeops.index(cubeops.masked(cube), name).compute()
        assert got.dtype == expected.dtype
        xr.testing.assert_identical(got.drop_vars("spatial_ref", errors="ignore"),
                                    expected.drop_vars("spatial_ref", errors="ignore"))
