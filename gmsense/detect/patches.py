"""From per-pixel breaks to patches: connected components, polygons and shape metrics.

Pixels confirmed in the same growing season and touching (8-connectivity) form one patch.
A later disturbance of pixels that already broke (``rebreak_*``, :func:`gmsense.detect.change.later_breaks`)
forms patches of its own (``extract_patches(..., later=True)``), over the same ground as the first
disturbance's, with its own dates. Geometry and lengths are in the cube's projected CRS (metres).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import rasterio.features
import xarray as xr
from scipy import ndimage
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from skimage.measure import regionprops
from skimage.morphology import skeletonize

from gmsense.config import SeasonSettings
from gmsense.cube.ops import season_year
from gmsense.geo.grid import grid_transform

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Patch:
    """One connected disturbed area found in a scan. Geometry in the cube CRS (metres)."""

    label: int
    geometry: BaseGeometry
    first_detected: np.datetime64
    confirmed_on: np.datetime64
    n_pixels: int
    magnitude: float  # mean index drop of the confirming runs
    shape: dict[str, float] = field(default_factory=dict)
    spectral: dict[str, float] = field(default_factory=dict)
    context: dict[str, float] = field(default_factory=dict)  # the patch against its surroundings


def label_breaks(first_detected: np.ndarray, season: SeasonSettings | None = None) -> np.ndarray:
    """Integer labels (0 = none): touching pixels confirmed in the same season share a label
    (``season``: see gmsense.cube.ops.season_year)."""
    seen = ~np.isnat(first_detected)
    years = np.full(first_detected.shape, -1, dtype="int64")
    years[seen] = season_year(first_detected[seen], season)  # (a date's season: for the few broken pixels only)
    labels = np.zeros(first_detected.shape, dtype="int32")
    next_label = 0
    for year in np.unique(years[years >= 0]):
        comp, n = ndimage.label(years == year, structure=_EIGHT)
        labels[comp > 0] = comp[comp > 0] + next_label
        next_label += n
    return labels


def _skeleton_length(mask: np.ndarray) -> float:
    """Length of the skeleton in pixels: axial links count 1, diagonal links sqrt(2)."""
    sk = skeletonize(mask)
    if sk.sum() <= 1:
        return 1.0
    axial = (sk[:, 1:] & sk[:, :-1]).sum() + (sk[1:, :] & sk[:-1, :]).sum()
    diagonal = (sk[1:, 1:] & sk[:-1, :-1]).sum() + (sk[1:, :-1] & sk[:-1, 1:]).sum()
    return float(axial + np.sqrt(2) * diagonal)


def shape_metrics(mask: np.ndarray, pixel_size: float) -> dict[str, float]:
    """Shape of one component (boolean mask) in metres.

    ``length_m`` the longer of the skeleton path and the largest Feret diameter; ``width_m``
    area / length; ``elongation`` length / width; ``curvature`` the sideways spread of the pixels
    across their main axis beyond the width, per unit length (0 for a straight line);
    ``solidity`` area / convex hull area; ``orientation_deg`` of the main axis from east.
    """
    props = regionprops(mask.astype("uint8"))[0]
    area = float(props.area) * pixel_size**2
    length_px = max(_skeleton_length(mask), float(props.feret_diameter_max), 1.0)
    length = length_px * pixel_size
    width = max(area / length, pixel_size / 2)
    rows, cols = np.nonzero(mask)
    coords = np.c_[cols, -rows].astype("float64")
    coords -= coords.mean(axis=0)
    if len(coords) > 2:
        _, _, vt = np.linalg.svd(coords, full_matrices=False)
        across = coords @ vt[1]
        spread = (across.max() - across.min() + 1) * pixel_size
        axis = vt[0]
    else:
        spread, axis = pixel_size, np.array([1.0, 0.0])
    curvature = max(spread - width, 0.0) / length
    return {
        "area_px_m2": area,
        "length_m": length,
        "width_m": width,
        "elongation": length / width,
        "curvature": curvature,
        "solidity": float(props.solidity),
        "orientation_deg": float(np.degrees(np.arctan2(axis[1], axis[0])) % 180),
    }


def long_and_thin(mask: np.ndarray, pixel_size: float, min_length_m: float, min_elongation: float) -> bool:
    """Whether :func:`shape_metrics` of ``mask`` gives ``length_m >= min_length_m`` and ``elongation >=
    min_elongation``. Its length is the larger of the skeleton's and the Feret diameter, and both
    figures only grow with the length, so the Feret diameter (the costly one: a convex hull and
    every pair of its points) is measured only when the skeleton alone falls short."""
    area = float(mask.sum()) * pixel_size**2

    def passes(length_px: float) -> bool:
        length = length_px * pixel_size
        return length >= min_length_m and length / max(area / length, pixel_size / 2) >= min_elongation

    skeleton = _skeleton_length(mask)
    return passes(max(skeleton, 1.0)) or passes(
        max(skeleton, float(regionprops(mask.astype("uint8"))[0].feret_diameter_max), 1.0))


def _time_of(values: np.ndarray, mask: np.ndarray) -> np.datetime64:
    inside = values[mask]
    return inside[~np.isnat(inside)].min()


def extract_patches(breaks: xr.Dataset, min_area_m2: float, later: bool = False,
                    season: SeasonSettings | None = None) -> tuple[list[Patch], np.ndarray]:
    """Patches from the output of :func:`gmsense.detect.change.detect_breaks` (loaded in memory).

    Returns the patches (smaller than ``min_area_m2`` dropped) and the label image they came
    from (dropped components set to 0). ``context["line_share"]``: the share of a patch's pixels
    the line pass (:mod:`gmsense.detect.lines`) added. With ``later`` the patches of the pixels'
    latest later disturbance (``rebreak_first_detected``, ``rebreak_confirmed_on``,
    ``rebreak_magnitude``; none when ``breaks`` has no such variables), in a label image of their
    own: they overlap first disturbances' patches.
    """
    if later and "rebreak_first_detected" not in breaks:
        return [], np.zeros((breaks.sizes["y"], breaks.sizes["x"]), dtype="int32")
    prefix = "rebreak_" if later else ""
    first = np.asarray(breaks[f"{prefix}first_detected"].values)
    confirmed = np.asarray(breaks[f"{prefix}confirmed_on"].values)
    magnitude = np.asarray(breaks[f"{prefix}magnitude"].values)
    line = (np.asarray(breaks["line"].values) if "line" in breaks and not later  # the line pass adds first breaks
            else np.zeros(first.shape, dtype=bool))
    transform = grid_transform(breaks)
    pixel_size = abs(transform.a)
    labels = label_breaks(first, season)
    small = np.bincount(labels.ravel()) * pixel_size**2 < min_area_m2
    small[0] = False
    labels[small[labels]] = 0  # components under the minimum area are no patch (and are not outlined)
    if not labels.any():
        return [], labels
    polygons: dict[int, list[BaseGeometry]] = {}
    for geom, value in rasterio.features.shapes(labels, mask=labels > 0, connectivity=8, transform=transform):
        polygons.setdefault(int(value), []).append(shape(geom))
    patches: list[Patch] = []
    objects = ndimage.find_objects(labels)
    for label, slices in enumerate(objects, start=1):
        if slices is None:
            continue
        mask = labels[slices] == label
        # (The component's pixels in its box, in the grid's row-major order: the same values in the
        # same order as a mask of the whole grid would pick.)
        patches.append(
            Patch(
                label=label,
                geometry=unary_union(polygons[label]),
                first_detected=_time_of(first[slices], mask),
                confirmed_on=_time_of(confirmed[slices], mask),
                n_pixels=int(mask.sum()),
                magnitude=float(np.nanmean(magnitude[slices][mask])),
                shape=shape_metrics(mask, pixel_size),
                context={"line_share": float(line[slices][mask].mean())},
            )
        )
    return patches, labels
