"""Scene statistics that do not depend on how a licence is cut into tiles.

The detector removes a per-date scene median from the index (atmospheric gain, drought years,
common phenology; see :mod:`gmsense.detect.change`). Taken per tile, that median follows
whatever the tile holds: in a tile that is mostly cleared it falls with the clearing and cancels
it. So the median is a property of the licence: it is taken over a sample of the licence's whole
monitoring area, on a lattice of pixel centres anchored on the CRS origin (every ``step``-th
pixel of the grid in x and y, ``step`` fixed by the area's size), so a tile holds exactly the
lattice points of its core and the samples of all tiles together are the sample of the whole.
A scan of a tiled licence gathers the tiles' samples first (:func:`scene_sample`), merges them
(:func:`merge_samples`) and passes the :class:`SceneContext` to every tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from gmsense._numeric import as_slice, row_medians
from gmsense.config import Settings
from gmsense.detect.phenology import PhenologyGroups, fit_groups

#: Pixels of a licence's monitoring area in the scene sample (at most): the median of 40,000
#: values is within ~1 % of the scene's spread of the median of all of them, far under the drops
#: the detector looks for, and a tile's sample travels back to the scan cheaply.
SCENE_SAMPLE_PIXELS = 40_000


@dataclass(frozen=True)
class SceneSample:
    """Index values at the lattice points of one piece of a licence: ``values`` (T, n) float32,
    NaN where not clear, on ``times`` (T,) datetime64[ns]."""

    times: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class SceneContext:
    """The per-date scene median of a licence's index and whether the sample saw anything that
    date, on ``times`` (datetime64[ns], sorted); with ``detect.phenology_groups``, the licence's
    phenology groups (:mod:`gmsense.detect.phenology`; None when none earns its place)."""

    times: np.ndarray
    offset: np.ndarray
    has_data: np.ndarray
    groups: PhenologyGroups | None = None

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offset and has-data on ``times`` (a date the context lacks has offset 0 and no data)."""
        times = np.asarray(times, dtype="datetime64[ns]")
        offset, has_data = np.zeros(times.shape), np.zeros(times.shape, dtype=bool)
        if self.times.size:
            where = np.minimum(np.searchsorted(self.times, times), self.times.size - 1)
            found = self.times[where] == times
            offset[found], has_data[found] = self.offset[where[found]], self.has_data[where[found]]
        return offset, has_data


def sample_step(area_m2: float, pixel_area_m2: float) -> int:
    """Every ``step``-th pixel in x and y samples an area of ``area_m2`` with at most about
    SCENE_SAMPLE_PIXELS pixels of ``pixel_area_m2``."""
    return max(1, math.ceil(math.sqrt(area_m2 / pixel_area_m2 / SCENE_SAMPLE_PIXELS)))


def _lattice(coords: np.ndarray, pixel_m: float, step: int) -> np.ndarray:
    """Positions of ``coords`` (pixel centres, metres) on the lattice: pixel number from the CRS
    origin divisible by ``step``. The quarter pixel makes centres on and between multiples of the
    pixel size count alike despite rounding."""
    number = np.floor(coords / pixel_m + 0.25).astype("int64")
    return np.flatnonzero(number % step == 0)


def scene_sample(index: xr.DataArray, step: int,
                 keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> SceneSample:
    """The index (time, y, x) at the lattice points ``keep(x, y)`` selects (all when None)."""
    x, y = index["x"].values, index["y"].values
    pixel_x = float(abs(x[1] - x[0])) if x.size > 1 else 1.0
    pixel_y = float(abs(y[1] - y[0])) if y.size > 1 else pixel_x
    cols, rows = _lattice(x, pixel_x, step), _lattice(y, pixel_y, step)
    times = index["time"].values.astype("datetime64[ns]")
    if cols.size == 0 or rows.size == 0:
        return SceneSample(times, np.empty((times.size, 0), dtype="float32"))
    grid_x, grid_y = np.meshgrid(x[cols], y[rows])
    chosen = np.ones(grid_x.shape, dtype=bool) if keep is None else np.asarray(keep(grid_x, grid_y), dtype=bool)
    values = np.asarray(index.isel(y=as_slice(rows), x=as_slice(cols)).transpose("time", "y", "x").values)
    # Date by date: a mask over the last two axes of the whole stack lays the result out point-major
    # (Fortran order), and the medians per date then copy it across (a transpose, slow).
    picked = np.empty((times.size, int(chosen.sum())), dtype="float32")
    for t, image in enumerate(values):
        picked[t] = image[chosen]
    return SceneSample(times, picked)


def merge_samples(samples: Sequence[SceneSample], settings: Settings | None = None, threads: int = 1) -> SceneContext:
    """The licence's context from the samples of its pieces (each lattice point in one piece):
    per date the NaN-aware median over every piece's values that date; with ``settings`` whose
    ``detect.phenology_groups`` is on, the phenology groups too. The medians of the dates are
    split among ``threads`` threads (numpy sorts without the GIL; the same result)."""
    times = np.unique(np.concatenate([s.times for s in samples])) if samples else \
        np.empty(0, dtype="datetime64[ns]")
    if len(samples) == 1 and np.array_equal(samples[0].times, times):  # a whole licence: its sample as it is
        stacked = np.asarray(samples[0].values, dtype="float32")
    else:
        columns = []
        for sample in samples:
            placed = np.full((times.size, sample.values.shape[1]), np.nan, dtype="float32")
            placed[np.searchsorted(times, sample.times)] = sample.values
            columns.append(placed)
        stacked = np.concatenate(columns, axis=1) if columns else np.empty((times.size, 0), dtype="float32")
    if stacked.shape[1] == 0:
        return SceneContext(times, np.zeros(times.size), np.zeros(times.size, dtype=bool))
    medians = row_medians(stacked, threads)
    has_data = ~np.isnan(medians)
    offset = np.where(has_data, medians, 0.0).astype("float64")
    groups = None
    if settings is not None and settings.detect.phenology_groups:
        keep = np.ones(times.size, dtype=bool)
        if settings.mask.max_scene_dip is not None:
            keep = ~scene_dips(offset, has_data, settings.mask.max_scene_dip)
        groups = fit_groups(stacked, times, offset, keep, settings.detect, settings.season)
    return SceneContext(times, offset, has_data, groups)


def index_context(index: xr.DataArray, settings: Settings | None = None) -> SceneContext:
    """The context of ``index`` taken whole (every pixel of its grid belongs to the area)."""
    x, y = index["x"].values, index["y"].values
    pixel_x = float(abs(x[1] - x[0])) if x.size > 1 else 1.0
    pixel_y = float(abs(y[1] - y[0])) if y.size > 1 else pixel_x
    step = sample_step(x.size * y.size * pixel_x * pixel_y, pixel_x * pixel_y)
    return merge_samples([scene_sample(index, step)], settings)


def scene_dips(offset: np.ndarray, has_data: np.ndarray, max_dip: float) -> np.ndarray:
    """Dates whose scene median falls ``max_dip`` below the centred median of 5 observed dates.

    Such isolated dips are haze or unflagged cloud over much of the scene; a lasting change
    moves the neighbours too and is kept.
    """
    observed = np.flatnonzero(has_data)
    dips = np.zeros(offset.shape, dtype=bool)
    if observed.size == 0:
        return dips
    values = offset[observed]
    padded = np.pad(values, 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 5)
    dips[observed] = values < np.median(windows, axis=1) - max_dip
    return dips
