"""The faster helpers give, bit for bit, what the code they replace gave: row medians by contiguous
sort (scene sample medians) against :func:`gmsense._numeric.nan_median`, the scene sample taken
by slices against the same sample gathered by index arrays, and row medians split among threads
against one thread."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gmsense._numeric import as_slice as _as_slice
from gmsense._numeric import nan_median, row_medians
from gmsense.detect.context import _lattice, scene_sample

_VALUES = hnp.arrays("float32", st.tuples(st.integers(0, 6), st.integers(0, 40)),
                     elements=st.one_of(st.floats(-1, 1, width=32), st.just(np.nan), st.just(np.inf),
                                        st.just(-np.inf)))


@settings(max_examples=200, deadline=None)
@given(values=_VALUES)
def test_row_medians_equal_nan_median_of_the_transpose(values: np.ndarray) -> None:
    np.testing.assert_array_equal(row_medians(values), nan_median(values.T))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_medians_on_a_large_strided_sample(dtype: str) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(0.4, 0.2, (40_001, 12)).astype(dtype).T  # (12, 40001), not contiguous
    values[rng.random(values.shape) < 0.3] = np.nan
    values[4] = np.nan  # a date nothing saw
    values[7, 1:] = np.nan  # one value
    values[7, 0] = 0.25
    out = row_medians(values)
    np.testing.assert_array_equal(out, nan_median(values.T))
    assert np.isnan(out[4])
    assert out[7] == values[7, 0]


@pytest.mark.parametrize("threads", [2, 3, 50])
def test_row_medians_in_threads_equal_one_thread(threads: int) -> None:
    rng = np.random.default_rng(threads)
    values = rng.normal(0.4, 0.2, (37, 1001)).astype("float32")
    values[rng.random(values.shape) < 0.3] = np.nan
    values[5] = np.nan
    np.testing.assert_array_equal(row_medians(values, threads), row_medians(values))
    np.testing.assert_array_equal(row_medians(values[:1], threads), row_medians(values[:1]))


@pytest.mark.parametrize(("positions", "expected"), [
    (np.array([0, 3, 6, 9]), slice(0, 10, 3)),
    (np.array([5]), None),
    (np.array([1, 2, 4]), None),
    (np.array([], dtype="int64"), None),
])
def test_evenly_spaced_positions_become_a_slice(positions: np.ndarray, expected: slice | None) -> None:
    got = _as_slice(positions)
    if expected is None:
        assert got is positions
    else:
        assert got == expected
        np.testing.assert_array_equal(np.arange(20)[got], positions)


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_scene_sample_by_slices_equals_the_gathered_sample(step: int) -> None:
    rng = np.random.default_rng(step)
    values = rng.normal(0.5, 0.2, (5, 23, 31)).astype("float32")
    values[rng.random(values.shape) < 0.2] = np.nan
    x = 600_005.0 + 10.0 * np.arange(31)
    y = 5_290_995.0 - 10.0 * np.arange(23)  # north-up: y descending
    times = np.arange(5).astype("datetime64[D]").astype("datetime64[ns]")
    index = xr.DataArray(values, dims=("time", "y", "x"), coords={"time": times, "y": y, "x": x})
    sample = scene_sample(index, step, lambda gx, gy: gx + gy > 5_891_200.0)
    cols, rows = _lattice(x, 10.0, step), _lattice(y, 10.0, step)
    grid_x, grid_y = np.meshgrid(x[cols], y[rows])
    gathered = values[:, rows][:, :, cols][:, grid_x + grid_y > 5_891_200.0]
    np.testing.assert_array_equal(sample.values, gathered)
    assert 0 < sample.values.shape[1] < rows.size * cols.size
