"""What lies between the ground and the synthetic sensor on each date, and what the sensor reports.

Per acquisition (:func:`draw_sky`): snow on the ground at the season's shoulders; a sub-pixel
misregistration; soft clouds with thin, brightened edges and a shadow displaced from them; an
atmospheric gain and haze. :func:`observe` turns ground reflectance into sensor reflectance
(shadow, cloud, gain, haze, noise); :func:`scene_classes` gives the Sentinel-2-like, imperfect
scene classification. The cloud regime and the sensor (see
:mod:`gmsense.sources.synthetic._domains`) set the probabilities, sizes and noise; ``scale`` is
pixels per 10 m for the metric biomes (1 in the classic world, whose sizes are in pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gmsense.sources.synthetic._domains import CLOUD_REGIMES, SENSORS, Clouds, Sensor
from gmsense.sources.synthetic._landscape import CLOUD_SPECTRUM, EM, Landscape, smooth_noise

#: Sentinel-2 L2A scene classification values used by the synthetic SCL band.
SCL_DARK, SCL_SHADOW, SCL_VEG, SCL_BARE, SCL_WATER = 2, 3, 4, 5, 6
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_SNOW = 8, 9, 11
NOT_CLEAR_SCL = (SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, 10, SCL_SNOW)

CLOUD_RIM = 0.35  # half-width of the cloud edge, in standard deviations of the cloud field
CLOUD_FLAG_ALPHA = 0.5  # cloud optical share from which SCL flags cloud (thinner rims pass as clear)
CLOUD_HIGH_ALPHA = 0.85
SHADOW_DARKENING = 0.6  # share of the light a full shadow removes
SHADOW_FLAG_CHOICES = (0.5, 0.85, np.inf)  # shadow share SCL needs: flagged, cores only, missed
SHADOW_FLAG_PROBS = (0.55, 0.25, 0.2)
MISREGISTRATION_PX = SENSORS["s2"].misregistration_px
GAIN_SD = 0.02
HAZE_PATH = np.array([0.025, 0.016, 0.010, 0.005, 0.0015, 0.0008])  # path reflectance per unit haze
NOISE_SD, NOISE_REL = SENSORS["s2"].noise_sd, SENSORS["s2"].noise_rel
SNOW_SCL_FRACTION = 0.4
VEG_NDVI = 0.35
TERRAIN_DARK_SHARE = 0.5  # share of direct light lost (cast shadow) from which SCL says "dark area"


@dataclass(frozen=True)
class Sky:
    """The per-date atmosphere and geometry of one acquisition (pixel units, unitless shares)."""

    shift_px: tuple[float, float]  # (dy, dx) misregistration of the ground
    cloud: np.ndarray  # cloud optical share 0..1 (y, x)
    shadow: np.ndarray  # shadow share 0..1 (y, x)
    shadow_flag: float  # shadow share from which SCL flags shadow (inf: missed)
    snow: np.ndarray | None  # snow cover share 0..1 before canopy masking, or None
    gain: float
    haze: float


def snow_probability(doy: float) -> float:
    """Chance of snow on the ground: early April (fading by ~20 April) and late October."""
    spring = np.clip((112 - doy) / 20, 0, 0.95)
    autumn = np.clip((doy - 285) / 15, 0, 0.95)
    return float(max(spring, autumn))


def draw_sky(shape: tuple[int, int], doy: int, shadow_offset: np.ndarray, rng: np.random.Generator, *,
             clouds: Clouds = CLOUD_REGIMES["normal"], sensor: Sensor = SENSORS["s2"], scale: float = 1.0,
             season_shift: float = 0.0) -> Sky:
    """Snow, clouds, shadows, misregistration and atmosphere of one date."""
    angle = rng.uniform(0, 2 * np.pi)
    magnitude = rng.uniform(*sensor.misregistration_px)
    shift = (float(magnitude * np.sin(angle)), float(magnitude * np.cos(angle)))
    snow = None
    if rng.random() < snow_probability(doy - season_shift if season_shift else doy):
        depth = 0.8 if doy < 180 else 0.6
        snow = np.clip(depth + 0.35 * smooth_noise(shape, 10 * scale, rng), 0, 1)
    cloud = np.zeros(shape, dtype="float32")
    if rng.random() < clouds.date_prob:
        overcast = rng.random() < clouds.overcast_prob
        threshold = rng.uniform(*clouds.overcast_threshold) if overcast else rng.uniform(*clouds.threshold)
        field = smooth_noise(shape, rng.uniform(*clouds.scale_px) * scale, rng)
        cloud = np.clip((field - threshold + CLOUD_RIM) / (2 * CLOUD_RIM), 0, 1).astype("float32")
    offset = shadow_offset * rng.uniform(0.7, 1.3)
    shadow = ndimage.shift(cloud, offset, order=1, mode="constant", cval=0.0) if cloud.any() else cloud
    shadow_flag = float(rng.choice(SHADOW_FLAG_CHOICES, p=SHADOW_FLAG_PROBS))
    gain = float(1 + rng.normal(0, GAIN_SD))
    haze = float(rng.gamma(2.0, clouds.haze_scale))
    return Sky(shift, cloud, shadow, shadow_flag, snow, gain, haze)


def apply_snow(cover: np.ndarray, snow: np.ndarray, land: Landscape) -> np.ndarray:
    """Snow on the ground, partly hidden under the evergreen canopy."""
    visible = snow * (1 - 0.6 * land.forest * land.biome.forest_evergreen * land.veg_max)
    cover = cover * (1 - visible)
    cover[EM["snow"]] += visible
    return cover


def scene_classes(cover: np.ndarray, surface: np.ndarray, sky: Sky, dark: np.ndarray | None = None) -> np.ndarray:
    """Sentinel-2-like SCL (uint8) of one date, with its imperfections (see the package docstring);
    ``dark`` marks terrain cast shadow (SCL 2, "dark area": still clear)."""
    nir, red = surface[3], surface[2]
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    scl = np.where(ndvi > VEG_NDVI, SCL_VEG, SCL_BARE).astype("uint8")
    if dark is not None:
        scl[dark] = SCL_DARK
    scl[cover[EM["water"]] > 0.5] = SCL_WATER
    scl[cover[EM["snow"]] > SNOW_SCL_FRACTION] = SCL_SNOW
    scl[sky.shadow >= sky.shadow_flag] = SCL_SHADOW
    scl[sky.cloud >= CLOUD_FLAG_ALPHA] = SCL_CLOUD_MEDIUM
    scl[sky.cloud >= CLOUD_HIGH_ALPHA] = SCL_CLOUD_HIGH
    return scl


def observe(surface: np.ndarray, sky: Sky, rng: np.random.Generator, sensor: Sensor = SENSORS["s2"]) -> np.ndarray:
    """Ground reflectance (bands, y, x) -> what the sensor reports: shadow, cloud, gain, haze, noise."""
    lit = surface * (1 - SHADOW_DARKENING * sky.shadow)
    seen = lit * (1 - sky.cloud) + CLOUD_SPECTRUM[:, None, None] * sky.cloud
    seen = seen * sky.gain + sky.haze * HAZE_PATH[:, None, None]
    noise = rng.standard_normal(seen.shape, dtype="float32")
    return seen + noise * (sensor.noise_sd + sensor.noise_rel * seen)


def band_response(surface: np.ndarray, sensor: Sensor) -> np.ndarray:
    """Ground reflectance (6 bands, y, x) as the sensor's bands see it (``slope * r + offset``)."""
    if sensor.response is None:
        return surface
    slope, offset = (np.array(v, dtype="float32")[:, None, None] for v in zip(*sensor.response, strict=True))
    return surface * slope + offset


def subpixel_shift(stack: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Shift the last two axes of ``stack`` by (``dy``, ``dx``) pixels, bilinearly, edges repeated:
    ``out[..., i, j] = stack[..., i - dy, j - dx]`` (as ``scipy.ndimage.shift(order=1)``, faster)."""
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    fy, fx = dy - iy, dx - ix
    pad = max(abs(iy), abs(ix)) + 2
    padded = np.pad(stack, [(0, 0)] * (stack.ndim - 2) + [(pad, pad), (pad, pad)], mode="edge")
    ny, nx = stack.shape[-2:]

    def window(oy: int, ox: int) -> np.ndarray:
        return padded[..., pad - oy : pad - oy + ny, pad - ox : pad - ox + nx]

    top = window(iy, ix) * (1 - fx) + window(iy, ix + 1) * fx
    bottom = window(iy + 1, ix) * (1 - fx) + window(iy + 1, ix + 1) * fx
    return top * (1 - fy) + bottom * fy
