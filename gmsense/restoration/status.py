"""Restoration status of a register polygon per year, against a reference ring (pure numpy).

Per year (growing season), ``ratio`` = median NDVI of the polygon's pixels / median NDVI of its
reference ring: the pixels ``ring_inner_m``..``ring_outer_m`` (metres) around it, leaving out
every register polygon and ``ring_inner_m`` around each (as gmsense.recovery's ring leaves out
patches). The ring is in the same composite, so season, drought and atmosphere cancel. A ring
whose median NDVI is below ``min_reference_ndvi`` is no vegetated reference: that year has no
ratio (and no status). The restored share of a polygon is the share of its observed pixels
whose NDVI reaches ``restored_ratio`` x the ring's median.

Status per year, with ``damaged_ratio`` (0.5), ``restored_ratio`` (0.8), ``restored_seasons``
(2), ``trend_years`` (2) and ``min_rise`` (0.05) of :class:`gmsense.config.RestorationSettings`:

- none before the first year the polygon is seen damaged (ratio below ``damaged_ratio``): the
  ground was still intact; a polygon never seen damaged is followed from its first year, and is
  restored from its first year when its first ``restored_seasons`` years are at reference (the
  archive begins after its restoration);
- ``restored``: the ratio has been at least ``restored_ratio`` for ``restored_seasons`` years in a
  row; it stays restored until the ratio falls below ``damaged_ratio`` again, which is
  ``reverted`` (and stays so until a new restoration begins);
- ``under_restoration``: a sustained greening trend, the ratio rising by at least ``min_rise`` in
  each of the last ``trend_years`` years, or by at least ``min_slope`` a year over the last
  ``trend_window`` years (Theil-Sen: slow natural succession), or at reference but not yet for
  ``restored_seasons`` years; a restoration whose trend stops is ``damaged`` again (a stalled
  partial restoration);
- ``damaged`` otherwise.

Events: ``started`` in the first year of the rise that led to ``under_restoration`` (or
``restored``), ``finished`` in the first year a restoration is ``restored``, ``reverted`` in the
year a restored polygon falls back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense._numeric import nan_median
from gmsense.config import RestorationSettings


@dataclass(frozen=True)
class Measures:
    """Per year (arrays of one length): NDVI medians of polygon and reference ring, their ratio,
    the restored share of the polygon's observed pixels (0-1), and the pixel counts."""

    polygon_ndvi: np.ndarray
    reference_ndvi: np.ndarray
    ratio: np.ndarray
    restored_share: np.ndarray
    n_pixels: np.ndarray
    n_reference: np.ndarray


@dataclass(frozen=True)
class Trajectory:
    """Per year: the status (None: before damage, or no ratio) and the events of the year."""

    statuses: list[str | None]
    events: list[str]

    def last_year_of(self, event: str, years: Sequence[int]) -> int | None:
        """The latest year with ``event`` (started, finished, reverted), or None."""
        hits = [y for y, e in zip(years, self.events, strict=True) if event in e.split(",")]
        return hits[-1] if hits else None


def exclusion(polygons: Sequence[BaseGeometry], settings: RestorationSettings) -> BaseGeometry:
    """Every register polygon with ``ring_inner_m`` metres around it: no reference ring reaches into it."""
    return unary_union([g.buffer(settings.ring_inner_m) for g in polygons])


def masks(geometry: BaseGeometry, excluded: BaseGeometry, shape: tuple[int, int], transform: Affine,
          settings: RestorationSettings) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (y, x) masks of the polygon's pixels (centre inside) and of its reference ring, on the
    grid ``shape``/``transform`` (same CRS as the geometries, metres)."""
    polygon = geometry_mask([geometry], out_shape=shape, transform=transform, invert=True)
    ring = geometry.buffer(settings.ring_outer_m).difference(excluded)
    if ring.is_empty:
        return polygon, np.zeros(shape, dtype=bool)
    return polygon, geometry_mask([ring], out_shape=shape, transform=transform, invert=True)


def measure(ndvi: np.ndarray, polygon: np.ndarray, ring: np.ndarray, settings: RestorationSettings) -> Measures:
    """Yearly measures from ``ndvi`` (years, y, x; NaN where not observed) and the two masks."""
    inside = np.asarray(ndvi[:, polygon], dtype=float)  # (years, pixels)
    around = np.asarray(ndvi[:, ring], dtype=float)
    polygon_ndvi = nan_median(inside.T)
    reference = nan_median(around.T)
    vegetated = np.isfinite(reference) & (reference >= settings.min_reference_ndvi)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(vegetated, polygon_ndvi / reference, np.nan)
        n_pixels = np.isfinite(inside).sum(axis=1)
        restored = (inside >= settings.restored_ratio * reference[:, None]).sum(axis=1)
        share = np.where(vegetated & (n_pixels > 0), restored / np.maximum(n_pixels, 1), np.nan)
    return Measures(polygon_ndvi, reference, ratio, share, n_pixels, np.isfinite(around).sum(axis=1))


def _window_slope(r: np.ndarray, k: int, window: int) -> float:
    """Theil-Sen slope (ratio per year) of the ``window`` values of ``r`` ending at ``k``: robust to
    one noisy composite; 0 with fewer than two values."""
    values = r[max(0, k - window + 1):k + 1]
    if values.size < 2:
        return 0.0
    i, j = np.triu_indices(values.size, 1)
    return float(np.median((values[j] - values[i]) / (j - i)))


def classify(ratio: np.ndarray, settings: RestorationSettings) -> Trajectory:
    """Status and events per year from the yearly ``ratio`` (NaN: no ratio that year, skipped; the
    rules compare consecutive years that have one). See the module docstring."""
    ratio = np.asarray(ratio, dtype=float)
    statuses: list[str | None] = [None] * ratio.size
    events = [""] * ratio.size
    valid = np.flatnonzero(np.isfinite(ratio))
    if valid.size == 0:
        return Trajectory(statuses, events)
    r = ratio[valid]
    low = r < settings.damaged_ratio
    high = r >= settings.restored_ratio
    rises = np.concatenate([[False], np.diff(r) >= settings.min_rise])
    begin = int(np.argmax(low)) if low.any() else 0
    run_high = 0
    before_archive = (not low.any() and r.size >= settings.restored_seasons
                      and bool(high[:settings.restored_seasons].all()))
    if before_archive:
        run_high = settings.restored_seasons - 1  # restored before the archive began: no events
    state: str | None = None
    marks: list[list[str]] = [[] for _ in r]
    for k in range(begin, r.size):
        run_high = run_high + 1 if high[k] else 0
        trend = k >= settings.trend_years and bool(rises[k - settings.trend_years + 1:k + 1].all())
        slope = _window_slope(r, k, settings.trend_window) if k - begin + 1 >= settings.trend_window else 0.0
        if state == "restored":
            status = "reverted" if low[k] else "restored"
        elif run_high >= settings.restored_seasons:
            status = "restored"
        elif trend or slope >= settings.min_slope or high[k]:
            status = "under_restoration"
        else:
            status = "reverted" if state == "reverted" else "damaged"
        quiet = before_archive and k == begin
        if status == "reverted" and state == "restored":
            marks[k].append("reverted")
        if status in ("under_restoration", "restored") and state not in ("under_restoration", "restored") \
                and not quiet:
            first = k  # the first year of the run of rises that ends here
            while rises[first] and first - 1 >= begin and rises[first - 1]:
                first -= 1
            marks[first].append("started")
        if status == "restored" and state != "restored" and not quiet:
            marks[k].append("finished")
        statuses[valid[k]] = status
        state = status
    for k, mark in enumerate(marks):
        events[valid[k]] = ",".join(mark)
    return Trajectory(statuses, events)


def annual_ndvi(ndvi: np.ndarray, years: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median NDVI per year: ``ndvi`` (dates, y, x) with each date's (growing-season)
    year -> (sorted unique years, array (years, y, x)). Annual composites pass through unchanged."""
    years = np.asarray(years, dtype=int)
    unique = np.unique(years)
    if unique.size == years.size:
        order = np.argsort(years)
        return years[order], np.asarray(ndvi)[order]
    out = np.stack([nan_median(np.asarray(ndvi)[years == y].reshape((years == y).sum(), -1))
                    .reshape(ndvi.shape[1:]) for y in unique])
    return unique, out
