"""What each pixel of a register polygon is compared with (pure numpy): its reference NDVI per year,
the polygon's own bare-ground NDVI, and its pixels' own ground before damage.

**The reference ring, near each pixel.** A polygon's pixels are compared with the land around them
in the same composite (season, drought and atmosphere cancel): each pixel with the median NDVI of
the ``reference_pixels`` ring pixels nearest to it that were observed that year, so a pit lying
across two kinds of land (a forest edge through a grassland pit) has each side compared with its
own side of the ring, not with one median of both. With a land-cover map, each pixel takes the
ring pixels of its own land cover (the map's class where it is vegetated; where the map shows the
pit itself, barren or built-up, the class of the nearest vegetated land outside every register
polygon), as long as the ring holds ``min_class_pixels`` of them; else the nearest ring pixels of
any land cover. A reference below ``min_reference_ndvi`` is none (the pixel is unobserved that year).

**The land-cover fallback.** A pit whose ring is not vegetated (in fewer than half of the years
the ring was observed, its median NDVI is at least ``min_reference_ndvi``: a pit among spoil
heaps, roads and other pits) has no ring reference; it takes its land cover in the region
instead: the median NDVI, per year, of the pixels of each pixel's land cover within
``land_cover_radius_m`` (outside every register polygon and ``ring_inner_m`` around it); without a
map, of the region's vegetated pixels (NDVI at least ``min_reference_ndvi``) that year.

**The soil line.** The relative cover is (NDVI - soil) / (reference - soil); bare ground differs by
substrate (tailings darker than waste rock), and a polygon's edge pixels mix in a little of the land
around it, which acts as a brighter soil. So the soil NDVI is the polygon's own where the archive
saw it bare: the mean NDVI of its barest year (at least half its pixels observed), when that year's
ratio with the configured ``soil_ndvi`` is below ``bare_ratio``; else ``soil_ndvi``.

**The pixels' own ground.** When the archive saw the polygon intact before it was damaged (at least
``pre_damage_years`` years at reference before its first damaged year), each pixel's cover is
divided by its own median cover in those years: the ground under the pit relative to the ring
(a pit dug where the grass was thinner than around it), measured rather than assumed, as
recovery indicators measure recovery against the pre-disturbance value (White et al. 2017,
Remote Sens. Environ. 194: the R80P).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from affine import Affine

from gmsense._numeric import masked_median, nan_median
from gmsense.config import RestorationSettings

RING = "ring"
RING_LAND_COVER = "ring_land_cover"
LAND_COVER_REGION = "land_cover_region"
VEGETATED_REGION = "vegetated_region"
PRE_DAMAGE = "pre_damage"
SOURCES = (RING, RING_LAND_COVER, LAND_COVER_REGION, VEGETATED_REGION)
NO_CLASS = 0
CANDIDATES = 4  # a pixel's reference is looked for among this many times reference_pixels nearest ring pixels
_MIN_SEEN = 0.5  # share of a polygon's pixels observed for its year to tell its soil NDVI


@dataclass(frozen=True)
class Reference:
    """Each polygon pixel's reference NDVI per year (``ndvi`` (years, pixels), NaN: none), the
    reference pixels observed per year, and where the reference comes from (:data:`SOURCES`)."""

    ndvi: np.ndarray
    n_pixels: np.ndarray
    source: str


def centres(mask: np.ndarray, transform: Affine) -> np.ndarray:
    """The (x, y) centres of the ``mask`` pixels, in row-major order (as ``array[mask]``)."""
    rows, cols = np.nonzero(mask)
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    return np.column_stack([np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)])


def pixel_classes(land_cover: np.ndarray, polygon: np.ndarray, allowed: np.ndarray,
                  vegetated: Sequence[int]) -> np.ndarray:
    """The land cover of each polygon pixel (row-major): the map's class where it is vegetated, else
    the class of the nearest vegetated pixel in ``allowed`` (outside every register polygon);
    :data:`NO_CLASS` when there is none in the window."""
    from scipy import ndimage

    green = np.isin(land_cover, list(vegetated))
    source = green & allowed
    own = land_cover[polygon]
    if not source.any():
        return np.where(green[polygon], own, NO_CLASS)
    _, (rows, cols) = ndimage.distance_transform_edt(~source, return_indices=True)
    nearest = land_cover[rows, cols][polygon]
    return np.where(green[polygon], own, nearest)


def nearest_sources(here: np.ndarray, there: np.ndarray, count: int) -> np.ndarray:
    """For each point of ``here`` (n, 2), the indices of its ``count`` nearest points of ``there``
    (m, 2), nearest first; -1 where ``there`` has fewer. (n, count)."""
    from scipy.spatial import cKDTree

    out = np.full((here.shape[0], count), -1, dtype=np.int64)
    if there.shape[0] == 0 or here.shape[0] == 0:
        return out
    take = min(count, there.shape[0])
    _, index = cKDTree(there).query(here, k=take)
    out[:, :take] = np.asarray(index).reshape(here.shape[0], take)
    return out


def nearest_medians(values: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Per year and target: the median of the first ``k`` observed ``values`` ((years, sources), NaN:
    not observed) among the target's ``candidates`` ((targets, n) source indices, nearest first; -1:
    none). (years, targets); NaN where none of its candidates was observed."""
    years, targets = values.shape[0], candidates.shape[0]
    out = np.full((years, targets), np.nan)
    if values.shape[1] == 0 or targets == 0:
        return out
    usable = candidates >= 0
    index = np.where(usable, candidates, 0)
    for year in range(years):
        picked = values[year][index]
        seen = np.isfinite(picked) & usable
        take = seen & (np.cumsum(seen, axis=1) <= k)
        out[year] = masked_median(np.where(take, picked, 0.0).T, take.T)
    return out


def _vegetated(reference: np.ndarray, settings: RestorationSettings) -> np.ndarray:
    return np.where(np.isfinite(reference) & (reference >= settings.min_reference_ndvi), reference, np.nan)


def ring_is_vegetated(ndvi: np.ndarray, ring: np.ndarray, settings: RestorationSettings) -> bool:
    """Whether the ring's median NDVI reaches ``min_reference_ndvi`` in at least half of the years
    it was observed (a ring never observed is no vegetated ring)."""
    median = nan_median(np.asarray(ndvi[:, ring], dtype=float).T)
    observed = np.isfinite(median)
    return bool(observed.any() and (median[observed] >= settings.min_reference_ndvi).sum() * 2 >= observed.sum())


def ring_reference(ndvi: np.ndarray, polygon: np.ndarray, ring: np.ndarray, transform: Affine,
                   settings: RestorationSettings, classes: np.ndarray | None = None,
                   ring_classes: np.ndarray | None = None) -> Reference:
    """Each polygon pixel's median of its ``reference_pixels`` nearest observed ring pixels (of its own
    land cover when ``classes``, the polygon pixels' land cover, and ``ring_classes``, the ring pixels',
    are given and the ring holds ``min_class_pixels`` of it), from ``ndvi`` (years, y, x)."""
    around = np.asarray(ndvi[:, ring], dtype=float)
    here, there = centres(polygon, transform), centres(ring, transform)
    count = CANDIDATES * settings.reference_pixels  # enough nearest ring pixels for cloudy years
    candidates = nearest_sources(here, there, count)
    source = RING
    if classes is not None and ring_classes is not None:
        source = RING_LAND_COVER
        for cls in np.unique(classes):
            same = np.flatnonzero(ring_classes == cls)
            if cls == NO_CLASS or same.size < settings.min_class_pixels:
                continue  # too little of it in the ring: the nearest ring pixels of any land cover
            rows = classes == cls
            found = nearest_sources(here[rows], there[same], count)
            candidates[rows] = np.where(found >= 0, same[np.maximum(found, 0)], -1)
    reference = _vegetated(nearest_medians(around, candidates, settings.reference_pixels), settings)
    return Reference(reference, np.isfinite(around).sum(axis=1), source)


def region_reference(ndvi: np.ndarray, polygon: np.ndarray, region: np.ndarray, settings: RestorationSettings,
                     classes: np.ndarray | None = None, land_cover: np.ndarray | None = None) -> Reference:
    """The land-cover fallback (module docstring): per year, the median NDVI of the ``region`` pixels
    of each polygon pixel's land cover (``classes``; ``land_cover`` the map over the window), or of the
    region's vegetated pixels without a map. (years, polygon pixels)."""
    values = np.asarray(ndvi[:, region], dtype=float)
    years, pixels = values.shape[0], int(polygon.sum())
    green = np.where(values >= settings.min_reference_ndvi, values, np.nan)
    anywhere = nan_median(green.T)
    out = np.repeat(anywhere[:, None], pixels, axis=1)
    counts = np.isfinite(green).sum(axis=1)
    source = VEGETATED_REGION
    if classes is not None and land_cover is not None:
        source = LAND_COVER_REGION
        region_classes = land_cover[region]
        for cls in np.unique(classes):
            same = region_classes == cls
            if cls == NO_CLASS or not same.any():
                continue
            out[:, classes == cls] = nan_median(values[:, same].T)[:, None]
            counts = np.isfinite(values[:, same]).sum(axis=1)
    return Reference(_vegetated(out, settings), counts.reshape(years), source)


def soil_line(inside: np.ndarray, reference: np.ndarray, settings: RestorationSettings) -> float:
    """The polygon's soil NDVI (module docstring) from its pixels' NDVI ``inside`` and ``reference``
    (both (years, pixels))."""
    seen = np.isfinite(inside)
    share = seen.mean(axis=1) if inside.shape[1] else np.zeros(inside.shape[0])
    enough = share >= _MIN_SEEN
    if not enough.any():
        return settings.soil_ndvi
    mean = np.where(enough, np.where(seen, inside, 0.0).sum(axis=1) / np.maximum(seen.sum(axis=1), 1), np.inf)
    barest = int(np.argmin(mean))
    level = float(nan_median(reference[barest][:, None])[0])
    soil = settings.soil_ndvi
    if not np.isfinite(level) or level <= soil:
        return soil
    bare = (mean[barest] - soil) / (level - soil) < settings.bare_ratio
    return float(mean[barest]) if bare else soil


def pre_damage_level(cover: np.ndarray, settings: RestorationSettings) -> np.ndarray | None:
    """Each pixel's own cover before the polygon was first damaged (module docstring), from ``cover``
    (years, pixels; NaN: unobserved): the median over the years at reference (``restored_ratio``)
    before the first year whose mean cover is below ``damaged_ratio``, when there are at least
    ``pre_damage_years`` of them; None otherwise (or with ``pre_damage_years`` 0)."""
    if settings.pre_damage_years == 0 or cover.shape[1] == 0:
        return None
    seen = np.isfinite(cover)
    mean = np.where(seen.any(axis=1), np.where(seen, cover, 0.0).sum(axis=1) / np.maximum(seen.sum(axis=1), 1),
                    np.nan)
    damaged = np.flatnonzero(mean < settings.damaged_ratio)
    if damaged.size == 0:
        return None
    before = np.flatnonzero(mean[:damaged[0]] >= settings.restored_ratio)
    if before.size < settings.pre_damage_years:
        return None
    level = nan_median(cover[before])
    fallback = float(np.nanmedian(level)) if np.isfinite(level).any() else 1.0
    # a pixel that was not vegetated before (a track across the intact ground) is held to half the reference
    return np.clip(np.where(np.isfinite(level), level, fallback), settings.damaged_ratio, 2.0)
