"""Coverage: the share of a licence, and of its monitoring area, that the imagery observes.

A pixel is *observed* when it has at least one clear growing-season observation. Shares are
counted in pixels of the cube's lattice (a pixel belongs to an area when its centre lies in it),
so they add up across tiles: a tile counts only the pixels of its core, and the licence's shares
are the sums' ratios (:func:`merge_counts`, :func:`coverage_stats`). The denominators are counted
on the lattice extended over the whole area, not on the cube: imagery that stops short of the
monitoring area (local imagery smaller than the buffer) leaves the rest unobserved, not uncounted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry

#: The raw pixel counts a result's stats carry (additive over tiles): observed and all pixels of
#: the licence and of the monitoring area (licence plus buffer).
COUNT_KEYS = ("licence_px", "licence_observed_px", "area_px", "area_observed_px")


def _count(observed: np.ndarray, transform: Affine, geometry: BaseGeometry) -> tuple[int, int]:
    """(observed pixels, all pixels) of ``geometry`` on the lattice of ``transform`` (north-up),
    ``observed`` being the cube's (y, x) mask on that lattice; pixels beyond the cube are unobserved."""
    if geometry.is_empty:
        return 0, 0
    minx, miny, maxx, maxy = geometry.bounds
    cols = [(x - transform.c) / transform.a for x in (minx, maxx)]
    rows = [(y - transform.f) / transform.e for y in (miny, maxy)]
    col0, col1 = math.floor(min(cols)), math.ceil(max(cols))
    row0, row1 = math.floor(min(rows)), math.ceil(max(rows))
    if col1 <= col0 or row1 <= row0:
        return 0, 0
    inside = geometry_mask([geometry], out_shape=(row1 - row0, col1 - col0),
                           transform=transform @ Affine.translation(col0, row0), invert=True)
    # The part of the window that lies on the cube.
    ny, nx = observed.shape
    r0, r1, c0, c1 = max(row0, 0), min(row1, ny), max(col0, 0), min(col1, nx)
    seen = 0
    if r1 > r0 and c1 > c0:
        seen = int((inside[r0 - row0:r1 - row0, c0 - col0:c1 - col0] & observed[r0:r1, c0:c1]).sum())
    return seen, int(inside.sum())


def observed_counts(observed: np.ndarray, transform: Affine, licence: BaseGeometry, area: BaseGeometry,
                    within: BaseGeometry | None = None) -> dict[str, int]:
    """Pixel counts (:data:`COUNT_KEYS`) of ``licence`` and of its monitoring ``area``.

    ``observed``: (y, x) booleans on the cube's grid, ``transform`` its affine transform (metres);
    geometries in the cube's CRS. ``within``: count only there (a tile's core), None for everywhere.
    """
    if within is not None:
        licence, area = licence.intersection(within), area.intersection(within)
    licence_seen, licence_all = _count(observed, transform, licence)
    area_seen, area_all = _count(observed, transform, area)
    return {"licence_px": licence_all, "licence_observed_px": licence_seen,
            "area_px": area_all, "area_observed_px": area_seen}


def merge_counts(parts: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The counts of several tiles' stats summed (stats without counts contribute nothing)."""
    parts = list(parts)
    if not any(COUNT_KEYS[0] in p for p in parts):
        return {}
    return {key: sum(int(p.get(key, 0)) for p in parts) for key in COUNT_KEYS}


def coverage_stats(counts: Mapping[str, Any], min_coverage: float) -> dict[str, Any]:
    """``counts`` with the shares (0..1, 3 decimals) ``coverage_licence`` and ``coverage_area`` (the
    monitoring area), the threshold ``coverage_min`` and, when either share is below ``min_coverage``
    (0..1), a ``coverage_warning`` sentence; {} when ``counts`` has no counts (results of older versions)."""
    if COUNT_KEYS[0] not in counts:
        return {}
    out: dict[str, Any] = {key: int(counts[key]) for key in COUNT_KEYS}
    for name in ("licence", "area"):
        total = out[f"{name}_px"]
        out[f"coverage_{name}"] = round(out[f"{name}_observed_px"] / total, 3) if total else 0.0
    out["coverage_min"] = min_coverage
    message = coverage_warning(out, min_coverage)
    if message:
        out["coverage_warning"] = message
    return out


def coverage_warning(stats: Mapping[str, Any], min_coverage: float) -> str | None:
    """A sentence when the imagery observes less than ``min_coverage`` of the licence or of its
    monitoring area (shares in ``stats``), else None."""
    low = [(what, stats[key]) for what, key in (("licence", "coverage_licence"), ("monitoring area", "coverage_area"))
           if key in stats and stats[key] < min_coverage]
    if not low:
        return None
    return ("the imagery observes only " + " and ".join(f"{share:.1%} of the {what}" for what, share in low)
            + f" (below {min_coverage:.0%}): disturbances in the rest cannot be seen")
