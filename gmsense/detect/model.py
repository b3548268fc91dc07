"""The own-history model of a pixel's growing-season index: harmonic design, weighted least squares
per pixel, and the robust fit (refitted without outliers) with its residual spread, index units.
Used by the detector (:mod:`gmsense.detect.change`) and the phenology groups' spread test
(:mod:`gmsense.detect.phenology`)."""

from __future__ import annotations

import numpy as np

from gmsense._numeric import masked_median
from gmsense.config import DetectSettings

_DAYS_PER_YEAR = 365.25


def design_matrix(doy: np.ndarray, harmonics: int) -> np.ndarray:
    """Columns ``1, cos(2 pi k doy / 365.25), sin(...)`` for k = 1..harmonics; shape (T, 1 + 2h)."""
    cols = [np.ones_like(doy, dtype="float64")]
    for k in range(1, harmonics + 1):
        angle = 2 * np.pi * k * doy / _DAYS_PER_YEAR
        cols += [np.cos(angle), np.sin(angle)]
    return np.stack(cols, axis=1)


def fit_weighted(design: np.ndarray, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
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


def robust_spread(residuals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """1.4826 x median absolute residual per pixel over the weighted observations; (T, P) -> (P,)."""
    out = 1.4826 * masked_median(np.abs(np.nan_to_num(residuals)), weights & np.isfinite(residuals))
    return np.where(np.isnan(out), np.inf, out)


def robust_fit(xb: np.ndarray, yb: np.ndarray, wb: np.ndarray,
                settings: DetectSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The robust own-history model: a fit of the observed baseline (``wb``) values ``yb`` (T, P) on
    the design rows ``xb`` (T, k), refitted without the residuals beyond 3 spreads. Returns its
    coefficients (P, k), residual spread (P,; at least ``sigma_floor``, index units) and whether
    enough inliers remain (P,; ``min_baseline_obs``). A level (one design column, annual
    composites) starts from the median rather than the mean: with five years of baseline one
    disturbed year moves the mean far enough to hide itself and the next."""
    coef = masked_median(np.nan_to_num(yb), wb)[:, None] if xb.shape[1] == 1 else fit_weighted(xb, yb, wb)
    resid = yb - (xb @ coef.T)
    sigma = np.maximum(robust_spread(resid, wb), settings.sigma_floor)
    inliers = wb & (np.abs(np.nan_to_num(resid)) <= 3 * sigma)
    coef = fit_weighted(xb, yb, inliers)
    resid = yb - (xb @ coef.T)
    sigma = np.maximum(robust_spread(resid, inliers), settings.sigma_floor)
    return coef, sigma, inliers.sum(axis=0) >= settings.min_baseline_obs
