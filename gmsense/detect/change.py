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

from itertools import pairwise

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from gmsense._parallel import parallel_map
from gmsense.config import DetectSettings, SeasonSettings
from gmsense.cube.ops import season_year
from gmsense.detect._kernels import confirm_runs_kernel, screen_kernel
from gmsense.detect._screen_block import screen_block_kernel
from gmsense.detect.context import SceneContext, index_context, scene_dips
from gmsense.detect.model import design_matrix
from gmsense.detect.model import robust_fit as _robust_fit
from gmsense.detect.phenology import GroupsOnDates

NO_BREAK = -1
#: NDVI units the float32 screen's expected value may differ from the exact float64 detector's
#: before a pixel it passes over could be flagged (the arithmetic differs by ~1e-5).
SCREEN_TOLERANCE = 0.02
_SCREEN_MIN_CONDITIONING = 1e-2  # fits worse conditioned than this go to the exact detector
_BLOCKS_PER_THREAD = 2  # row blocks per thread: even work when some rows hold more breaks
#: Pixels per row block at most: the (time, pixel) working arrays stay at a few MB, reused by the
#: allocator instead of mapped (and page-faulted) afresh, which cost up to half the detection time.
_MAX_BLOCK_PIXELS = 32_768
_DATE_OUTPUTS = (0, 1, 3, 4, 5, 7, 8, 10)  # the outputs that are time indices (see detect_breaks)
N_OUTPUTS = 11  # per pixel: first, confirmed, magnitude, probable; weak first, confirmed, magnitude;
#                later first, confirmed, magnitude, and the next break's first (later_breaks)
_NEVER = np.iinfo("int64").max // 2  # a season that never comes


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
                 values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First confirmed run of drops per pixel.

    Walks the observations in time order; missing ones (NaN ``drop``) neither extend nor break a
    run. A confirmed run is kept only if at least ``min_persistence`` of the pixel's observations
    from its start to the end of that season (``year``) are still down: vegetation that is back
    within weeks was cloud, haze or late leaf-out, not damage. Still down is a drop, or, with
    ``persist_drop`` (index units), any observation more than that below the model: ground that
    stays well below its model but no longer beyond the z-score threshold (a field around a track
    ripening and harvested, its own spread large) has not come back. With ``values`` (T, P; the
    index values ``drop`` was taken from, in the units of the model: ``expected = drop + value``)
    an observation that is not a drop counts only when informative: its expected value lies at
    least half the run's mean drop above the disturbed ground's (the confirming run's mean value),
    so that ground come back would differ from ground still disturbed; a pad in a field is bare like the
    field after its harvest, and the weeks after the harvest say nothing either way (a drop always
    counts). A run whose later observations in its season all say nothing, and some of them because
    the expected value itself came down to the disturbed level (less than a quarter of the run's drop
    above it, ``MODEL_DOWN_SHARE``: an early harvest, seen again only once its model is harvested
    too), is withdrawn; later observations that say nothing only because the gap shrank (a trench
    narrower than its pixel dug late in the season, whose drop shrinks with the forest's in autumn)
    are as good as none. Returns ``first`` and ``confirmed`` time indices (``NO_BREAK`` if none),
    the mean drop of the confirming run, and
    ``probable``: the start of an unconfirmed run still open at the end of the series.
    """
    years = np.asarray(year, dtype="int64") if year is not None else np.empty(0, dtype="int64")
    if drop.dtype != threshold.dtype:
        drop, threshold = np.asarray(drop, dtype="float64"), np.asarray(threshold, dtype="float64")
    values = (np.empty((0, 0), dtype=drop.dtype) if values is None
              else np.ascontiguousarray(values, dtype=drop.dtype))
    out = confirm_runs_kernel(drop, threshold, int(confirm_obs), years, float(min_persistence),
                              np.nan if persist_drop is None else float(persist_drop), values)
    as_index = out[:, [0, 1, 3]].astype("int32")
    return as_index[:, 0], as_index[:, 1], out[:, 2].astype("float32"), as_index[:, 2]


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


def _season_rows(year: np.ndarray, baseline_seasons: int) -> tuple[np.ndarray, ...]:
    """Per season with a baseline, its baseline dates (the ``baseline_seasons`` seasons before it)
    and its own dates, as flat index arrays with offsets (CSR): base rows, base offsets, own
    rows, own offsets."""
    base, this = [], []
    for season in np.unique(year):
        base_t = np.flatnonzero((year < season) & (year >= season - baseline_seasons))
        if base_t.size:
            base.append(base_t)
            this.append(np.flatnonzero(year == season))

    def csr(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype="int64")
        return rows.astype("int64"), np.cumsum([0, *(len(p) for p in parts)]).astype("int64")

    return (*csr(base), *csr(this))


def screen_pixels(anomaly: np.ndarray, doy: np.ndarray, year: np.ndarray, settings: DetectSettings,
                  tolerance: float = SCREEN_TOLERANCE) -> np.ndarray:
    """Pixels the exact detector could flag, bool (P,), from the anomaly (T, P) float32 (NaN where
    missing), cheaply. See :func:`_screen`."""
    return _screen(anomaly, doy, year, settings, tolerance)[0]


def _screen(anomaly: np.ndarray, doy: np.ndarray, year: np.ndarray, settings: DetectSettings,
            tolerance: float = SCREEN_TOLERANCE, weak: bool = False,
            per_pixel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The screen's candidates (P,) and, with ``weak``, the line pass's weak runs (P, 3): first and
    confirmed time indices (``NO_BREAK`` if none) and the run's mean drop, from ``anomaly`` (T, P;
    NaN where missing), float32 with up to one harmonic and float64 with more (a season's few
    observations fit more terms too closely for float32 to follow).

    The same robust seasonal model as :func:`season_drops`, in an orthogonal basis of the design's
    columns (design = basis @ r, with :func:`_fit`'s ridge carried over: 1e-6 |coef|^2 = 1e-6
    |inv(r) @ basis_coef|^2), so the same fitted values come from far better conditioned normal
    equations, sums in the anomaly's dtype and solved in float64. The first fit's residual median
    is only taken for pixels with a residual beyond ``3 x sigma_floor`` (for the others every
    observation is an inlier whatever the median, so the refit is the fit). An observation is a
    *possible drop* when it falls more than ``max(min_drop, z_threshold x sigma_floor)`` less
    ``tolerance`` below the model (the exact threshold is never lower). A pixel is a candidate
    when its possible drops, walked like :func:`confirm_runs` walks drops, make a run of
    ``confirm_obs`` or leave one open at the end; when a fit has no more observations than terms
    or is badly conditioned; or when its count of baseline inliers sits at ``min_baseline_obs``
    (where the screen's and the exact counts might disagree).

    The line pass (``weak``): drops below the screen's model against ``max(line_min_drop, line_z x
    spread)`` (the spread robust where the screen computed it, the residuals' root mean square
    where every residual is small), walked by :func:`confirm_runs` with ``line_confirm_obs`` for
    the pixels with that many weak drops at all. Every pixel is a candidate, with no weak runs,
    when there are too few dates to screen. Compiled: with one harmonic (three terms, the default)
    a block of pixels per date, SIMD lanes over pixels
    (:func:`gmsense.detect._screen_block.screen_block_kernel`), with more one pixel at a time
    (:func:`gmsense.detect._kernels.screen_kernel`; ``per_pixel`` takes it for three terms too, as a
    reference); the same results either way.
    """
    n_time, n_pix = anomaly.shape
    no_weak = np.tile(np.array([NO_BREAK, NO_BREAK, np.nan]), (n_pix, 1))
    design = design_matrix(doy, settings.harmonics)
    n_terms = design.shape[1]
    q, r = np.linalg.qr(design)
    if n_terms == 1 or n_time <= n_terms or np.linalg.cond(r) > 1e12:
        # A level (annual composites: few dates, a median-started fit the screen does not
        # reproduce) or too few dates to screen: every pixel is exact.
        return np.ones(n_pix, dtype=bool), no_weak
    real = np.float32 if n_terms <= 3 else np.float64
    inverse = np.linalg.inv(r / np.sqrt(n_time))
    base_rows, base_ptr, this_rows, this_ptr = _season_rows(year, settings.baseline_seasons)
    if n_terms == 3 and not per_pixel:
        kernel, series = screen_block_kernel, np.ascontiguousarray(anomaly, dtype=real)
    else:
        kernel, series = screen_kernel, np.ascontiguousarray(anomaly.T, dtype=real)
    return kernel(
        series, (q * np.sqrt(n_time)).astype(real), 1e-6 * inverse.T @ inverse,
        np.asarray(year, dtype="int64"), base_rows, base_ptr, this_rows, this_ptr,
        settings.min_baseline_obs, 1,
        float(real(max(settings.min_drop, settings.z_threshold * settings.sigma_floor) - tolerance)),
        float(real(3 * settings.sigma_floor - 1e-3)), float(real(settings.sigma_floor)), _SCREEN_MIN_CONDITIONING,
        settings.confirm_obs, bool(weak), float(settings.line_min_drop), float(settings.line_z),
        settings.line_confirm_obs, float(settings.min_persistence))


def _breaks_block(values: np.ndarray, offset: np.ndarray, keep: np.ndarray, doy: np.ndarray, year: np.ndarray,
                  settings: DetectSettings, screen: bool = True, groups: GroupsOnDates | None = None) -> np.ndarray:
    """(y, x, T) block of the index -> (y, x, N_OUTPUTS) float32: first, confirmed, magnitude, probable;
    the line pass's weak first, confirmed and magnitude (see :func:`_screen`; none without
    ``line_pass``); the latest later break's first, confirmed and magnitude, and the next break's
    first (:func:`later_breaks`; only pixels with a first break have one, and those all went
    through the exact detector, so the screen cannot pass one over).

    The anomaly is the index less the per-date scene ``offset``, NaN on dates not to ``keep``, and
    less each pixel's phenology-group offset with ``groups`` (gmsense.detect.phenology).
    With ``screen`` only the pixels :func:`screen_pixels` passes are run through the exact detector.
    """
    ny, nx, n_time = values.shape
    # (T, P): a view when the block is date-major (rows of an in-memory (time, y, x) index).
    series = np.moveaxis(values, -1, 0).reshape(n_time, ny * nx)
    extra = None  # (T, P) phenology-group offsets
    if groups is not None:
        base = np.subtract(series, offset[:, None], dtype="float64")  # (one pass: exact widening, then the difference)
        base[~keep] = np.nan
        extra = groups.pixel_offsets(base)
        del base
    out = np.empty((ny * nx, N_OUTPUTS), dtype="float32")
    out[:] = (NO_BREAK, NO_BREAK, np.nan, NO_BREAK, NO_BREAK, NO_BREAK, np.nan, NO_BREAK, NO_BREAK, np.nan, NO_BREAK)
    pixels = np.arange(ny * nx)
    if screen or settings.line_pass:
        real = "float32" if settings.harmonics <= 1 else "float64"  # as _screen computes
        anomaly = np.empty((n_time, ny * nx), dtype=real)
        np.subtract(series, offset.astype(real)[:, None], out=anomaly, dtype=real)
        if extra is not None:
            anomaly -= extra.astype(real)
        anomaly[~keep] = np.nan
        candidate, weak = _screen(anomaly, doy, year, settings, weak=settings.line_pass)
        del anomaly
        out[:, 4:7] = weak
        if screen:
            pixels = np.flatnonzero(candidate)
    if pixels.size:
        flat = np.subtract(series[:, pixels], offset[:, None], dtype="float64")
        if extra is not None:
            flat -= extra[:, pixels]
        flat[~keep] = np.nan
        drop, threshold = season_drops(flat, doy, year, settings)
        first, confirmed, magnitude, probable = confirm_runs(
            drop, threshold, settings.confirm_obs, year, settings.min_persistence, settings.persistence_min_drop,
            series[:, pixels] if settings.persistence_informative else None)
        out[pixels, :4] = np.stack([first, confirmed, magnitude, probable], axis=-1)
        out[pixels, 7:] = np.stack(later_breaks(flat, doy, year, first, confirmed, settings), axis=-1)
    return out.reshape(ny, nx, N_OUTPUTS)


def _breaks_threaded(values: np.ndarray, threads: int, **kwargs: object) -> np.ndarray:
    """:func:`_breaks_block` over row blocks of ``values`` (y, x, T) of at most about
    ``_MAX_BLOCK_PIXELS`` pixels, in ``threads`` threads (numpy releases the GIL in its array work)
    with BLAS on one thread each; every pixel is computed alone, so the result is the one block's.
    Blocks keep the working arrays small enough to be reused rather than mapped afresh."""
    ny, nx = values.shape[:2]
    n_blocks = max(threads * _BLOCKS_PER_THREAD if threads > 1 else 1, -(-ny * nx // _MAX_BLOCK_PIXELS))
    n_blocks = min(ny, -(-n_blocks // threads) * threads)  # a multiple of the threads: each gets as many
    if n_blocks <= 1:
        return _breaks_block(values, **kwargs)
    edges = np.linspace(0, ny, n_blocks + 1).round().astype(int)

    def run(rows: tuple[int, int]) -> np.ndarray:
        return _breaks_block(values[rows[0]:rows[1]], **kwargs)

    with threadpool_limits(1, user_api="blas"):
        if threads <= 1:
            return np.concatenate([run(rows) for rows in pairwise(edges)], axis=0)
        return np.concatenate(parallel_map(run, list(pairwise(edges)), threads), axis=0)


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
    for every tile of it, and with ``settings.phenology_groups`` its phenology groups (a context
    made with the settings: gmsense.detect.context.merge_samples); None takes the median from
    ``index`` as a whole. Haze dips are found on the
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
    groups = GroupsOnDates.of(context.groups, times, season) \
        if settings.phenology_groups and context.groups is not None else None
    if index.chunks is not None:
        index = index.chunk({"time": -1})
    packed = xr.apply_ufunc(
        _breaks_threaded,
        index,
        input_core_dims=[["time"]],
        output_core_dims=[["output"]],
        kwargs={"offset": offset, "keep": keep, "doy": doy, "year": year, "settings": settings, "screen": screen,
                "groups": groups, "threads": 1 if index.chunks is not None else threads},
        dask="parallelized",
        output_dtypes=["float32"],
        dask_gufunc_kwargs={"output_sizes": {"output": N_OUTPUTS}},
    )

    # Time index -> date in one lookup: NO_BREAK (-1) picks the NaT appended last.
    table = np.append(times, np.datetime64("NaT", "ns"))

    def to_dates(idx: np.ndarray) -> np.ndarray:
        return table[idx.astype("int64")]

    in_memory = packed.chunks is None
    if in_memory:  # every date output in one lookup, each laid out contiguous
        date_values = dict(zip(_DATE_OUTPUTS, to_dates(np.moveaxis(packed.values[..., list(_DATE_OUTPUTS)], -1, 0)),
                               strict=True))

    def as_dates(k: int) -> xr.DataArray:
        if in_memory:
            return packed.isel(output=k).copy(data=date_values[k])
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
