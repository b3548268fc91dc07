"""Terrain for the mountain worlds: a synthetic DEM and its illumination by the sun on each date.

The DEM (metres) is a sum of smooth random fields with sharp ridges; slope and aspect come from its
gradient. On each date the sun's elevation and azimuth at the overpass time (local solar time, the
scene's latitude, the day of year) give the illumination of every pixel: a diffuse share plus the
direct share scaled by ``cos(incidence) / cos(sun zenith)`` (1 on flat ground), with no direct light
where the slope faces away from the sun or where a ridge between the pixel and the sun casts its
shadow (traced along the sun's azimuth over the DEM). Sun angles are from the usual declination
and hour-angle formulas (accurate to a degree, plenty for shading).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gmsense.sources.synthetic._landscape import smooth_noise

DIFFUSE_SHARE = 0.2  # share of the light that is diffuse (reaches shadowed slopes)
MAX_ILLUMINATION = 2.5  # brightest a sunlit slope gets, relative to flat ground
SHADOW_REACH_M = 3_000.0  # how far a ridge's shadow is traced


@dataclass
class Terrain:
    """A DEM on the scene grid and the per-date illumination it gives (cached per sun position)."""

    dem: np.ndarray  # metres, (y, x)
    resolution_m: float
    latitude: float  # degrees
    slope: np.ndarray = field(init=False)  # radians
    aspect: np.ndarray = field(init=False)  # radians clockwise from north, the direction the slope faces
    _cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, init=False,
                                                                               repr=False)

    def __post_init__(self) -> None:
        gy, gx = np.gradient(self.dem, self.resolution_m)  # gy: per row (southwards), gx: eastwards
        self.slope = np.arctan(np.hypot(gx, gy))
        self.aspect = np.arctan2(-gx, gy) % (2 * np.pi)  # downhill direction: east = -gx, north = +gy

    def illumination(self, doy: float, hour: float) -> tuple[np.ndarray, np.ndarray]:
        """(illumination factor (y, x), float32, 1 on flat ground; cast-shadow share 0/1 (y, x))
        at ``hour`` local solar time on day of year ``doy``."""
        elevation, azimuth = sun_position(self.latitude, doy, hour)
        key = (round(elevation * 2), round(azimuth), round(self.resolution_m))
        if key not in self._cache:
            zenith = np.radians(90.0 - elevation)
            az = np.radians(azimuth)
            cos_i = (np.cos(zenith) * np.cos(self.slope)
                     + np.sin(zenith) * np.sin(self.slope) * np.cos(az - self.aspect))
            cast = cast_shadow(self.dem, self.resolution_m, elevation, azimuth)
            direct = np.clip(cos_i, 0, None) / max(np.cos(zenith), 0.05) * (1 - cast)
            factor = np.minimum(DIFFUSE_SHARE + (1 - DIFFUSE_SHARE) * direct, MAX_ILLUMINATION)
            self._cache[key] = (factor.astype("float32"), cast.astype("float32"))
        return self._cache[key]


def make_terrain(shape: tuple[int, int], resolution_m: float, relief_m: float, latitude: float,
                 rng: np.random.Generator) -> Terrain:
    """A mountain DEM of about ``relief_m`` metres from valley to ridge, with ridges sharp enough
    that the steepest slopes (a few percent of the scene) pass 45 degrees."""
    px = 1.0 / resolution_m
    broad = smooth_noise(shape, 450 * px, rng)
    middle = smooth_noise(shape, 150 * px, rng)
    fine = smooth_noise(shape, 50 * px, rng)
    base = 0.7 * broad + 0.3 * middle
    ridged = 1 - np.abs(base) / 2.5  # sharp crests where ``base`` crosses zero
    dem = relief_m * (0.55 * ridged + 0.45 * (broad + 2.5) / 5) + 15.0 * fine
    return Terrain((dem - dem.min()).astype("float64"), float(resolution_m), float(latitude))


def sun_position(latitude: float, doy: float, hour: float) -> tuple[float, float]:
    """Sun elevation and azimuth (degrees; azimuth clockwise from north) at ``hour`` local solar time."""
    phi = np.radians(latitude)
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    h = np.radians(15.0 * (hour - 12.0))
    sin_e = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(h)
    e = np.arcsin(np.clip(sin_e, -1, 1))
    sin_az = -np.cos(decl) * np.sin(h) / max(np.cos(e), 1e-6)
    cos_az = (np.sin(decl) - np.sin(e) * np.sin(phi)) / max(np.cos(e) * np.cos(phi), 1e-6)
    return float(np.degrees(e)), float(np.degrees(np.arctan2(sin_az, cos_az)) % 360)


def cast_shadow(dem: np.ndarray, resolution_m: float, elevation: float, azimuth: float) -> np.ndarray:
    """1 where the terrain towards the sun rises above the sun's elevation angle, else 0 (float).

    Traced along the azimuth at distances growing by about 12 % per step (nearest pixel, edges
    repeated), up to :data:`SHADOW_REACH_M` or the height the relief can shade."""
    tan_e = np.tan(np.radians(max(elevation, 1.0)))
    relief = float(dem.max() - dem.min())
    reach_px = min(SHADOW_REACH_M, relief / tan_e) / resolution_m
    if reach_px < 1:
        return np.zeros(dem.shape)
    steps = np.unique(np.round(np.geomspace(1, reach_px, num=max(2, int(np.log(reach_px) / np.log(1.12)) + 1))))
    az = np.radians(azimuth)
    drow, dcol = -np.cos(az), np.sin(az)  # towards the sun, in array axes (rows run south)
    pad = int(np.ceil(steps[-1])) + 1
    padded = np.pad(dem, pad, mode="edge")
    ny, nx = dem.shape
    horizon = np.full(dem.shape, -np.inf)
    for k in steps:
        oy, ox = int(np.rint(k * drow)), int(np.rint(k * dcol))
        ahead = padded[pad + oy : pad + oy + ny, pad + ox : pad + ox + nx]
        np.maximum(horizon, (ahead - dem) / (k * resolution_m), out=horizon)
    return (horizon > tan_e).astype("float64")
