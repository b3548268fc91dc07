"""Compiled per-pixel loops of the detector (numba, ``nogil``): the screen and the run walk.

Each function works on one pixel's series at a time, so a pixel's result never depends on the
others, and releases the GIL, so row blocks run in parallel in plain threads
(:func:`gmsense.detect.change._breaks_threaded`) without numba's own thread pool (whose default
layer may not be entered from several threads at once, as a scan's threads would).
The formulas are documented where they are used: :func:`gmsense.detect.change.confirm_runs` and
:func:`gmsense.detect.change._screen`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

NO_BREAK = -1
MAX_TERMS = 7  # design columns: 1 + 2 x harmonics, harmonics <= 3
#: Informative-only persistence: an observation that is not a drop tells ground come back from ground
#: still disturbed when its expected value lies at least this share of the run's drop above the latter.
INFORMATIVE_SHARE = 0.5
#: ... and the model itself has come down to the disturbed ground (a harvested field's) when its expected
#: value lies less than this share of the run's drop above it (an early harvest: about 0, within noise;
#: the gap of a partly disturbed pixel shrinking with the season's browning keeps more than this).
MODEL_DOWN_SHARE = 0.25


@njit(nogil=True, cache=True)
def _walk(drop, threshold, confirm_obs, year, min_persistence, persist_drop, value, out):  # pragma: no cover - compiled
    """One pixel's first confirmed run (:func:`gmsense.detect.change.confirm_runs`): ``drop`` and
    ``threshold`` (T,), NaN drop = not seen; ``persist_drop`` NaN for none; ``value`` (T,) the
    pixel's index values for the informative-only persistence, or empty for none; writes first,
    confirmed, magnitude, probable to ``out``."""
    n_time = drop.shape[0]
    first = NO_BREAK
    confirmed = NO_BREAK
    magnitude = np.nan
    run_len = 0
    run_start = NO_BREAK
    run_sum = 0.0
    for t in range(n_time):
        d = drop[t]
        if np.isnan(d):
            continue
        if d > threshold[t]:
            if run_len == 0:
                run_start = t
            run_len += 1
            run_sum += float(d)
            if run_len == confirm_obs and first == NO_BREAK:
                first = run_start
                confirmed = t
                magnitude = run_sum / confirm_obs
        else:
            run_len = 0
            run_sum = 0.0
    probable = run_start if first == NO_BREAK and run_len > 0 else NO_BREAK
    if first != NO_BREAK and min_persistence > 0 and year.shape[0] == n_time:
        informative = value.shape[0] == n_time
        level = 0.0  # the disturbed ground's index: the confirming run's mean value
        if informative:
            total = 0.0
            count = 0
            for t in range(first, confirmed + 1):
                if not np.isnan(drop[t]):
                    total += float(value[t])
                    count += 1
            level = total / max(count, 1)
        n_seen = 0
        n_drops = 0
        n_after = 0  # informative observations after the confirming run
        n_model_down = 0  # of them, with the expected value come down to the disturbed level
        for t in range(first, n_time):
            if year[t] != year[first] or np.isnan(drop[t]):
                continue
            down = drop[t] > threshold[t] or (not np.isnan(persist_drop) and drop[t] > persist_drop)
            if informative:
                above = float(drop[t]) + float(value[t]) - level  # the expected value over the disturbed level
                n_model_down += t > confirmed and above < MODEL_DOWN_SHARE * magnitude
                # Not down, with the expected value less than half the run's drop above the disturbed
                # level: ground come back would look much like ground still disturbed (a harvested
                # field around a pad), so it does not count; a drop always does.
                if not down and above < INFORMATIVE_SHARE * magnitude:
                    continue
            n_seen += 1
            n_after += t > confirmed
            if down:
                n_drops += 1
        # Seen again only where it could not tell, the model itself come down to the disturbed level
        # (a field harvested two weeks before its calendar: its model harvests too): nothing confirms
        # it. Where the model is still a quarter to a half of the drop above that level (a trench
        # narrower than its pixel in a forest browning in autumn), it is as good as not seen again.
        if n_drops / max(n_seen, 1) < min_persistence or (informative and n_after == 0 and n_model_down > 0):
            first = NO_BREAK
            confirmed = NO_BREAK
            magnitude = np.nan
    out[0] = first
    out[1] = confirmed
    out[2] = np.float32(magnitude)
    out[3] = probable


@njit(nogil=True, cache=True)
def confirm_runs_kernel(drop, threshold, confirm_obs, year, min_persistence,  # pragma: no cover - compiled
                        persist_drop, values):
    """(T, P) drops and thresholds -> (P, 4) float64: first, confirmed, magnitude, probable.
    ``values`` (T, P) index values for the informative-only persistence, or (0, 0) for none."""
    n_time, n_pix = drop.shape
    out = np.empty((n_pix, 4))
    series = np.empty(n_time, dtype=drop.dtype)
    limits = np.empty(n_time, dtype=threshold.dtype)
    use_values = values.shape[0] == n_time and values.shape[1] == n_pix
    pixel_values = np.empty(n_time if use_values else 0, dtype=drop.dtype)
    for p in range(n_pix):
        for t in range(n_time):
            series[t] = drop[t, p]
            limits[t] = threshold[t, p]
        if use_values:
            for t in range(n_time):
                pixel_values[t] = values[t, p]
        _walk(series, limits, confirm_obs, year, min_persistence, persist_drop, pixel_values, out[p])
    return out


@njit(nogil=True, cache=True)
def _solve(normal, rhs, coef):  # pragma: no cover - compiled
    """Gaussian elimination of a small symmetric positive semi-definite system (k <= 7), in
    place; ``coef`` gets the solution. Returns the smallest pivot relative to its diagonal entry
    (near 0 when a column is almost a combination of the others)."""
    k = rhs.shape[0]
    diagonal = np.empty(k)
    for i in range(k):
        diagonal[i] = normal[i, i]
    conditioning = np.inf
    for i in range(k):
        for j in range(i + 1, k):
            factor = normal[j, i] / normal[i, i]
            for m in range(i + 1, k):
                normal[j, m] -= factor * normal[i, m]
            rhs[j] -= factor * rhs[i]
        conditioning = min(conditioning, normal[i, i] / diagonal[i])
    for i in range(k - 1, -1, -1):
        acc = rhs[i]
        for j in range(i + 1, k):
            acc -= normal[i, j] * coef[j]
        coef[i] = acc / normal[i, i]
    return conditioning


@njit(nogil=True, cache=True)
def _fit_pixel(basis, ridge, series, use, rows, coef, normal, rhs, sums):  # pragma: no cover - compiled
    """Weighted least squares of ``series`` on ``basis`` over the ``rows`` where ``use``; sums (in
    ``sums``, k * k + k of the series' dtype) as the numpy screen summed, solved in float64.
    Returns (count, conditioning)."""
    k = basis.shape[1]
    sums[:] = 0
    count = 0
    for r in rows:
        if not use[r]:
            continue
        count += 1
        v = series[r]
        for i in range(k):
            bi = basis[r, i]
            sums[k * k + i] += bi * v
            for j in range(k):
                sums[i * k + j] += bi * basis[r, j]
    for i in range(k):
        rhs[i] = sums[k * k + i]
        for j in range(k):
            normal[i, j] = sums[i * k + j] + ridge[i, j]
    conditioning = _solve(normal, rhs, coef)
    return count, conditioning


@njit(nogil=True, cache=True)
def _median_inplace(values, n):  # pragma: no cover - compiled
    """The median of ``values[:n]`` (n >= 1; the mean of the two middle values for even n), by
    selection (Hoare's quickselect, O(n)) instead of a sort; reorders ``values[:n]``."""
    upper = n // 2
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if upper <= j:
            hi = j
        elif upper >= i:
            lo = i
        else:
            break
    middle = values[upper]
    if n % 2:
        return middle
    below = values[0]
    for i in range(1, upper):
        below = max(below, values[i])
    return (below + middle) * 0.5


@njit(nogil=True, cache=True)
def _fit3(basis, ridge, series, use, rows, coef, normal, rhs):  # pragma: no cover - compiled
    """:func:`_fit_pixel` for three terms (one harmonic, the default), its sums in registers."""
    s00 = s01 = s02 = s11 = s12 = s22 = r0 = r1 = r2 = 0.0
    count = 0
    for r in rows:
        if not use[r]:
            continue
        count += 1
        a = float(basis[r, 0])
        b = float(basis[r, 1])
        c = float(basis[r, 2])
        v = float(series[r])
        s00 += a * a
        s01 += a * b
        s02 += a * c
        s11 += b * b
        s12 += b * c
        s22 += c * c
        r0 += a * v
        r1 += b * v
        r2 += c * v
    normal[0, 0], normal[0, 1], normal[0, 2] = s00 + ridge[0, 0], s01 + ridge[0, 1], s02 + ridge[0, 2]
    normal[1, 0], normal[1, 1], normal[1, 2] = s01 + ridge[1, 0], s11 + ridge[1, 1], s12 + ridge[1, 2]
    normal[2, 0], normal[2, 1], normal[2, 2] = s02 + ridge[2, 0], s12 + ridge[2, 1], s22 + ridge[2, 2]
    rhs[0], rhs[1], rhs[2] = r0, r1, r2
    return count, _solve(normal, rhs, coef)


@njit(nogil=True, cache=True)
def _fitted(basis, r, coef):  # pragma: no cover - compiled
    """The model's value on date ``r``."""
    value = 0.0
    for i in range(basis.shape[1]):
        value += float(basis[r, i]) * coef[i]
    return value


@njit(nogil=True, cache=True)
def screen_kernel(anomaly, basis, ridge, year, base_rows, base_ptr, this_rows, this_ptr,  # pragma: no cover
                  min_baseline_obs, baseline_obs_band, floor_threshold, surely_inlier, sigma_floor,
                  min_conditioning, confirm_obs, weak, line_min_drop, line_z, line_confirm_obs,
                  min_persistence):
    """The screen (:func:`gmsense.detect.change._screen`) on ``anomaly`` (P, T), one pixel at a time.

    ``base_rows[base_ptr[s]:base_ptr[s+1]]`` are season s's baseline dates, ``this_rows[...]`` its
    own. Returns candidate (P,) bool and the line pass's weak runs (P, 3) float64: first,
    confirmed, magnitude (NO_BREAK / NaN where none; all none without ``weak``)."""
    n_pix, n_time = anomaly.shape
    k = basis.shape[1]
    real = anomaly.dtype
    candidate = np.zeros(n_pix, dtype=np.bool_)
    weak_out = np.empty((n_pix, 3))
    walk = np.empty(4)
    no_values = np.empty(0, dtype=real)  # weak runs: every observation counts towards persistence
    observed = np.empty(n_time, dtype=np.bool_)
    inlier = np.empty(n_time, dtype=np.bool_)
    filled = np.empty(n_time, dtype=real)
    seen = np.zeros(n_time, dtype=np.bool_)
    maybe = np.zeros(n_time, dtype=np.bool_)
    drops = np.empty(n_time, dtype=real)
    weak_threshold = np.empty(n_time, dtype=real)
    spread = np.empty(n_time, dtype=real)
    coef = np.empty(k)
    normal = np.empty((k, k))
    rhs = np.empty(k)
    sums = np.empty(k * k + k, dtype=real)
    ordered = np.empty(n_time, dtype=real)
    n_seasons = base_ptr.shape[0] - 1
    for p in range(n_pix):
        series = anomaly[p]
        for t in range(n_time):
            observed[t] = not np.isnan(series[t])
            filled[t] = series[t] if observed[t] else 0
            seen[t] = False
            maybe[t] = False
            drops[t] = np.nan
            weak_threshold[t] = np.inf
        is_candidate = False
        for s in range(n_seasons):
            base = base_rows[base_ptr[s]:base_ptr[s + 1]]
            this = this_rows[this_ptr[s]:this_ptr[s + 1]]
            if base.shape[0] == 0:
                continue
            count, conditioning = (_fit3(basis, ridge, filled, observed, base, coef, normal, rhs) if k == 3 else
                                   _fit_pixel(basis, ridge, filled, observed, base, coef, normal, rhs, sums))
            unstable = count <= k or conditioning < min_conditioning
            if count >= min_baseline_obs and unstable:
                is_candidate = True
            dirty = False
            squares = 0.0
            n_spread = 0
            for r in base:
                if not observed[r]:
                    continue
                resid = series[r] - _fitted(basis, r, coef)
                squares += float(resid) * float(resid)
                spread[n_spread] = abs(resid)
                n_spread += 1
                if abs(resid) > surely_inlier:
                    dirty = True
            noise = np.sqrt(squares / max(count, 1))
            if dirty:
                ordered[:n_spread] = spread[:n_spread]
                mid = _median_inplace(ordered, n_spread)
                sigma = max(1.4826 * mid, sigma_floor)
                for t in range(n_time):
                    inlier[t] = False
                n_spread = 0
                for r in base:
                    if observed[r]:
                        inlier[r] = spread[n_spread] <= 3 * sigma
                        n_spread += 1
                count, conditioning = (_fit3(basis, ridge, filled, inlier, base, coef, normal, rhs) if k == 3 else
                                       _fit_pixel(basis, ridge, filled, inlier, base, coef, normal, rhs, sums))
                unstable = count <= k or conditioning < min_conditioning
                noise = sigma
                if abs(count - min_baseline_obs) <= baseline_obs_band:
                    is_candidate = True
            enough = count >= min_baseline_obs
            if enough and unstable:
                is_candidate = True
            limit = max(line_min_drop, line_z * max(noise, sigma_floor))
            for r in this:
                weak_threshold[r] = limit
                if not (observed[r] and enough):
                    continue
                seen[r] = True
                below = _fitted(basis, r, coef) - series[r]
                drops[r] = below
                maybe[r] = below > floor_threshold
        run = 0
        for t in range(n_time):
            if maybe[t]:
                run += 1
                if run >= confirm_obs:
                    is_candidate = True
            elif seen[t]:
                run = 0
        candidate[p] = is_candidate or run > 0
        weak_out[p, 0] = NO_BREAK
        weak_out[p, 1] = NO_BREAK
        weak_out[p, 2] = np.nan
        if weak:
            n_weak = 0
            for t in range(n_time):
                if drops[t] > weak_threshold[t]:
                    n_weak += 1
            if n_weak >= line_confirm_obs:
                _walk(drops, weak_threshold, line_confirm_obs, year, min_persistence, np.nan, no_values, walk)
                weak_out[p, 0] = walk[0]
                weak_out[p, 1] = walk[1]
                weak_out[p, 2] = walk[2]
    return candidate, weak_out
