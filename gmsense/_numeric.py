"""NaN-aware medians shared by detection, features and recovery (one implementation each).

No ``np.nanmedian`` on the hot paths: for short axes it takes a slow masked-array path, and on
all-NaN slices it warns (silencing that needs ``warnings.catch_warnings``, which is not
thread-safe, and the scan analyses licences in threads).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np


def masked_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median over axis 0 of ``values`` where ``weights`` (T, P) -> (P,); NaN where a column has none.

    Equal to ``np.nanmedian`` of the masked values, in the dtype of ``values`` (float32 stays
    float32), without its slow masked-array path.
    """
    counts = weights.sum(axis=0)
    ordered = np.sort(np.where(weights, values, np.inf), axis=0)
    lo = np.clip((counts - 1) // 2, 0, None)[None, :]
    hi = np.clip(counts // 2, 0, None)[None, :]
    mid = 0.5 * (np.take_along_axis(ordered, lo, axis=0)[0] + np.take_along_axis(ordered, hi, axis=0)[0])
    return np.where(counts > 0, mid, np.nan)


def nan_median(values: np.ndarray) -> np.ndarray:
    """(T, P) -> (P,) float64 median over axis 0 of the finite values (equal to
    ``np.nanmedian(values, axis=0)``); NaN, quietly, for columns with none."""
    out = np.full(values.shape[1], np.nan)
    seen = np.isfinite(values)
    if values.shape[0] and seen.any():
        out[:] = masked_median(np.where(seen, values, 0), seen)
    return out




def row_medians(values: np.ndarray, threads: int = 1) -> np.ndarray:
    """(T, P) -> (T,) float64 median along axis 1 of the finite values, row by row (equal to
    :func:`nan_median` of ``values.T``, bit for bit); NaN, quietly, for rows with none.

    For few long rows (a scene sample: a date's values over tens of thousands of pixels): the rows
    sorted where they lie, contiguous (numpy's vectorised sort), instead of along a strided axis;
    blocks of rows in ``threads`` threads (numpy releases the GIL in its array work)."""
    values = np.ascontiguousarray(values)
    if threads > 1 and values.shape[0] > 1:
        from gmsense._parallel import parallel_map

        edges = np.linspace(0, values.shape[0], min(threads, values.shape[0]) + 1).round().astype(int)
        blocks = list(pairwise(edges))
        return np.concatenate(parallel_map(lambda rows: row_medians(values[rows[0]:rows[1]]), blocks, len(blocks)))
    out = np.full(values.shape[0], np.nan)
    if values.shape[1] == 0:
        return out
    seen = np.isfinite(values)
    counts = seen.sum(axis=1)
    ordered = np.sort(np.where(seen, values, np.inf), axis=1)
    lo = np.clip((counts - 1) // 2, 0, None)[:, None]
    hi = np.clip(counts // 2, 0, None)[:, None]
    mid = 0.5 * (np.take_along_axis(ordered, lo, axis=1)[:, 0] + np.take_along_axis(ordered, hi, axis=1)[:, 0])
    out[counts > 0] = mid[counts > 0]
    return out


def as_slice(positions: np.ndarray) -> np.ndarray | slice:
    """Sorted ``positions`` as a slice when they are evenly spaced (a run, or a lattice on a regular
    grid): xarray and dask then index by basic slicing, a view, where a list of positions gathers
    every chunk; else ``positions`` as they are."""
    if positions.size > 1:
        steps = np.diff(positions)
        if (steps == steps[0]).all() and steps[0] > 0:
            return slice(int(positions[0]), int(positions[-1]) + 1, int(steps[0]))
    return positions
