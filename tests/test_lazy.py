"""Laziness: opening, validating and the cheap cube operations build dask graphs and compute
nothing (opening reads a small sample of dates, to tell digital numbers from reflectance);
analysis is where a cube is computed.

A scheduler that counts its calls and raises past a limit (as xarray's own
``raise_if_dask_computes``) turns any hidden ``.values`` / ``.compute()`` / ``bool(array)`` on a
dask-backed cube into a test failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
from shapely.geometry import box

import gmsense
from gmsense.config import MaskSettings, SeasonSettings
from gmsense.cube import ops as cubeops
from gmsense.cube.contract import validate_cube
from gmsense.testutils import PlantedBreak, make_cube

CHUNKS = {"time": 16, "y": 20, "x": 20}


class DaskComputedError(AssertionError):
    """Raised by :func:`raise_if_dask_computes` when dask is asked to compute."""


@contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[list[Any]]:
    """Dask computations inside the block beyond ``max_computes`` raise :class:`DaskComputedError`;
    yields the list of the keys of each computation (that was allowed)."""
    computed: list[Any] = []

    def scheduler(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        if len(computed) >= max_computes:
            raise DaskComputedError(f"dask was asked to compute {keys} ({len(computed)} computed before)")
        computed.append(keys)
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=scheduler):
        yield computed


def test_the_guard_catches_a_computation() -> None:
    lazy = xr.DataArray(np.arange(4.0)).chunk(2)
    with raise_if_dask_computes(), pytest.raises(DaskComputedError):
        lazy.sum().values  # noqa: B018 (the access is the computation)
    assert float(lazy.sum()) == 6.0


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    """40 x 40 pixels, 2019-2021, a clearing cut in 2020."""
    return make_cube(ny=60, nx=60, breaks=(PlantedBreak(slice(20, 32), slice(20, 34), "2020-06-20"),), seed=4,
                     cloud_share=0.0)


@pytest.fixture(scope="module", params=["zarr", "netcdf"])
def store(request: pytest.FixtureRequest, cube: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lazy")
    if request.param == "zarr":
        path = folder / "cube.zarr"
        cube.chunk(CHUNKS).to_zarr(path, consolidated=False)
    else:
        path = folder / "cube.nc"
        encoding = {v: {"chunksizes": tuple(CHUNKS[d] for d in cube[v].dims)} for v in cube.data_vars
                    if cube[v].dims == ("time", "y", "x")}
        cube.to_netcdf(path, encoding=encoding)
    return path


def _assert_lazy(obj: xr.Dataset | xr.DataArray) -> None:
    variables = obj.data_vars.values() if isinstance(obj, xr.Dataset) else [obj]
    for var in variables:
        if var.ndim == 3:
            assert var.chunks is not None, f"{var.name} is not dask-backed"


def test_opening_and_validating_a_cube_computes_nothing(store: Path, cube: xr.Dataset) -> None:
    # the one read on opening: a few dates of red and of nir, to tell digital numbers from reflectance
    with raise_if_dask_computes(max_computes=2) as computed:
        opened = gmsense.open_imagery(store)
    assert len(computed) <= 2
    with raise_if_dask_computes():
        assert validate_cube(opened) is opened
    _assert_lazy(opened)
    assert opened.sizes == cube.sizes
    np.testing.assert_array_equal(opened["nir"].values, cube["nir"].values)


def test_masking_and_indices_stay_lazy(store: Path) -> None:
    opened = gmsense.open_imagery(store)
    season = SeasonSettings()
    with raise_if_dask_computes():
        refined = cubeops.refine_clear(opened, MaskSettings(cloud_buffer_m=20))
        masked = cubeops.masked(refined)
        in_season = cubeops.growing_season(masked, season)
        indices = {name: cubeops.index(in_season, name) for name in cubeops.available_indices(opened)}
        fused = cubeops.masked_index(cubeops.growing_season(refined, season), "ndvi")
        years = cubeops.season_year(in_season["time"])
    for lazy in (refined, masked, in_season, *indices.values(), fused):
        _assert_lazy(lazy)
    assert set(indices) == {"ndvi", "nbr", "ndmi", "bsi"}
    assert years.min() == 2019
    # computed afterwards, the lazy results are the eager ones
    eager = opened.load()
    np.testing.assert_array_equal(fused.values, cubeops.masked_index(cubeops.growing_season(
        cubeops.refine_clear(eager, MaskSettings(cloud_buffer_m=20)), season), "ndvi").values)


def test_analysis_computes_and_works_outside_the_guard(store: Path) -> None:
    opened = gmsense.open_imagery(store)
    x, y = opened["x"].values, opened["y"].values
    licence = box(x.min() + 150, y.min() + 150, x.max() - 150, y.max() - 150)
    settings = gmsense.load_settings(overrides={"sites.buffer_m": 100.0})
    with raise_if_dask_computes(), pytest.raises(DaskComputedError):
        gmsense.analyse(opened, licence, settings=settings, model="rules")
    result = gmsense.analyse(opened, licence, settings=settings, model="rules")
    assert len(result.patches) >= 1
    assert bool(result.breaks["disturbed"].any())
