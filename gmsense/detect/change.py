"""Per-pixel disturbance detection against each pixel's own same-season history.

For every growing season ``Y`` a small harmonic model of the index (default: NDVI) is fitted per
pixel on the clear observations of the ``baseline_seasons`` seasons before ``Y`` (robustly: one
refit without outliers); its residual spread (1.4826 x MAD) scales the drop of each observation in
``Y`` below the model into a robust z-score. An observation is a *drop* when it is more than
``z_threshold`` spreads and ``min_drop`` below the model. A disturbance is *confirmed* when
``confirm_obs`` consecutive clear observations are drops (across season ends too); the first of
them is ``first_detected``, the last ``confirmed_on``.

Every disturbance, not only the first (:func:`later_breaks`): once a pixel's break is confirmed,
its baseline for later seasons is re-established on its new state (from ``rebreak_after_seasons``
after the break's season, or from the season it is back at its pre-disturbance model), and a
confirmed run against that baseline is a later break, reported (the latest one) apart from the
first.

Before fitting, the per-date median of the scene is removed, which cancels atmospheric gain,
drought years and the common phenology; it is taken on a fixed lattice of pixels over the
licence's whole monitoring area (:mod:`gmsense.detect.context`), so the result is the same
however the data is chunked and however the licence is cut into tiles. Dates whose scene median
dips alone below their neighbours (haze) are dropped, and a confirmed drop that does not persist through the rest of
its season (cloud, late leaf-out) is withdrawn.

Screening first (:func:`screen_pixels`): the robust fit above costs two weighted medians per
pixel and season, so every pixel is first screened by the same model computed cheaply (float32
in a well-conditioned basis, the median only for pixels with a large residual, the drop
threshold at its floor ``max(min_drop, z_threshold x sigma_floor)`` less a tolerance). Only
pixels with a run of possible drops long enough to confirm (or open at the end of the series),
and those whose fit float32 cannot stand in for, go through the exact float64 detector (1-3 %
of a scene); the others cannot be flagged by it and get no break. The result is the one the
exact detector gives on every pixel (``detect_breaks(..., screen=False)``).

Works on numpy- and dask-backed DataArrays (dask chunks may split y and x, not time).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from gmsense._numeric import masked_median
from gmsense.config import DetectSettings, SeasonSettings
from gmsense.cube.ops import season_year
from gmsense.detect.context import SceneContext, index_context

NO_BREAK = -1
_DAYS_PER_YEAR = 365.25
#: NDVI units the float32 screen's expected value may differ from the exact float64 detector's
#: before a pixel it passes over could be flagged (the arithmetic differs by ~1e-5).
SCREEN_TOLERANCE = 0.02
_SCREEN_MIN_CONDITIONING = 1e-2  # fits worse conditioned than this go to the exact detector
_BLOCKS_PER_THREAD = 2  # row blocks per thread: even work when some rows hold more breaks
#: Pixels per row block at most: the (time, pixel) working arrays stay at a few MB, reused by the
#: allocator instead of mapped (and page-faulted) afresh, which cost up to half the detection time.
_MAX_BLOCK_PIXELS = 32_768
N_OUTPUTS = 11  # per pixel: first, confirmed, magnitude, probable; weak first, confirmed, magnitude;
#                later first, confirmed, magnitude, and the next break's first (later_breaks)
_NEVER = np.iinfo("int64").max // 2  # a season that never comes


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


def _spread(residuals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """1.4826 x median absolute residual per pixel over the weighted observations; (T, P) -> (P,)."""
    out = 1.4826 * masked_median(np.abs(np.nan_to_num(residuals)), weights & np.isfinite(residuals))
    return np.where(np.isnan(out), np.inf, out)


def _robust_fit(xb: np.ndarray, yb: np.ndarray, wb: np.ndarray,
                settings: DetectSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The robust own-history model: a fit of the observed baseline (``wb``) values ``yb`` (T, P) on
    the design rows ``xb`` (T, k), refitted without the residuals beyond 3 spreads. Returns its
    coefficients (P, k), residual spread (P,; at least ``sigma_floor``, index units) and whether
    enough inliers remain (P,; ``min_baseline_obs``)."""
    coef = _fit(xb, yb, wb)
    resid = yb - (xb @ coef.T)
    sigma = np.maximum(_spread(resid, wb), settings.sigma_floor)
    inliers = wb & (np.abs(np.nan_to_num(resid)) <= 3 * sigma)
    coef = _fit(xb, yb, inliers)
    resid = yb - (xb @ coef.T)
    sigma = np.maximum(_spread(resid, inliers), settings.sigma_floor)
    return coef, sigma, inliers.sum(axis=0) >= settings.min_baseline_obs


def season_drops(values: np.ndarray, doy: np.ndarray, year: np.ndarray,
                 settings: DetectSettings, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Drop below the own-history model and the drop threshold, per observation.

    ``values`` (T, P) index values, NaN where not clear. ``start`` (P,), optional: the earliest
    season each pixel's baseline may use (a re-established baseline, :func:`later_breaks`); seasons
    up to it then have no drops. Returns ``drop`` (T, P; NaN where the observation is missing or
    the pixel has too little history) and ``threshold`` (T, P), index units.
    """
    n_time, n_pix = values.shape
    design = design_matrix(doy, settings.harmonics)
    drop = np.full((n_time, n_pix), np.nan)
    threshold = np.full((n_time, n_pix), np.nan)
    observed = np.isfinite(values)
    for season in np.unique(year):
        base_t = np.flatnonzero((year < season) & (year >= season - settings.baseline_seasons))
        this_t = np.flatnonzero(year == season)
        if base_t.size == 0 or (start is not None and not (start < season).any()):
            continue
        xb, yb, wb = design[base_t], values[base_t], observed[base_t]
        if start is not None:
            wb = wb & (year[base_t][:, None] >= start[None, :])
        coef, sigma, enough = _robust_fit(xb, yb, wb, settings)
        expected = design[this_t] @ coef.T
        season_drop = expected - values[this_t]
        drop[this_t] = np.where(enough, season_drop, np.nan)
        threshold[this_t] = np.maximum(settings.min_drop, settings.z_threshold * sigma)[None, :]
    return drop, threshold


def confirm_runs(drop: np.ndarray, threshold: np.ndarray, confirm_obs: int, year: np.ndarray | None = None,
                 min_persistence: float = 0.0, persist_drop: float | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First confirmed run of drops per pixel.

    Walks the observations in time order; missing ones (NaN ``drop``) neither extend nor break a
    run. A confirmed run is kept only if at least ``min_persistence`` of the pixel's observations
    from its start to the end of that season (``year``) are still down: vegetation that is back
    within weeks was cloud, haze or late leaf-out, not damage. Still down is a drop, or, with
    ``persist_drop`` (index units), any observation more than that below the model: ground that
    stays well below its model but no longer beyond the z-score threshold (a field around a track
    ripening and harvested, its own spread large) has not come back. Returns ``first`` and
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
        still = drops_all if persist_drop is None else drops_all | (seen_all & (drop0 > persist_drop))
        drops = window & still
        share = drops.sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
        transient = broken & (share < min_persistence)
        first[transient] = NO_BREAK
        confirmed[transient] = NO_BREAK
        magnitude[transient] = np.nan
    return first, confirmed, magnitude, probable


def _recovered_season(values: np.ndarray, doy: np.ndarray, year: np.ndarray, season: np.ndarray,
                      start: np.ndarray, settings: DetectSettings) -> np.ndarray:
    """Per pixel, the first season after ``season`` (P,; a break's) in which the pixel is back at the
    model that break was found against (the robust model of :func:`season_drops` on the baseline
    seasons before ``season``, none before ``start``): at least ``confirm_obs`` clear observations
    and fewer than half of them drops. ``values`` (T, P) index values, NaN where not clear.
    Returns season years (P,; :data:`_NEVER` where the pixel never recovered)."""
    design = design_matrix(doy, settings.harmonics)
    observed = np.isfinite(values)
    recovered = np.full(values.shape[1], _NEVER, dtype="int64")
    pairs, group = np.unique(np.stack([season, start]), axis=1, return_inverse=True)
    group = group.reshape(-1)
    for k, (model_season, model_start) in enumerate(pairs.T):
        pix = np.flatnonzero(group == k)
        base_t = np.flatnonzero((year < model_season) & (year >= max(model_season - settings.baseline_seasons,
                                                                        model_start)))
        later_t = np.flatnonzero(year > model_season)
        if base_t.size == 0 or later_t.size == 0:
            continue
        coef, sigma, enough = _robust_fit(design[base_t], values[base_t][:, pix], observed[base_t][:, pix], settings)
        later = values[later_t][:, pix]
        with np.errstate(invalid="ignore"):
            is_drop = design[later_t] @ coef.T - later > np.maximum(settings.min_drop, settings.z_threshold * sigma)
        seen = observed[later_t][:, pix]
        for later_season in np.unique(year[later_t]):
            rows = year[later_t] == later_season
            n_seen, n_drops = seen[rows].sum(axis=0), is_drop[rows].sum(axis=0)
            back = enough & (n_seen >= settings.confirm_obs) & (2 * n_drops < n_seen) & (recovered[pix] == _NEVER)
            recovered[pix[back]] = later_season
    return recovered


def later_breaks(values: np.ndarray, doy: np.ndarray, year: np.ndarray, first: np.ndarray, confirmed: np.ndarray,
                 settings: DetectSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Disturbances after a pixel's first: the same pixel breaking again.

    After a break confirmed in season ``B`` the old baseline is useless (the drop persists: the
    pixel only looks "still down"), so the pixel's baseline is re-established on its new state:
    from season ``B + rebreak_after_seasons`` on, or from the first later season in which it is
    back at the model the break was found against (:func:`_recovered_season`), whichever comes
    first. A run of drops below that baseline confirmed like the first (:func:`confirm_runs`,
    after the earlier break's confirmation) is a later break; the search repeats from it until a
    pixel breaks no more. ``values`` (T, P) index values (the scene-offset anomaly), NaN where not
    clear; ``first``, ``confirmed`` (P,) time indices of the first break (:data:`NO_BREAK` if none).

    Returns time indices of the *latest* later break's first drop and confirmation (:data:`NO_BREAK`
    if none), its mean drop (index units, against the re-established baseline), and the first
    drop of the break right after the first one (the date from which the first disturbance's
    ground was disturbed again; equal to the latest's for a pixel that broke twice). Per pixel,
    whatever the other pixels: pixels without a first break have none later.
    """
    n_time, n_pix = values.shape
    latest_first = np.full(n_pix, NO_BREAK, dtype="int32")
    latest_confirmed = np.full(n_pix, NO_BREAK, dtype="int32")
    latest_magnitude = np.full(n_pix, np.nan, dtype="float32")
    next_first = np.full(n_pix, NO_BREAK, dtype="int32")
    active = np.flatnonzero(first != NO_BREAK)
    prev_first, prev_confirmed = first[active], confirmed[active]
    model_start = np.full(active.size, -_NEVER, dtype="int64")  # the previous break's model: no earlier limit
    rounds = 0
    while active.size:
        sub = values[:, active]
        season = year[prev_first].astype("int64")
        start = np.minimum(season + settings.rebreak_after_seasons,
                           _recovered_season(sub, doy, year, season, model_start, settings))
        drop, threshold = season_drops(sub, doy, year, settings, start=start)
        drop[np.arange(n_time)[:, None] <= prev_confirmed[None, :]] = np.nan
        f, c, m, _ = confirm_runs(drop, threshold, settings.confirm_obs, year, settings.min_persistence,
                                  settings.persistence_min_drop)
        found = f != NO_BREAK
        active, prev_first, prev_confirmed, model_start = active[found], f[found], c[found], start[found]
        latest_first[active], latest_confirmed[active], latest_magnitude[active] = prev_first, prev_confirmed, m[found]
        if rounds == 0:
            next_first[active] = prev_first
        rounds += 1
    return latest_first, latest_confirmed, latest_magnitude, next_first


def _positions(mask: np.ndarray) -> slice | np.ndarray:
    """Indices where ``mask`` holds, as a slice when they are contiguous (indexing then copies nothing)."""
    idx = np.flatnonzero(mask)
    if idx.size and idx[-1] - idx[0] + 1 == idx.size:
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _solve_batched(normal: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``normal[:, :, p] @ x = rhs[:, p]`` for every p; normal (k, k, P) symmetric positive
    semi-definite, rhs (k, P) -> x (k, P) and the smallest pivot relative to its diagonal entry
    (P,), a conditioning measure: near 0 when a column is (almost) a combination of the others.
    Gaussian elimination vectorised over p (k <= 7), far cheaper than a batched LAPACK call on
    many tiny systems. Overwrites ``normal`` and ``rhs``."""
    k = rhs.shape[0]
    a, b = normal, rhs
    diagonal = np.diagonal(a).T.copy()  # (k, P)
    for i in range(k):
        for j in range(i + 1, k):
            factor = a[j, i] / a[i, i]
            a[j, i + 1:] -= factor * a[i, i + 1:]
            b[j] -= factor * b[i]
    x = np.empty_like(b)
    for i in range(k - 1, -1, -1):
        acc = b[i].copy()
        for j in range(i + 1, k):
            acc -= a[i, j] * x[j]
        x[i] = acc / a[i, i]
    return x, (np.diagonal(a).T / diagonal).min(axis=0)


def _fit_screen(basis: np.ndarray, ridge: np.ndarray, filled: np.ndarray,
                weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_fit` for the screen: ``basis`` (T, k) spanning the design's columns, its columns
    orthogonal over all dates, and ``ridge`` (k, k) :func:`_fit`'s regularisation in that basis;
    ``filled`` (T, P) values, 0 where the ``weights`` (0/1) are 0, all of one float dtype ->
    coefficients (k, P) of that dtype, the weight count per pixel and the conditioning of each
    fit (see :func:`_solve_batched`). Sums in that dtype, solved in float64."""
    n_time, k = basis.shape
    products = (basis[:, :, None] * basis[:, None, :]).reshape(n_time, k * k).T
    normal = (products @ weights).astype("float64").reshape(k, k, -1)
    count = weights.sum(axis=0).astype("int64")
    normal += ridge[:, :, None]
    coef, conditioning = _solve_batched(normal, (basis.T @ filled).astype("float64"))
    return coef.astype(basis.dtype), count, conditioning


def _unstable(count: np.ndarray, conditioning: np.ndarray, n_terms: int) -> np.ndarray:
    """Fits the float32 screen cannot stand in for: no more observations than terms, or badly
    conditioned (bunched observations)."""
    return (count <= n_terms) | (conditioning < _SCREEN_MIN_CONDITIONING)


def screen_pixels(anomaly: np.ndarray, doy: np.ndarray, year: np.ndarray, settings: DetectSettings,
                  tolerance: float = SCREEN_TOLERANCE) -> np.ndarray:
    """Pixels the exact detector could flag, bool (P,), from the anomaly (T, P) float32 (NaN where
    missing), cheaply. See :func:`_screen`."""
    return _screen(anomaly, doy, year, settings, tolerance)[0]


def _screen(anomaly: np.ndarray, doy: np.ndarray, year: np.ndarray, settings: DetectSettings,
            tolerance: float = SCREEN_TOLERANCE, weak: bool = False) -> tuple[np.ndarray, np.ndarray | None,
                                                                             np.ndarray | None]:
    """The screen's candidates (P,) and, with ``weak``, the line pass's drops below the screen's
    model (T, P; NaN where missing or the pixel has too little history) and weak-drop thresholds
    (T, P): ``max(line_min_drop, line_z x spread)``, the spread robust where the screen computed
    it and the residuals' root mean square where every residual is small; (None, None) when there
    are too few dates to screen.

    The same robust seasonal model as :func:`season_drops`, in float32 (float64 with more than one
    harmonic) and an orthogonal basis; the first fit's residual median is only taken for pixels
    with a residual beyond ``3 x sigma_floor`` (for the others every observation is an inlier
    whatever the median, so the refit is the fit). An observation is a *possible drop* when it
    falls more than ``max(min_drop, z_threshold x sigma_floor)`` less ``tolerance`` below the
    model (the exact threshold is never lower). A pixel is a candidate when its possible drops,
    walked like :func:`confirm_runs` walks drops, make a run of ``confirm_obs`` or leave one open
    at the end; when a fit has no more observations than terms or is badly conditioned; or when
    its count of baseline inliers sits at ``min_baseline_obs`` (where the screen's and the exact
    counts might disagree).
    """
    n_time, n_pix = anomaly.shape
    # The same model in an orthogonal basis of the design's columns (design = basis @ r), with
    # _fit's ridge carried over (1e-6 |coef|^2 = 1e-6 |inv(r) @ basis_coef|^2): the same fitted
    # values from far better conditioned normal equations. Float32 for up to one harmonic; more
    # terms fit the few observations of a season too closely for float32 to follow.
    design = design_matrix(doy, settings.harmonics)
    n_terms = design.shape[1]
    q, r = np.linalg.qr(design)
    if n_time <= n_terms or np.linalg.cond(r) > 1e12:
        return np.ones(n_pix, dtype=bool), None, None  # too few dates to screen: every pixel is exact
    real = np.float32 if n_terms <= 3 else np.float64
    anomaly = anomaly.astype(real, copy=False)
    basis = (q * np.sqrt(n_time)).astype(real)
    inverse = np.linalg.inv(r / np.sqrt(n_time))
    ridge = 1e-6 * inverse.T @ inverse
    observed = ~np.isnan(anomaly)
    filled = np.where(observed, anomaly, real(0))
    weights = observed.astype(real)
    floor_threshold = real(max(settings.min_drop, settings.z_threshold * settings.sigma_floor) - tolerance)
    surely_inlier = real(3 * settings.sigma_floor - 1e-3)
    sigma_floor = real(settings.sigma_floor)
    seen = np.zeros((n_time, n_pix), dtype=bool)
    maybe = np.zeros((n_time, n_pix), dtype=bool)
    candidate = np.zeros(n_pix, dtype=bool)
    drops = np.full((n_time, n_pix), np.nan, dtype=real) if weak else None
    weak_threshold = np.full((n_time, n_pix), np.inf, dtype=real) if weak else None
    for season in np.unique(year):
        base_mask = (year < season) & (year >= season - settings.baseline_seasons)
        if not base_mask.any():
            continue
        base, this = _positions(base_mask), _positions(year == season)
        xb = basis[base]
        coef, count, conditioning = _fit_screen(xb, ridge, filled[base], weights[base])
        # A nearly singular fit (as few observations as terms, or bunched ones) is not reproduced
        # in float32, nor then are the inliers of the refit.
        candidate |= (count >= settings.min_baseline_obs) & _unstable(count, conditioning, n_terms)
        resid = anomaly[base] - xb @ coef
        with np.errstate(invalid="ignore"):
            dirty = np.flatnonzero((np.abs(resid) > surely_inlier).any(axis=0))
        if weak:  # the residuals' root mean square; missing observations count as 0 from here on
            np.nan_to_num(resid, copy=False)
            noise = np.sqrt(np.einsum("tp,tp->p", resid, resid) / np.maximum(count, 1)).astype(real)
        if dirty.size:
            w = observed[base][:, dirty]
            spread = np.abs(resid[:, dirty])
            sigma = np.maximum(real(1.4826) * masked_median(spread, w), sigma_floor)
            with np.errstate(invalid="ignore"):
                inliers = w & (spread <= 3 * sigma)
            coef[:, dirty], count[dirty], conditioning[dirty] = _fit_screen(
                xb, ridge, filled[base][:, dirty] * inliers, inliers.astype(real))
            if weak:
                noise[dirty] = sigma
            candidate[dirty[np.abs(count[dirty] - settings.min_baseline_obs) <= 1]] = True
        enough = count >= settings.min_baseline_obs
        candidate |= enough & _unstable(count, conditioning, n_terms)
        seen[this] = observed[this] & enough
        below = basis[this] @ coef - anomaly[this]
        with np.errstate(invalid="ignore"):
            maybe[this] = seen[this] & (below > floor_threshold)
        if weak:
            drops[this] = np.where(seen[this], below, real(np.nan))
            weak_threshold[this] = np.maximum(settings.line_min_drop,
                                              settings.line_z * np.maximum(noise, sigma_floor))[None, :]
    active = np.flatnonzero(maybe.any(axis=0))
    maybe, seen = maybe[:, active], seen[:, active]
    run = np.zeros(active.size, dtype="int32")
    confirmable = np.zeros(active.size, dtype=bool)
    for t in range(n_time):
        run = np.where(maybe[t], run + 1, np.where(seen[t], 0, run))
        confirmable |= run >= settings.confirm_obs
    candidate[active[confirmable | (run > 0)]] = True
    return candidate, drops, weak_threshold


def weak_runs(drops: np.ndarray, weak_threshold: np.ndarray, year: np.ndarray,
              settings: DetectSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The line pass's per-pixel test: :func:`confirm_runs` with the weak thresholds and
    ``line_confirm_obs`` observations, over the pixels with that many weak drops at all.
    Returns first and confirmed time indices (``NO_BREAK`` if none) and the run's mean drop."""
    n_pix = drops.shape[1]
    first = np.full(n_pix, NO_BREAK, dtype="int32")
    confirmed = np.full(n_pix, NO_BREAK, dtype="int32")
    magnitude = np.full(n_pix, np.nan, dtype="float32")
    with np.errstate(invalid="ignore"):
        active = np.flatnonzero((drops > weak_threshold).sum(axis=0) >= settings.line_confirm_obs)
    if active.size:
        f, c, m, _ = confirm_runs(drops[:, active], weak_threshold[:, active], settings.line_confirm_obs, year,
                                  settings.min_persistence)
        first[active], confirmed[active], magnitude[active] = f, c, m
    return first, confirmed, magnitude


def _breaks_block(values: np.ndarray, offset: np.ndarray, keep: np.ndarray, doy: np.ndarray, year: np.ndarray,
                  settings: DetectSettings, screen: bool = True) -> np.ndarray:
    """(y, x, T) block of the index -> (y, x, N_OUTPUTS) float32: first, confirmed, magnitude, probable;
    the line pass's weak first, confirmed and magnitude (:func:`weak_runs`; none without ``line_pass``);
    the latest later break's first, confirmed and magnitude, and the next break's first
    (:func:`later_breaks`; only pixels with a first break have one, and those all went through the
    exact detector, so the screen cannot pass one over).

    The anomaly is the index less the per-date scene ``offset``, NaN on dates not to ``keep``.
    With ``screen`` only the pixels :func:`screen_pixels` passes are run through the exact detector.
    """
    ny, nx, n_time = values.shape
    stack = np.moveaxis(values, -1, 0).reshape(n_time, ny * nx)  # a view when the block is time-major
    out = np.empty((ny * nx, N_OUTPUTS), dtype="float32")
    out[:] = (NO_BREAK, NO_BREAK, np.nan, NO_BREAK, NO_BREAK, NO_BREAK, np.nan, NO_BREAK, NO_BREAK, np.nan, NO_BREAK)
    pixels = np.arange(ny * nx)
    if screen or settings.line_pass:
        real = "float32" if settings.harmonics <= 1 else "float64"  # as screen_pixels computes
        anomaly = np.subtract(stack, offset.astype(real)[:, None], dtype=real)
        anomaly[~keep] = np.nan
        candidate, drops, weak_threshold = _screen(anomaly, doy, year, settings, weak=settings.line_pass)
        del anomaly
        if drops is not None:
            out[:, 4:7] = np.stack(weak_runs(drops, weak_threshold, year, settings), axis=-1)
            del drops, weak_threshold
        if screen:
            pixels = np.flatnonzero(candidate)
    if pixels.size:
        flat = stack[:, pixels].astype("float64") - offset[:, None]
        flat[~keep] = np.nan
        drop, threshold = season_drops(flat, doy, year, settings)
        first, confirmed, magnitude, probable = confirm_runs(drop, threshold, settings.confirm_obs, year,
                                                             settings.min_persistence, settings.persistence_min_drop)
        out[pixels, :4] = np.stack([first, confirmed, magnitude, probable], axis=-1)
        out[pixels, 7:] = np.stack(later_breaks(flat, doy, year, first, confirmed, settings), axis=-1)
    return out.reshape(ny, nx, N_OUTPUTS)


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


def _breaks_threaded(values: np.ndarray, threads: int, **kwargs: object) -> np.ndarray:
    """:func:`_breaks_block` over row blocks of ``values`` (y, x, T) of at most about
    ``_MAX_BLOCK_PIXELS`` pixels, in ``threads`` threads (numpy releases the GIL in its array work)
    with BLAS on one thread each; every pixel is computed alone, so the result is the one block's.
    Blocks keep the working arrays small enough to be reused rather than mapped afresh."""
    ny, nx = values.shape[:2]
    n_blocks = min(ny, max(threads * _BLOCKS_PER_THREAD if threads > 1 else 1, -(-ny * nx // _MAX_BLOCK_PIXELS)))
    if n_blocks <= 1:
        return _breaks_block(values, **kwargs)
    edges = np.linspace(0, ny, n_blocks + 1).round().astype(int)

    def run(rows: tuple[int, int]) -> np.ndarray:
        return _breaks_block(values[rows[0]:rows[1]], **kwargs)

    with threadpool_limits(1, user_api="blas"):
        if threads <= 1:
            return np.concatenate([run(rows) for rows in pairwise(edges)], axis=0)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gmsense-detect") as pool:
            return np.concatenate(list(pool.map(run, pairwise(edges))), axis=0)


def detect_breaks(index: xr.DataArray, settings: DetectSettings, max_scene_dip: float | None = None,
                  screen: bool = True, context: SceneContext | None = None, threads: int = 1,
                  season: SeasonSettings | None = None) -> xr.Dataset:
    """Confirmed disturbances per pixel from a growing-season index stack.

    ``index`` has dims (time, y, x), NaN where not clear, only growing-season dates. Returns a
    Dataset over (y, x): ``first_detected`` and ``confirmed_on`` (datetime64, NaT where nothing
    was confirmed), ``probable_since`` (an unconfirmed drop still open at the end), and
    ``magnitude`` (mean index drop of the confirming run, index units); and the line pass's
    per-pixel weak runs, ``weak_first``, ``weak_confirmed``, ``weak_magnitude`` (all NaT/NaN
    without ``settings.line_pass``; :mod:`gmsense.detect.lines` keeps those that draw a new
    line). The weak runs come from the screen's float32 model, either way. Later disturbances of
    the same pixels (:func:`later_breaks`): ``rebreak_first_detected``, ``rebreak_confirmed_on`` and
    ``rebreak_magnitude`` of the latest break after the first (NaT/NaN when none), and
    ``disturbed_again``, the first drop of the break right after the first (the date from which the
    first disturbance's ground is another's). ``screen=False`` runs the exact detector on every
    pixel (same result, slower; for tests and checks).

    ``context``: the licence's per-date scene median (:mod:`gmsense.detect.context`), the same
    for every tile of it; None takes it from ``index`` as a whole. Haze dips are found on the
    context's dates, so a tile drops the dates the whole licence drops.

    ``threads``: for an ``index`` in memory, work on row blocks in this many threads (the same
    result); a dask-backed ``index`` is computed by dask's scheduler, chunk by chunk.
    ``season``: the growing-season window, whose seasons name the years of the baseline and of
    the breaks (gmsense.cube.ops.season_year: across New Year in the south); None: calendar years.
    """
    times = index["time"].values.astype("datetime64[ns]")
    year = season_year(times, season)
    doy = (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(int) + 1.0
    context = context if context is not None else index_context(index)
    offset, _ = context.at(times)
    keep = np.ones(offset.shape, dtype=bool)
    if max_scene_dip is not None:
        keep = ~np.isin(times, context.times[scene_dips(context.offset, context.has_data, max_scene_dip)])
    if index.chunks is not None:
        index = index.chunk({"time": -1})
    packed = xr.apply_ufunc(
        _breaks_threaded,
        index,
        input_core_dims=[["time"]],
        output_core_dims=[["output"]],
        kwargs={"offset": offset, "keep": keep, "doy": doy, "year": year, "settings": settings, "screen": screen,
                "threads": 1 if index.chunks is not None else threads},
        dask="parallelized",
        output_dtypes=["float32"],
        dask_gufunc_kwargs={"output_sizes": {"output": N_OUTPUTS}},
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
            "weak_first": as_dates(4),
            "weak_confirmed": as_dates(5),
            "weak_magnitude": packed.isel(output=6),
            "rebreak_first_detected": as_dates(7),
            "rebreak_confirmed_on": as_dates(8),
            "rebreak_magnitude": packed.isel(output=9),
            "disturbed_again": as_dates(10),
        }
    ).drop_vars("output", errors="ignore")
