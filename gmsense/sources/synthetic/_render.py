"""Events on the scene grid: each event's footprint, patchiness and surfaces, and its effect per date.

A :class:`Stamp` is an event rasterised once (its pixel shares within a window around it, with a
margin); :func:`apply_stamp` changes the endmember fractions of that window on one date. The
classic kinds go through :func:`gmsense.sources.synthetic._events.event_effect` unchanged; an open
pit has a surface per pixel (benches, faces, water at the bottom); a dieback browns each pixel of
forest from its cluster's onset on (spreading outwards from the cluster's centre over a season);
a drought takes green from the vegetation of its footprint in its year only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from scipy import ndimage

from gmsense.sources.synthetic._events import SURFACES, Event, event_effect
from gmsense.sources.synthetic._landscape import EM, Landscape, fraction, smooth_noise

BROWNING_DAYS = 60.0  # a pixel of a dieback cluster goes from green to brown over this many days
CLUSTER_SPREAD_DAYS = 120.0  # a cluster reaches its rim this many days after its centre
DROUGHT_ONSET_DAYS = 20.0
PIT_BENCH_M = (12.0, 25.0)  # bench spacing of an open pit
PIT_FACE_SHARE = 0.35  # share of each bench step that is steep face
PIT_WATER_DEPTH = 0.8  # share of the pit's inner distance beyond which water stands at the bottom


@dataclass
class Stamp:
    """An event on the grid: window ``rows`` x ``cols``; pixel shares, severity, surfaces and onsets there."""

    event: Event
    rows: slice
    cols: slice
    fraction: np.ndarray
    severity: np.ndarray | None = None  # patchiness 0..1 (fire, windthrow, drought)
    surface: np.ndarray | None = None  # (n_em, y, x) surface per pixel (open pit)
    onset: np.ndarray | None = None  # days after the start a pixel starts to brown (dieback; inf: never)
    strength: float = 1.0  # drought: share of green lost at full severity


def window_of(footprint: np.ndarray, margin: int = 2) -> tuple[slice, slice]:
    """The rows and columns (with ``margin`` pixels) where ``footprint`` is non-zero."""
    rows, cols = np.flatnonzero(footprint.any(axis=1)), np.flatnonzero(footprint.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    ny, nx = footprint.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, ny)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, nx)))


def severity_field(event: Event, shape: tuple[int, int], scale: float = 1.0) -> np.ndarray | None:
    """Patchy severity (0..1) for windthrow and fire (and drought); None (uniform) for the others.
    ``scale``: pixels per 10 m (1 in the classic world)."""
    if event.kind not in ("windthrow", "fire", "drought"):
        return None
    rng = np.random.default_rng(event.severity_seed)
    sigma = {"windthrow": 1.5, "fire": 3.0, "drought": 6.0}[event.kind]
    field = smooth_noise(shape, sigma * scale, rng)
    if event.kind == "windthrow":
        return np.clip(0.6 + 0.5 * field, 0, 1)  # gaps and fully thrown patches
    if event.kind == "drought":
        return np.clip(0.7 + 0.3 * field, 0.2, 1)
    return np.clip(0.85 + 0.2 * field, 0.4, 1)


def make_stamp(event: Event, land: Landscape, shape: tuple[int, int], transform: Affine, subpixel: int,
               scale: float, resolution_m: float) -> tuple[Stamp, np.ndarray]:
    """The stamp of ``event`` and its whole-grid pixel shares."""
    full = fraction(event.geometry, shape, transform, subpixel)
    rows, cols = window_of(full)
    sev = severity_field(event, shape, scale)
    stamp = Stamp(event, rows, cols, full[rows, cols], None if sev is None else sev[rows, cols])
    if event.kind == "open_pit":
        stamp.surface = _pit_surface(stamp.fraction, resolution_m, np.random.default_rng(event.severity_seed))
    elif event.kind == "dieback":
        stamp.onset = _dieback_onset(event, shape, transform, subpixel, rows, cols)
        stamp.fraction = np.minimum(stamp.fraction, land.forest[rows, cols])  # only the trees die
    elif event.kind == "drought":
        stamp.strength = float(np.random.default_rng(event.severity_seed + 1).uniform(0.45, 0.7))
    return stamp, full


def _pit_surface(share: np.ndarray, resolution_m: float, rng: np.random.Generator) -> np.ndarray:
    """Open-pit surfaces (n_em, y, x): benches and faces in rings from the rim, water at the bottom."""
    depth = ndimage.distance_transform_edt(share > 0.5) * resolution_m  # metres in from the rim
    bench = rng.uniform(*PIT_BENCH_M)
    face = ((depth / bench) % 1.0 < PIT_FACE_SHARE) & (depth > 0)
    deepest = float(depth.max())
    water = (depth >= PIT_WATER_DEPTH * deepest) & (deepest > 2 * bench)
    out = np.where(face, SURFACES["pit_face"][:, None, None], SURFACES["pit_bench"][:, None, None])
    return np.where(water, SURFACES["pit_water"][:, None, None], out).astype("float32")


def _dieback_onset(event: Event, shape: tuple[int, int], transform: Affine, subpixel: int, rows: slice,
                   cols: slice) -> np.ndarray:
    """Days after the start at which each pixel of the window starts to brown (inf: never): its
    cluster's onset plus the time the browning takes to spread out to it from the cluster's centre."""
    ny, nx = rows.stop - rows.start, cols.stop - cols.start
    yy, xx = np.mgrid[rows, cols]
    xs, ys = transform * (xx + 0.5, yy + 0.5)
    onset = np.full((ny, nx), np.inf)
    for geom, start in event.parts:
        share = fraction(geom, shape, transform, subpixel)[rows, cols]
        c = geom.centroid
        radius = max(np.sqrt(geom.area / np.pi), 1.0)
        delay = start + CLUSTER_SPREAD_DAYS * np.clip(np.hypot(xs - c.x, ys - c.y) / radius, 0, 1)
        onset = np.where(share > 0, np.minimum(onset, delay), onset)
    return onset


def apply_stamp(stamp: Stamp, when: np.datetime64, grass: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """``cover`` (n_em, window) after the stamp's event on date ``when``; ``grass`` is the pure
    grassland mix of the date over the window (what disturbed ground regrows into first)."""
    event = stamp.event
    if event.kind == "drought":
        return _drought_effect(stamp, when, cover)
    if event.kind == "dieback":
        if when < event.start:
            return cover
        age = float((when - event.start) / np.timedelta64(1, "D"))
        with np.errstate(invalid="ignore"):
            browned = np.clip((age - stamp.onset) / BROWNING_DAYS, 0, 1)
        return event_effect(event, stamp.fraction * np.nan_to_num(browned), None, when, grass, cover)
    return event_effect(event, stamp.fraction, stamp.severity, when, grass, cover, stamp.surface)


def _drought_effect(stamp: Stamp, when: np.datetime64, cover: np.ndarray) -> np.ndarray:
    """Green vegetation turned dry within the footprint, from the start to the end of that year."""
    event = stamp.event
    if when < event.start or when.astype("datetime64[Y]") != np.datetime64(event.start, "Y"):
        return cover
    age = float((when - event.start) / np.timedelta64(1, "D"))
    sev = 1.0 if stamp.severity is None else stamp.severity
    lost = cover[EM["green_veg"]] * stamp.fraction * sev * stamp.strength * min(age / DROUGHT_ONSET_DAYS, 1.0)
    out = cover.copy()
    out[EM["green_veg"]] -= lost
    out[EM["dry_veg"]] += lost
    return out
