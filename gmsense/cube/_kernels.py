"""Compiled masking of a numpy-backed cube's growing season (numba, ``nogil``).

One pass over each growing-season date does what :func:`gmsense.cube.ops.refine_clear` and
:func:`gmsense.cube.ops.masked_index` do for NDVI (the same values), reading the bands where
they lie instead of copying the season out first; dates are independent, so date ranges run in
parallel threads (:func:`gmsense.pipeline.season_index`).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def _dilate_rows(mask, radius, out):  # pragma: no cover - compiled
    """``out[y, x] = any(mask[y, x - radius : x + radius + 1])`` (False beyond the edges)."""
    ny, nx = mask.shape
    for y in range(ny):
        count = 0
        for x in range(min(radius, nx)):
            count += mask[y, x]
        for x in range(nx):
            ahead = x + radius
            if ahead < nx:
                count += mask[y, ahead]
            behind = x - radius - 1
            if behind >= 0:
                count -= mask[y, behind]
            out[y, x] = count > 0


@njit(nogil=True, cache=True)
def _dilate_columns(mask, radius, out):  # pragma: no cover - compiled
    """``out[y, x] = any(mask[y - radius : y + radius + 1, x])`` (False beyond the edges)."""
    ny, nx = mask.shape
    counts = np.zeros(nx, dtype=np.int32)
    for y in range(min(radius, ny)):
        for x in range(nx):
            counts[x] += mask[y, x]
    for y in range(ny):
        ahead = y + radius
        behind = y - radius - 1
        for x in range(nx):
            if ahead < ny:
                counts[x] += mask[ahead, x]
            if behind >= 0:
                counts[x] -= mask[behind, x]
            out[y, x] = counts[x] > 0


@njit(nogil=True, cache=True)
def season_ndvi_kernel(nir, red, blue, clear, dates, first, last, radius, haze, use_haze,
                       refine, ndvi_out, clear_out):  # pragma: no cover - compiled
    """For season dates ``first..last-1`` (cube dates ``dates[k]``): the refined clear mask
    (``refine``: not within ``radius`` pixels, a square window, of an observed but not-clear pixel;
    with ``use_haze`` not hazy by the HOT test ``blue - 0.5 red - 0.08 > threshold``) into
    ``clear_out[k]`` and the NDVI, NaN where not clear or nir + red is 0, into ``ndvi_out[k]``.
    Bands (T, y, x); outputs (season dates, y, x). ``haze``: 0.5, 0.08 and the threshold in the
    bands' dtype, so the test rounds as numpy's does on those bands."""
    ny, nx = clear.shape[1], clear.shape[2]
    bad = np.empty((ny, nx), dtype=np.bool_)
    across = np.empty((ny, nx), dtype=np.bool_)
    grown = np.zeros((ny, nx), dtype=np.bool_)
    for k in range(first, last):
        t = dates[k]
        any_bad = False
        if refine and radius > 0:
            for y in range(ny):
                for x in range(nx):
                    b = (not np.isnan(red[t, y, x])) and not clear[t, y, x]
                    bad[y, x] = b
                    any_bad = any_bad or b
        if any_bad:
            _dilate_rows(bad, radius, across)
            _dilate_columns(across, radius, grown)
        for y in range(ny):
            for x in range(nx):
                ok = clear[t, y, x] and not (any_bad and grown[y, x])
                if ok and refine and use_haze:
                    hot = blue[t, y, x] - red[t, y, x] * haze[0] - haze[1]
                    ok = not (hot > haze[2])
                clear_out[k, y, x] = ok
                total = nir[t, y, x] + red[t, y, x]
                if ok and total != 0:
                    ndvi_out[k, y, x] = (nir[t, y, x] - red[t, y, x]) / total
                else:
                    ndvi_out[k, y, x] = np.nan
