"""Restoration status of a register polygon per year, against a reference (pure numpy).

Per year (growing season) and pixel, the **relative cover** = (NDVI - soil) / (reference - soil), the
dimidiate pixel model of fractional vegetation cover (Gutman & Ignatov 1998, Int. J. Remote Sens.
19(8)) with the reference as the full-cover end member: NDVI mixes linearly with cover, so the
polygon's ``ratio``, the mean of its pixels' covers, is its area-weighted cover (half the polygon
green reads as half, not as the median pixel), and subtracting bare ground's NDVI makes "vegetation
at 80 % of the reference" a cover of 80 %, not an NDVI ratio of 80 % (which bare ground's own NDVI
reaches at a lower cover). The reference of each pixel, the soil NDVI and the pixels' own ground
before damage are :mod:`gmsense.restoration.reference`'s: the ring ``ring_inner_m``..``ring_outer_m``
(metres) around the polygon, leaving out every register polygon and ``ring_inner_m`` around each
(as gmsense.recovery's ring leaves out patches), near each pixel and of its land cover, in the same
composite, so season, drought and atmosphere cancel; a land-cover reference in the region for a pit
without a vegetated ring.

**Years without a clear observation.** A pixel not observed in a year (cloud, an SLC-off stripe, no
reference) takes its cover from the observed years around it: linearly between the two nearest, and
carried from the last one after it (never silently bare). So a year without a clear composite
over a polygon keeps its status from its neighbours, and the two consecutive seasons at reference
count the unobserved year as its neighbours read; ``observed_share`` says per year how much of the
polygon was seen (0: the status is carried). No status before a polygon is first observed. Years
after the polygon's last observation only hold what was last seen (:func:`hold_after_last_observation`):
an extrapolated ratio neither completes a restoration nor marks an event. A composite identical to the
year before it (:func:`repeated_years`: a compositing tool that filled a year with its predecessor) is
no new observation.

**Restored area** (:func:`restored_shares`): restoration works are done on parts of a site (a
terraced and planted section, the rest left bare), so the polygon is read as its homogeneous parts
(:func:`segments`: two parts when its pixels fall in two clearly different groups over the latest
years, else one), and each part follows the polygon's rule on its median pixel ratio (of its pixels
away from the other part: those on the line between them are mixed, :func:`part_cores`; a polygon of one
part on its own ratio, the mean, so a polygon restored as a whole has its whole area restored): from the year
the polygon is first seen damaged, a part is restored once its ratio has been at least
``restored_ratio`` for ``restored_seasons`` seasons in a row, and stays restored until it falls below
``damaged_ratio``. The restored share of a year is the area share of the parts restored then, so a
polygon half grown back counts half of its area as restored, whatever its status as a whole; a part
is judged by its median, not pixel by pixel, so single pixels' noise around the threshold neither
adds nor removes area.

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
from gmsense.restoration import reference as ref


@dataclass(frozen=True)
class Measures:
    """Per year (arrays of one length): the polygon's mean NDVI (observed pixels) and the median of its
    pixels' reference NDVI, the ``ratio`` (relative cover, module docstring; unobserved years filled),
    the polygon's and the reference's observed pixel counts, ``observed_share`` (the share of the
    polygon's pixels observed with a reference), and ``pixel_ratio`` (years, pixels): each pixel's
    relative cover, unobserved years filled (NaN before a pixel is first observed). Per polygon:
    ``reference_source`` (:data:`gmsense.restoration.reference.SOURCES`, ``+pre_damage`` when its
    pixels' own ground calibrates it; None: no reference), ``soil_ndvi`` and ``vegetated_ring``."""

    polygon_ndvi: np.ndarray
    reference_ndvi: np.ndarray
    ratio: np.ndarray
    n_pixels: np.ndarray
    n_reference: np.ndarray
    pixel_ratio: np.ndarray
    observed_share: np.ndarray
    reference_source: str | None
    soil_ndvi: float | None
    vegetated_ring: bool


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


def outside(excluded: BaseGeometry, shape: tuple[int, int], transform: Affine) -> np.ndarray:
    """Boolean (y, x) mask of the pixels outside ``excluded`` (every register polygon and its margin)."""
    if excluded.is_empty:
        return np.ones(shape, dtype=bool)
    return geometry_mask([excluded], out_shape=shape, transform=transform)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """``values`` (years, pixels) with each pixel's NaN years filled from its observed years: linearly
    between the nearest before and after, the last observed value carried after it; NaN before the first."""
    values = np.asarray(values, dtype=float)
    years = values.shape[0]
    index = np.broadcast_to(np.arange(years)[:, None], values.shape)
    seen = np.isfinite(values)
    before = np.maximum.accumulate(np.where(seen, index, -1), axis=0)
    after = np.minimum.accumulate(np.where(seen, index, years)[::-1], axis=0)[::-1]
    low = np.take_along_axis(values, np.clip(before, 0, years - 1), axis=0)
    high = np.take_along_axis(values, np.clip(after, 0, years - 1), axis=0)
    weight = (index - before) / np.maximum(after - before, 1)
    between = np.where(after < years, low + weight * (high - low), low)
    return np.where(seen, values, np.where(before >= 0, between, np.nan))


def repeated_years(yearly: np.ndarray) -> np.ndarray:
    """Per year of ``yearly`` (years, ...): True where the image repeats the year before it exactly
    (every value equal, NaN where it is NaN, something observed): the same composite written twice, as
    a compositing tool does when it fills a year without imagery with its predecessor."""
    yearly = np.asarray(yearly, dtype=float)
    out = np.zeros(yearly.shape[0], dtype=bool)
    for k in range(1, yearly.shape[0]):
        out[k] = bool(np.isfinite(yearly[k]).any()) and np.array_equal(yearly[k], yearly[k - 1], equal_nan=True)
    return out


def hold_after_last_observation(trajectory: Trajectory, shares: np.ndarray, observed_share: np.ndarray
                                ) -> tuple[Trajectory, np.ndarray]:
    """``trajectory`` and restored ``shares`` with every year after the last one that observed any of the
    polygon (``observed_share`` > 0) holding that year's status and share, without events: a ratio
    carried past the last observation is no evidence of a change, so it cannot finish a restoration."""
    seen = np.flatnonzero(np.asarray(observed_share, dtype=float) > 0)
    if seen.size == 0 or seen[-1] == len(trajectory.statuses) - 1:
        return trajectory, shares
    last = int(seen[-1])
    tail = len(trajectory.statuses) - last - 1
    statuses = trajectory.statuses[:last + 1] + [trajectory.statuses[last]] * tail
    events = trajectory.events[:last + 1] + [""] * tail
    held = np.asarray(shares, dtype=float).copy()
    held[last + 1:] = held[last]
    return Trajectory(statuses, events), held


def _row_mean(values: np.ndarray) -> np.ndarray:
    seen = np.isfinite(values)
    total = np.where(seen, values, 0.0).sum(axis=1)
    return np.where(seen.any(axis=1), total / np.maximum(seen.sum(axis=1), 1), np.nan)


def measure(ndvi: np.ndarray, polygon: np.ndarray, ring: np.ndarray, settings: RestorationSettings,
            transform: Affine, *, land_cover: np.ndarray | None = None, allowed: np.ndarray | None = None,
            region: np.ndarray | None = None) -> Measures:
    """Yearly measures from ``ndvi`` (years, y, x; NaN where not observed) and the masks of the polygon
    and its ring on the grid ``transform``. ``land_cover``: the map's classes on the grid; ``allowed``:
    the pixels outside every register polygon and its margin (:func:`outside`); ``region``: the pixels
    a pit without a vegetated ring takes its land-cover reference from (without it, such a pit has no
    reference: every ratio NaN, ``vegetated_ring`` False, so the caller can read a wider window)."""
    ndvi = np.asarray(ndvi, dtype=float)
    inside = ndvi[:, polygon]  # (years, pixels)
    seen = np.isfinite(inside)
    polygon_ndvi = _row_mean(inside)
    years, pixels = inside.shape
    classes = ring_classes = None
    if land_cover is not None:
        classes = ref.pixel_classes(land_cover, polygon, allowed if allowed is not None else ~polygon,
                                    settings.land_cover_vegetated)
        ring_classes = land_cover[ring]
    vegetated_ring = ref.ring_is_vegetated(ndvi, ring, settings)
    if vegetated_ring:
        reference = ref.ring_reference(ndvi, polygon, ring, transform, settings, classes, ring_classes)
    elif region is not None:
        reference = ref.region_reference(ndvi, polygon, region, settings, classes, land_cover)
    else:
        empty = np.full(years, np.nan)
        return Measures(polygon_ndvi, empty, empty, seen.sum(axis=1), np.isfinite(ndvi[:, ring]).sum(axis=1),
                        np.full((years, pixels), np.nan), np.zeros(years), None, None, False)
    soil = ref.soil_line(inside, reference.ndvi, settings)
    with np.errstate(invalid="ignore", divide="ignore"):
        cover = (inside - soil) / (reference.ndvi - soil)
    source = reference.source
    level = ref.pre_damage_level(cover, settings)
    if level is not None:
        cover = cover / level[None, :]
        source = f"{source}+{ref.PRE_DAMAGE}"
    observed = np.isfinite(cover)
    pixel_ratio = fill_gaps(cover)
    share = observed.mean(axis=1) if pixels else np.zeros(years)
    return Measures(polygon_ndvi, nan_median(reference.ndvi.T), _row_mean(pixel_ratio), seen.sum(axis=1),
                    reference.n_pixels, pixel_ratio, share, source, float(soil), vegetated_ring)


def restored_shares(pixel_ratio: np.ndarray, statuses: Sequence[str | None],
                    settings: RestorationSettings, polygon: np.ndarray | None = None) -> np.ndarray:
    """The restored share of the polygon's area per year (NaN in years without a status), from
    ``pixel_ratio`` (years, pixels) of :class:`Measures` and the polygon's ``statuses`` of
    :func:`classify`: the polygon's parts (:func:`segments`, over the years from its first status)
    each follow the polygon's rule on their median ratio (module docstring); a polygon restored from
    its first year (restored before the archive began) has its parts at reference then restored at once.
    With ``polygon``, the (y, x) mask the pixels come from (row-major), a part's median leaves out its
    pixels touching the other part (:func:`part_cores`): a 30 m pixel across the line between a planted
    and a bare part is half of each, and along a long line they pull the planted part's median down."""
    pixel_ratio = np.asarray(pixel_ratio, dtype=float)
    years, pixels = pixel_ratio.shape
    out = np.full(years, np.nan)
    known = [k for k, s in enumerate(statuses) if s is not None]
    if not known or pixels == 0:
        return out
    begin = known[0]
    labels = segments(pixel_ratio[begin:], settings)
    parts = [labels == k for k in np.unique(labels)]
    weights = np.array([m.sum() for m in parts], dtype=float)
    if len(parts) == 1:  # the polygon is its one part: its ratio, so its area follows its status
        ratio = _row_mean(pixel_ratio)[:, None]
    else:
        cores = part_cores(labels, polygon) if polygon is not None else parts
        ratio = np.stack([nan_median(pixel_ratio[:, m].T) for m in cores], axis=1)  # (years, parts)
    run = np.full(len(parts), settings.restored_seasons - 1 if statuses[begin] == "restored" else 0)
    restored = np.zeros(len(parts), dtype=bool)
    seen = np.zeros(len(parts), dtype=bool)
    for k in range(begin, years):
        r = ratio[k]
        observed = np.isfinite(r)
        seen |= observed
        run = np.where(observed, np.where(r >= settings.restored_ratio, run + 1, 0), run)
        kept = restored & (r >= settings.damaged_ratio)
        restored = np.where(observed, kept | (run >= settings.restored_seasons), restored)
        if statuses[k] is not None and seen.any():
            out[k] = float(weights[seen & restored].sum() / weights[seen].sum())
    return out


def part_cores(labels: np.ndarray, polygon: np.ndarray, min_pixels: int = 3) -> list[np.ndarray]:
    """Per part of ``labels`` (one per pixel of the (y, x) mask ``polygon``, row-major), the pixels
    whose eight neighbours hold no pixel of another part; the whole part when fewer than
    ``min_pixels`` are left (a thin strip)."""
    from scipy import ndimage

    grid = np.full(polygon.shape, -1)
    grid[polygon] = labels
    out = []
    for label in np.unique(labels):
        part = labels == label
        others = (grid >= 0) & (grid != label)
        core = part & ~ndimage.binary_dilation(others, structure=np.ones((3, 3), dtype=bool))[polygon]
        out.append(core if core.sum() >= min_pixels else part)
    return out


def segments(pixel_ratio: np.ndarray, settings: RestorationSettings) -> np.ndarray:
    """Labels (0 or 1 per pixel) splitting a polygon into two homogeneous parts when its pixels fall
    in two clearly different groups over the last ``segment_years`` years with a ratio (each pixel's
    median there, split at the Otsu threshold; the groups' medians at least ``segment_gap`` apart, the
    smaller at least ``segment_min_share`` of the pixels): a part restored and a part left bare. Else
    one part. Read again at every run, so a part planted lately splits off once it has grown."""
    window, min_gap, min_share = settings.segment_years, settings.segment_gap, settings.segment_min_share
    pixel_ratio = np.asarray(pixel_ratio, dtype=float)
    labels = np.zeros(pixel_ratio.shape[1], dtype=int)
    rows = np.flatnonzero(np.isfinite(pixel_ratio).any(axis=1))[-window:]
    if rows.size == 0 or pixel_ratio.shape[1] < 4:
        return labels
    feature = nan_median(pixel_ratio[rows])  # per pixel, over the years
    ok = np.isfinite(feature)
    values = np.sort(feature[ok])
    if values.size < 4:
        return labels
    # Otsu: the split of the sorted values with the largest between-group variance
    n = values.size
    k = np.arange(1, n)
    below = np.cumsum(values)[:-1]
    gap = (values.sum() - below) / (n - k) - below / k
    best = int(np.argmax(k * (n - k) * gap**2))
    cut = (values[best] + values[best + 1]) / 2
    high = ok & (feature > cut)
    low = ok & ~high
    share = min(high.sum(), low.sum()) / ok.sum()
    if share < min_share or np.median(feature[high]) - np.median(feature[low]) < min_gap:
        return labels
    labels[high] = 1
    return labels


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
