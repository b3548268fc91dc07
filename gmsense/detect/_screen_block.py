"""The detector's screen across pixels (numba, ``nogil``): a block of pixels per date, so the inner
loops run over pixels and compile to SIMD lanes.

:func:`screen_block_kernel` computes what :func:`gmsense.detect._kernels.screen_kernel` computes
pixel by pixel, for the one-harmonic model (three terms, the default), with every pixel's
arithmetic in the same order: the sums of a fit are taken date by date in the same order, an
unobserved date adds zero instead of being skipped (the same sum), the 3 x 3 system is solved by
the same elimination written out, so the candidates and the weak runs are bit-identical
(tests/test_screen_block.py). The rarer per-pixel steps (the residual median of a pixel with a large
residual and its refit, the walk of a pixel with weak drops) call the per-pixel kernel's own
functions on that pixel's series.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gmsense.detect._kernels import NO_BREAK, _fit3, _median_inplace, _walk

#: Pixels per lane block: the (time, pixel) working arrays of a block stay within the core's L2 cache.
LANES = 256


@njit(nogil=True, cache=True)
def _fit3_lanes(basis, ridge, anomaly, use, rows, p0, width, count, coef, cond):  # pragma: no cover - compiled
    """:func:`gmsense.detect._kernels._fit3` for pixels ``p0 .. p0 + width`` of ``anomaly`` (T, P)
    at once; ``use`` (T, width) the dates each pixel's fit takes. Writes ``count``, ``coef`` (3,
    width) and the conditioning ``cond``."""
    s00 = np.zeros(width)
    s01 = np.zeros(width)
    s02 = np.zeros(width)
    s11 = np.zeros(width)
    s12 = np.zeros(width)
    s22 = np.zeros(width)
    r0 = np.zeros(width)
    r1 = np.zeros(width)
    r2 = np.zeros(width)
    for j in range(width):
        count[j] = 0
    for r in rows:
        a = float(basis[r, 0])
        b = float(basis[r, 1])
        c = float(basis[r, 2])
        aa, ab, ac, bb, bc, cc = a * a, a * b, a * c, b * b, b * c, c * c
        for j in range(width):
            # Branch-free (SIMD): a date a pixel's fit does not take adds zero (+0.0 leaves a sum as it is).
            # The products in the types _fit3 takes them (float() keeps a float32 a float32 in numba).
            w = use[r, j]
            v = float(anomaly[r, p0 + j])
            count[j] += 1 if w else 0
            s00[j] += aa if w else 0.0
            s01[j] += ab if w else 0.0
            s02[j] += ac if w else 0.0
            s11[j] += bb if w else 0.0
            s12[j] += bc if w else 0.0
            s22[j] += cc if w else 0.0
            r0[j] += a * v if w else 0.0
            r1[j] += b * v if w else 0.0
            r2[j] += c * v if w else 0.0
    for j in range(width):
        # _solve's elimination for k = 3, written out (the same operations in the same order).
        n00, n01, n02 = s00[j] + ridge[0, 0], s01[j] + ridge[0, 1], s02[j] + ridge[0, 2]
        n10, n11, n12 = s01[j] + ridge[1, 0], s11[j] + ridge[1, 1], s12[j] + ridge[1, 2]
        n20, n21, n22 = s02[j] + ridge[2, 0], s12[j] + ridge[2, 1], s22[j] + ridge[2, 2]
        h0, h1, h2 = r0[j], r1[j], r2[j]
        d0, d1, d2 = n00, n11, n22
        conditioning = np.inf
        factor = n10 / n00
        n11 -= factor * n01
        n12 -= factor * n02
        h1 -= factor * h0
        factor = n20 / n00
        n21 -= factor * n01
        n22 -= factor * n02
        h2 -= factor * h0
        conditioning = min(conditioning, n00 / d0)
        factor = n21 / n11
        n22 -= factor * n12
        h2 -= factor * h1
        conditioning = min(conditioning, n11 / d1)
        conditioning = min(conditioning, n22 / d2)
        c2 = h2 / n22
        c1 = (h1 - n12 * c2) / n11
        acc = h0 - n01 * c1
        acc -= n02 * c2
        coef[0, j] = acc / n00
        coef[1, j] = c1
        coef[2, j] = c2
        cond[j] = conditioning


@njit(nogil=True, cache=True)
def _fitted_lane(basis, r, coef, j):  # pragma: no cover - compiled
    """The model of pixel ``j`` on date ``r`` (:func:`gmsense.detect._kernels._fitted`'s sum)."""
    value = 0.0
    value += float(basis[r, 0]) * coef[0, j]
    value += float(basis[r, 1]) * coef[1, j]
    value += float(basis[r, 2]) * coef[2, j]
    return value


@njit(nogil=True, cache=True)
def screen_block_kernel(anomaly, basis, ridge, year, base_rows, base_ptr, this_rows, this_ptr,  # pragma: no cover
                        min_baseline_obs, baseline_obs_band, floor_threshold, surely_inlier, sigma_floor,
                        min_conditioning, confirm_obs, weak, line_min_drop, line_z, line_confirm_obs,
                        min_persistence):
    """:func:`gmsense.detect._kernels.screen_kernel` (same arguments, same results) on ``anomaly``
    (T, P), C-contiguous, three basis terms, :data:`LANES` pixels at a time."""
    n_time, n_pix = anomaly.shape
    real = anomaly.dtype
    candidate = np.zeros(n_pix, dtype=np.bool_)
    weak_out = np.empty((n_pix, 3))
    n_seasons = base_ptr.shape[0] - 1
    max_base = 0
    for s in range(n_seasons):
        max_base = max(max_base, base_ptr[s + 1] - base_ptr[s])
    observed = np.empty((n_time, LANES), dtype=np.bool_)
    seen = np.empty((n_time, LANES), dtype=np.bool_)
    maybe = np.empty((n_time, LANES), dtype=np.bool_)
    drops = np.empty((n_time, LANES), dtype=real)
    weak_threshold = np.empty((n_time, LANES), dtype=real)
    spread = np.empty((max(max_base, 1), LANES), dtype=real)
    count = np.empty(LANES, dtype=np.int64)
    coef = np.empty((3, LANES))
    cond = np.empty(LANES)
    squares = np.empty(LANES)
    dirty = np.empty(LANES, dtype=np.bool_)
    is_candidate = np.empty(LANES, dtype=np.bool_)
    unstable = np.empty(LANES, dtype=np.bool_)
    noise = np.empty(LANES)
    enough = np.empty(LANES, dtype=np.bool_)
    limit = np.empty(LANES)
    run = np.empty(LANES, dtype=np.int64)
    # One pixel's series, for its rare per-pixel steps.
    filled = np.empty(n_time, dtype=real)
    use = np.empty(n_time, dtype=np.bool_)
    ordered = np.empty(n_time, dtype=real)
    one_coef = np.empty(3)
    normal = np.empty((3, 3))
    rhs = np.empty(3)
    series_drops = np.empty(n_time, dtype=real)
    series_limits = np.empty(n_time, dtype=real)
    walk = np.empty(4)
    no_values = np.empty(0, dtype=real)  # weak runs: every observation counts towards persistence
    for p0 in range(0, n_pix, LANES):
        width = min(LANES, n_pix - p0)
        for t in range(n_time):
            for j in range(width):
                observed[t, j] = not np.isnan(anomaly[t, p0 + j])
                seen[t, j] = False
                maybe[t, j] = False
                drops[t, j] = np.nan
                weak_threshold[t, j] = np.inf
        for j in range(width):
            is_candidate[j] = False
        for s in range(n_seasons):
            base = base_rows[base_ptr[s]:base_ptr[s + 1]]
            this = this_rows[this_ptr[s]:this_ptr[s + 1]]
            if base.shape[0] == 0:
                continue
            _fit3_lanes(basis, ridge, anomaly, observed, base, p0, width, count, coef, cond)
            for j in range(width):
                unstable[j] = count[j] <= 3 or cond[j] < min_conditioning
                if count[j] >= min_baseline_obs and unstable[j]:
                    is_candidate[j] = True
                squares[j] = 0.0
                dirty[j] = False
            for i in range(base.shape[0]):
                r = base[i]
                for j in range(width):
                    # Branch-free: an unobserved date's residual (NaN) is stored but never read, adds zero.
                    seen_here = observed[r, j]
                    resid = anomaly[r, p0 + j] - _fitted_lane(basis, r, coef, j)
                    squares[j] += float(resid) * float(resid) if seen_here else 0.0
                    spread[i, j] = abs(resid)
                    dirty[j] = dirty[j] or (seen_here and abs(resid) > surely_inlier)
            for j in range(width):
                noise[j] = np.sqrt(squares[j] / max(count[j], 1))
                if not dirty[j]:
                    continue
                n_spread = 0
                for i in range(base.shape[0]):
                    if observed[base[i], j]:
                        ordered[n_spread] = spread[i, j]
                        n_spread += 1
                mid = _median_inplace(ordered, n_spread)
                sigma = max(1.4826 * mid, sigma_floor)
                for t in range(n_time):
                    use[t] = False
                    filled[t] = anomaly[t, p0 + j] if observed[t, j] else 0
                for i in range(base.shape[0]):
                    r = base[i]
                    if observed[r, j]:
                        use[r] = spread[i, j] <= 3 * sigma
                n_fit, conditioning = _fit3(basis, ridge, filled, use, base, one_coef, normal, rhs)
                count[j] = n_fit
                for m in range(3):
                    coef[m, j] = one_coef[m]
                unstable[j] = n_fit <= 3 or conditioning < min_conditioning
                noise[j] = sigma
                if abs(n_fit - min_baseline_obs) <= baseline_obs_band:
                    is_candidate[j] = True
            for j in range(width):
                enough[j] = count[j] >= min_baseline_obs
                if enough[j] and unstable[j]:
                    is_candidate[j] = True
                limit[j] = max(line_min_drop, line_z * max(noise[j], sigma_floor))
            for r in this:  # (each date is in one season's own dates: written once)
                for j in range(width):
                    weak_threshold[r, j] = limit[j]
                    use_here = observed[r, j] and enough[j]
                    below = _fitted_lane(basis, r, coef, j) - anomaly[r, p0 + j]
                    seen[r, j] = use_here
                    drops[r, j] = below if use_here else np.nan
                    maybe[r, j] = use_here and below > floor_threshold
        for j in range(width):
            run[j] = 0
        for t in range(n_time):
            for j in range(width):
                if maybe[t, j]:
                    run[j] += 1
                    if run[j] >= confirm_obs:
                        is_candidate[j] = True
                elif seen[t, j]:
                    run[j] = 0
        for j in range(width):
            p = p0 + j
            candidate[p] = is_candidate[j] or run[j] > 0
            weak_out[p, 0] = NO_BREAK
            weak_out[p, 1] = NO_BREAK
            weak_out[p, 2] = np.nan
            if not weak:
                continue
            n_weak = 0
            for t in range(n_time):
                if drops[t, j] > weak_threshold[t, j]:
                    n_weak += 1
            if n_weak >= line_confirm_obs:
                for t in range(n_time):
                    series_drops[t] = drops[t, j]
                    series_limits[t] = weak_threshold[t, j]
                _walk(series_drops, series_limits, line_confirm_obs, year, min_persistence, np.nan, no_values, walk)
                weak_out[p, 0] = walk[0]
                weak_out[p, 1] = walk[1]
                weak_out[p, 2] = walk[2]
    return candidate, weak_out
