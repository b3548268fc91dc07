"""Per-pixel disturbance detection against each pixel's own same-season history.

For every growing season ``Y`` a small harmonic model of the index (default: NDVI) is fitted per
pixel on the clear observations of the ``baseline_seasons`` seasons before ``Y`` (robustly: one
refit without outliers); its residual spread (1.4826 x MAD) scales the drop of each observation in
``Y`` below the model into a robust z-score. An observation is a *drop* when it is more than
``z_threshold`` spreads and ``min_drop`` below the model. A disturbance is *confirmed* when
``confirm_obs`` consecutive clear observations are drops (across season ends too); the first of
them is ``first_detected``, the last ``confirmed_on``.

Before fitting, the per-date median of the scene is removed, which cancels atmospheric gain,
drought years and the common phenology; it is taken on a fixed pixel subsample so the result is
the same however the data is chunked. Dates whose scene median dips alone below their
neighbours (haze) are dropped, and a confirmed drop that does not persist through the rest of
its season (cloud, late leaf-out) is withdrawn.

Works on numpy- and dask-backed DataArrays (dask chunks may split y and x, not time).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from gmsense.config import DetectSettings

NO_BREAK = -1
_SCENE_SAMPLE_PIXELS = 250_000  # per-date subsample for the scene median
_DAYS_PER_YEAR = 365.25


def design_matrix(doy: np.ndarray, harmonics: int) -> np.ndarray:
    """Columns ``1, cos(2 pi k doy / 365.25), sin(...)`` for k = 1..harmonics; shape (T, 1 + 2h)."""
    cols = [np.ones_like(doy, dtype="float64")]
    for k in range(1, harmonics + 1):
        angle = 2 * np.pi * k * doy / _DAYS_PER_YEAR
        cols += [np.cos(angle), np.sin(angle)]
    return np.stack(cols, axis=1)


def _fit(design: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares per pixel. design (T, k); values, weights (T, P) -> coefficients (P, k).

    The per-pixel normal matrices come from one matrix product of the weights with the (T, k*k)
    column products of the design, so the cost is two GEMMs and a batched k x k solve.
    """
    k = design.shape[1]
    w = weights.astype("float64")
    products = (design[:, :, None] * design[:, None, :]).reshape(design.shape[0], k * k)
    normal = (w.T @ products).reshape(-1, k, k)
    normal += 1e-6 * np.eye(k)
    rhs = np.where(weights, values, 0.0).T @ design
    return np.linalg.solve(normal, rhs[..., None])[..., 0]


def masked_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median over axis 0 of ``values`` where ``weights`` (T, P); NaN where a column has none.

    Equal to ``np.nanmedian`` of the masked values, without its slow masked-array path.
    """
    counts = weights.sum(axis=0)
    ordered = np.sort(np.where(weights, values, np.inf), axis=0)
    lo = np.clip((counts - 1) // 2, 0, None)[None, :]
    hi = np.clip(counts // 2, 0, None)[None, :]
    mid = 0.5 * (np.take_along_axis(ordered, lo, axis=0)[0] + np.take_along_axis(ordered, hi, axis=0)[0])
    return np.where(counts > 0, mid, np.nan)


def _spread(residuals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """1.4826 x median absolute residual per pixel over the weighted observations; (T, P) -> (P,)."""
    out = 1.4826 * masked_median(np.abs(np.nan_to_num(residuals)), weights & np.isfinite(residuals))
    return np.where(np.isnan(out), np.inf, out)


def season_drops(values: np.ndarray, doy: np.ndarray, year: np.ndarray, settings: DetectSettings) -> tuple[np.ndarray, np.ndarray]:
    """Drop below the own-history model and the drop threshold, per observation.

    ``values`` (T, P) index values, NaN where not clear. Returns ``drop`` (T, P; NaN where the
    observation is missing or the pixel has too little history) and ``threshold`` (T, P).
    """
    n_time, n_pix = values.shape
    design = design_matrix(doy, settings.harmonics)
    drop = np.full((n_time, n_pix), np.nan)
    threshold = np.full((n_time, n_pix), np.nan)
    observed = np.isfinite(values)
    for season in np.unique(year):
        base_t = np.flatnonzero((year < season) & (year >= season - settings.baseline_seasons))
        this_t = np.flatnonzero(year == season)
        if base_t.size == 0:
            continue
        xb, yb, wb = design[base_t], values[base_t], observed[base_t]
        coef = _fit(xb, yb, wb)
        resid = yb - (xb @ coef.T)
        sigma = np.maximum(_spread(resid, wb), settings.sigma_floor)
        inliers = wb & (np.abs(np.nan_to_num(resid)) <= 3 * sigma)
        coef = _fit(xb, yb, inliers)
        resid = yb - (xb @ coef.T)
        sigma = np.maximum(_spread(resid, inliers), settings.sigma_floor)
        enough = inliers.sum(axis=0) >= settings.min_baseline_obs
        expected = design[this_t] @ coef.T
        season_drop = expected - values[this_t]
        drop[this_t] = np.where(enough, season_drop, np.nan)
        threshold[this_t] = np.maximum(settings.min_drop, settings.z_threshold * sigma)[None, :]
    return drop, threshold


def confirm_runs(drop: np.ndarray, threshold: np.ndarray, confirm_obs: int, year: np.ndarray | None = None,
                 min_persistence: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First confirmed run of drops per pixel.

    Walks the observations in time order; missing ones (NaN ``drop``) neither extend nor break a
    run. A confirmed run is kept only if at least ``min_persistence`` of the pixel's observations
    from its start to the end of that season (``year``) are drops: vegetation that is back
    within weeks was cloud, haze or late leaf-out, not damage. Returns ``first`` and
    ``confirmed`` time indices (``NO_BREAK`` if none), the mean drop of the confirming run, and
    ``probable``: the start of an unconfirmed run still open at the end of the series.
    """
    n_time, n_pix = drop.shape
    first = np.full(n_pix, NO_BREAK, dtype="int32")
    confirmed = np.full(n_pix, NO_BREAK, dtype="int32")
    magnitude = np.full(n_pix, np.nan, dtype="float32")
    run_len = np.zeros(n_pix, dtype="int32")
    run_start = np.full(n_pix, NO_BREAK, dtype="int32")
    run_sum = np.zeros(n_pix)
    seen_all = np.isfinite(drop)
    drop0 = np.where(seen_all, drop, 0.0)
    drops_all = seen_all & (drop0 > threshold)
    for t in range(n_time):
        seen, is_drop = seen_all[t], drops_all[t]
        starts = is_drop & (run_len == 0)
        run_start[starts] = t
        run_len = np.where(is_drop, run_len + 1, np.where(seen, 0, run_len))
        run_sum = np.where(is_drop, run_sum + drop0[t], np.where(seen, 0.0, run_sum))
        newly = (run_len == confirm_obs) & (first == NO_BREAK)
        first[newly] = run_start[newly]
        confirmed[newly] = t
        magnitude[newly] = run_sum[newly] / confirm_obs
    probable = np.where((first == NO_BREAK) & (run_len > 0), run_start, NO_BREAK).astype("int32")
    if min_persistence > 0 and year is not None:
        broken = first != NO_BREAK
        t_index = np.arange(n_time)[:, None]
        start_year = year[np.clip(first, 0, None)]
        window = (t_index >= first[None, :]) & (year[:, None] == start_year[None, :]) & broken[None, :]
        seen = window & seen_all
        drops = window & drops_all
        share = drops.sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
        transient = broken & (share < min_persistence)
        first[transient] = NO_BREAK
        confirmed[transient] = NO_BREAK
        magnitude[transient] = np.nan
    return first, confirmed, magnitude, probable


def _breaks_block(values: np.ndarray, doy: np.ndarray, year: np.ndarray, settings: DetectSettings) -> np.ndarray:
    """(y, x, T) block -> (y, x, 4) float32: first, confirmed, magnitude, probable."""
    ny, nx, n_time = values.shape
    flat = values.reshape(ny * nx, n_time).T.astype("float64")
    drop, threshold = season_drops(flat, doy, year, settings)
    first, confirmed, magnitude, probable = confirm_runs(drop, threshold, settings.confirm_obs, year,
                                                         settings.min_persistence)
    out = np.stack([first, confirmed, magnitude, probable], axis=-1).astype("float32")
    return out.reshape(ny, nx, 4)


def scene_offset(index: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Per-date median of the index over a fixed subsample of pixels (NaN-aware; 0 where the
    sample has no data) and whether the sample had data, both shape (T,)."""
    step = max(1, int(np.ceil(np.sqrt(index.sizes["y"] * index.sizes["x"] / _SCENE_SAMPLE_PIXELS))))
    sample = np.asarray(index.isel(y=slice(None, None, step), x=slice(None, None, step)).values)
    flat = sample.reshape(sample.shape[0], -1)
    offset = np.zeros(flat.shape[0])
    has_data = np.isfinite(flat).any(axis=1)
    offset[has_data] = np.nanmedian(flat[has_data], axis=1)
    return offset, has_data


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


def detect_breaks(index: xr.DataArray, settings: DetectSettings, max_scene_dip: float | None = None) -> xr.Dataset:
    """Confirmed disturbances per pixel from a growing-season index stack.

    ``index`` has dims (time, y, x), NaN where not clear, only growing-season dates. Returns a
    Dataset over (y, x): ``first_detected`` and ``confirmed_on`` (datetime64, NaT where nothing
    was confirmed), ``probable_since`` (an unconfirmed drop still open at the end), and
    ``magnitude`` (mean index drop of the confirming run, index units).
    """
    times = index["time"].values.astype("datetime64[ns]")
    year = times.astype("datetime64[Y]").astype(int) + 1970
    doy = (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(int) + 1.0
    offset, has_data = scene_offset(index)
    anomaly = index - xr.DataArray(offset, dims="time", coords={"time": index["time"]})
    if max_scene_dip is not None:
        keep = ~scene_dips(offset, has_data, max_scene_dip)
        anomaly = anomaly.where(xr.DataArray(keep, dims="time", coords={"time": index["time"]}))
    if anomaly.chunks is not None:
        anomaly = anomaly.chunk({"time": -1})
    packed = xr.apply_ufunc(
        _breaks_block,
        anomaly,
        input_core_dims=[["time"]],
        output_core_dims=[["output"]],
        kwargs={"doy": doy, "year": year, "settings": settings},
        dask="parallelized",
        output_dtypes=["float32"],
        dask_gufunc_kwargs={"output_sizes": {"output": 4}},
    )

    def to_dates(idx: np.ndarray) -> np.ndarray:
        picked = times[np.clip(idx, 0, None).astype("int64")]
        return np.where(idx >= 0, picked, np.datetime64("NaT", "ns"))

    def as_dates(k: int) -> xr.DataArray:
        return xr.apply_ufunc(to_dates, packed.isel(output=k), dask="parallelized",
                              output_dtypes=["datetime64[ns]"])

    return xr.Dataset(
        {
            "first_detected": as_dates(0),
            "confirmed_on": as_dates(1),
            "magnitude": packed.isel(output=2),
            "probable_since": as_dates(3),
        }
    ).drop_vars("output", errors="ignore")
