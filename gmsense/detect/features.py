"""Per-patch spectral features: the patch's reflectance before and after the change.

``before`` is the per-pixel median over the clear growing-season observations of the season
before the patch was first detected; ``after`` the median from ``first_detected`` to the end of
that season. Both are averaged over the patch's pixels. Reflectance is unitless.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import ndimage

from gmsense.cube import BANDS
from gmsense.detect.change import masked_median
from gmsense.detect.patches import Patch


def _median_over_time(values: np.ndarray) -> np.ndarray:
    """(T, P) -> (P,) NaN-aware median (equal to ``np.nanmedian``); NaN for pixels never observed."""
    out = np.full(values.shape[1], np.nan)
    seen = np.isfinite(values)
    if values.shape[0] and seen.any():
        out[:] = masked_median(np.where(seen, values, 0), seen)
    return out


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def add_patch_spectra(patches: list[Patch], labels: np.ndarray, season_cube: xr.Dataset,
                      clear: np.ndarray | None = None, time_index: np.ndarray | slice | None = None) -> None:
    """Fill ``patch.spectral`` with ``<band>_before``, ``<band>_after`` and ``<band>_ratio``.

    ``season_cube`` holds masked growing-season reflectance (NaN where not clear), loaded. Or,
    with ``clear`` ((T, y, x) bool over the growing-season dates), unmasked reflectance, loaded,
    whose growing-season dates are ``time_index`` (indices or a slice of its time axis; all when
    None): then only each patch's bounding box is read and masked, nothing is copied whole.
    """
    select = slice(None) if time_index is None else time_index
    times = season_cube["time"].values[select].astype("datetime64[ns]")
    years = times.astype("datetime64[Y]").astype(int) + 1970
    bands = [b for b in BANDS if b in season_cube]
    arrays = {b: np.asarray(season_cube[b].transpose("time", "y", "x").values) for b in bands}
    boxes = ndimage.find_objects(labels)
    for patch in patches:
        box = boxes[patch.label - 1]
        mask = labels[box] == patch.label
        year = int(patch.first_detected.astype("datetime64[Y]").astype(int) + 1970)
        before_t = np.flatnonzero(years == year - 1)
        after_t = np.flatnonzero((years == year) & (times >= patch.first_detected))
        window = (slice(None), *box)
        visible = clear[window] if clear is not None else None
        for b in bands:
            values = arrays[b][select][window] if isinstance(select, slice) else arrays[b][(select, *box)]
            if visible is not None:
                values = np.where(visible, values, np.nan)
            pixels = values[:, mask]
            before = _mean(_median_over_time(pixels[before_t]))
            after = _mean(_median_over_time(pixels[after_t]))
            patch.spectral[f"{b}_before"] = before
            patch.spectral[f"{b}_after"] = after
            patch.spectral[f"{b}_ratio"] = after / before if before and np.isfinite(before) else float("nan")
