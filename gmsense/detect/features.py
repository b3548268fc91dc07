"""Per-patch spectral features: the patch's reflectance before and after the change.

``before`` is the per-pixel median over the clear growing-season observations of the season
before the patch was first detected; ``after`` the median from ``first_detected`` to the end of
that season. Both are averaged over the patch's pixels. Reflectance is unitless.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from gmsense.cube import BANDS
from gmsense.detect.patches import Patch


def _median_over_time(values: np.ndarray) -> np.ndarray:
    """(T, P) -> (P,) NaN-aware median; NaN for pixels never observed, without warnings."""
    out = np.full(values.shape[1], np.nan)
    seen = np.isfinite(values).any(axis=0)
    if values.shape[0] and seen.any():
        out[seen] = np.nanmedian(values[:, seen], axis=0)
    return out


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def add_patch_spectra(patches: list[Patch], labels: np.ndarray, season_cube: xr.Dataset) -> None:
    """Fill ``patch.spectral`` with ``<band>_before``, ``<band>_after`` and ``<band>_ratio``.

    ``season_cube`` holds masked growing-season reflectance (NaN where not clear), loaded.
    """
    times = season_cube["time"].values.astype("datetime64[ns]")
    years = times.astype("datetime64[Y]").astype(int) + 1970
    bands = [b for b in BANDS if b in season_cube]
    arrays = {b: np.asarray(season_cube[b].values) for b in bands}
    for patch in patches:
        mask = labels == patch.label
        year = int(patch.first_detected.astype("datetime64[Y]").astype(int) + 1970)
        before_t = np.flatnonzero(years == year - 1)
        after_t = np.flatnonzero((years == year) & (times >= patch.first_detected))
        for b in bands:
            pixels = arrays[b][:, mask]
            before = _mean(_median_over_time(pixels[before_t]))
            after = _mean(_median_over_time(pixels[after_t]))
            patch.spectral[f"{b}_before"] = before
            patch.spectral[f"{b}_after"] = after
            patch.spectral[f"{b}_ratio"] = after / before if before and np.isfinite(before) else float("nan")
