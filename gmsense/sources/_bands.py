"""Band names and quality masks of local imagery (private helpers of :mod:`gmsense.sources.local`).

Maps the band names found in GeoTIFF band descriptions or NetCDF/Zarr variable names (Sentinel-2
``B02``/``B2`` ..., Landsat Collection 2 ``SR_B2`` ..., or the common names of the cube contract)
to the common names, and decodes the mask bands (Sentinel-2 ``SCL``, Landsat ``QA_PIXEL``,
``clear``, ``cloud``) into a boolean "usable observation" array. All functions are pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from gmsense.cube.contract import CUBE_BANDS

#: Bands every local cube must have (NDVI needs both).
REQUIRED_BANDS = ("red", "nir")

#: Sentinel-2 B8A (narrow NIR, 865 nm): used as ``nir`` only when there is no B08 (e.g. 20 m products).
NIR_NARROW = "nir08"

_S2 = {
    "blue": ("b02", "b2"),
    "green": ("b03", "b3"),
    "red": ("b04", "b4"),
    "nir": ("b08", "b8"),
    "rededge1": ("b05", "b5"),
    "rededge2": ("b06", "b6"),
    "rededge3": ("b07", "b7"),
    "swir1": ("b11",),
    "swir2": ("b12",),
    NIR_NARROW: ("b8a", "b08a"),
}
# Landsat 8/9 OLI Collection 2 Level-2 surface reflectance (USGS LSDS-1619, Landsat 8-9 C2 L2
# Science Product Guide): SR_B1 is coastal/aerosol (not in the contract), SR_B2..SR_B7 below.
_LANDSAT = {
    "blue": ("sr_b2",),
    "green": ("sr_b3",),
    "red": ("sr_b4",),
    "nir": ("sr_b5",),
    "swir1": ("sr_b6",),
    "swir2": ("sr_b7",),
}
# Landsat 4-7 TM / ETM+ Collection 2 Level-2 surface reflectance (USGS LSDS-1618, Landsat 4-7 C2 L2
# Science Product Guide): SR_B1..SR_B5 and SR_B7 (band 6 is thermal, ST_B6). The same names as OLI's
# for other bands, so they apply only to files whose names say TM or ETM+ (LT05_, LE07_: see
# gmsense.cube.harmonise.sensor_of).
_LANDSAT_TM_ETM = {
    "blue": ("sr_b1",),
    "green": ("sr_b2",),
    "red": ("sr_b3",),
    "nir": ("sr_b4",),
    "swir1": ("sr_b5",),
    "swir2": ("sr_b7",),
}
_COMMON_ALIASES = {"swir1": ("swir16",), "swir2": ("swir22",), NIR_NARROW: ("nir08",)}

#: Lower-case alias -> common name (or :data:`NIR_NARROW`).
BAND_ALIASES: dict[str, str] = {
    alias: name
    for table in (_S2, _LANDSAT, _COMMON_ALIASES)
    for name, aliases in table.items()
    for alias in aliases
} | {name: name for name in CUBE_BANDS}
#: :data:`BAND_ALIASES` for TM / ETM+ products: their ``SR_B*`` numbering instead of OLI's.
BAND_ALIASES_TM_ETM: dict[str, str] = {
    alias: name for alias, name in BAND_ALIASES.items() if not alias.startswith("sr_b")
} | {alias: name for name, aliases in _LANDSAT_TM_ETM.items() for alias in aliases}

#: Mask band kinds, by lower-case name.
MASK_NAMES = ("scl", "qa_pixel", "clear", "cloud")

# Sentinel-2 L2A Scene Classification (SCL) classes (ESA, Sentinel-2 Level-2A Product Format
# Specification / "Sentinel-2 MSI Level-2A Algorithm Theoretical Basis Document", table "Scene
# Classification values"): 0 no data, 1 saturated or defective, 2 dark area pixels,
# 3 cloud shadows, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified,
# 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus, 11 snow or ice.
SCL_NO_DATA = 0
SCL_SATURATED_DEFECTIVE = 1
SCL_CLOUD_SHADOW = 3
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_THIN_CIRRUS = 10
SCL_SNOW_ICE = 11
#: SCL classes that are not a usable observation.
SCL_NOT_CLEAR = (
    SCL_NO_DATA,
    SCL_SATURATED_DEFECTIVE,
    SCL_CLOUD_SHADOW,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_HIGH,
    SCL_THIN_CIRRUS,
    SCL_SNOW_ICE,
)

# Landsat Collection 2 QA_PIXEL bit flags (USGS, Landsat 8-9 Collection 2 Level-2 Science Product
# Guide LSDS-1619, table "Pixel Quality Assessment (QA_PIXEL) Bit Index"): bit 0 fill,
# 1 dilated cloud, 2 cirrus (high confidence), 3 cloud, 4 cloud shadow, 5 snow, 6 clear, 7 water.
QA_FILL = 1 << 0
QA_DILATED_CLOUD = 1 << 1
QA_CIRRUS = 1 << 2
QA_CLOUD = 1 << 3
QA_CLOUD_SHADOW = 1 << 4
QA_SNOW = 1 << 5
#: A pixel is clear iff none of these bits is set.
QA_NOT_CLEAR_BITS = QA_FILL | QA_DILATED_CLOUD | QA_CIRRUS | QA_CLOUD | QA_CLOUD_SHADOW | QA_SNOW

#: Default DN -> reflectance scale for Sentinel-2 L2A (BOA_QUANTIFICATION_VALUE 10000) and most
#: "reflectance x 10000" products.
S2_DN_SCALE = 1e-4
# Landsat Collection 2 Level-2 surface reflectance: reflectance = DN * 2.75e-5 - 0.2 (USGS LSDS-1619).
LANDSAT_C2_SR_SCALE = 2.75e-5
LANDSAT_C2_SR_OFFSET = -0.2


@dataclass(frozen=True)
class BandPlan:
    """Which source band/variable becomes which cube band, and the mask to decode.

    ``bands`` maps common name -> source name; ``mask`` is ``(kind, source name)`` or ``None``;
    ``platform`` is ``"sentinel-2"``, ``"landsat"`` or ``"unknown"``.
    """

    bands: dict[str, str]
    mask: tuple[str, str] | None
    platform: str


def accepted_names() -> str:
    """A one-line list of the band and mask names the local reader understands (for error messages)."""
    return (
        "S2 B02/B2 B03 B04 B05 B06 B07 B08 B8A B11 B12, Landsat SR_B2..SR_B7 (TM/ETM+ files named LT05_/LE07_: "
        "SR_B1..SR_B5, SR_B7), or "
        + " ".join(CUBE_BANDS)
        + " (swir16/swir22); masks SCL, QA_PIXEL, clear, cloud"
    )


def plan_bands(names: Iterable[str | None], sensor: str = "") -> BandPlan:
    """Map source band names (case-insensitive; ``None`` = unnamed) to the cube's common names.

    ``sensor`` (``TM``, ``ETM+``, ``OLI`` or ``""`` unknown, e.g. from the file name) chooses the
    Landsat ``SR_B*`` numbering: TM / ETM+ ``SR_B1`` blue .. ``SR_B5`` swir1, ``SR_B7`` swir2;
    otherwise OLI's ``SR_B2`` blue .. ``SR_B7`` swir2.

    B8A becomes ``nir`` only when no B08/``nir`` is present; otherwise it is ignored (the contract
    has a single NIR band, and the broad B08 matches the other 10 m bands). When two source names
    map to the same common name the first one wins. The mask is the first of SCL, QA_PIXEL,
    clear, cloud found (in that order of preference).
    """
    bands: dict[str, str] = {}
    masks: dict[str, str] = {}
    s2 = landsat = False
    for raw in names:
        if not raw:
            continue
        key = raw.strip().lower()
        if key in MASK_NAMES:
            masks.setdefault(key, raw)
            s2 |= key == "scl"
            landsat |= key == "qa_pixel"
            continue
        common = (BAND_ALIASES_TM_ETM if sensor in ("TM", "ETM+") else BAND_ALIASES).get(key)
        if common is None:
            continue
        bands.setdefault(common, raw)
        s2 |= key.startswith("b") and key not in CUBE_BANDS
        landsat |= key.startswith("sr_b")
    narrow = bands.pop(NIR_NARROW, None)
    if narrow is not None and "nir" not in bands:
        bands["nir"] = narrow
    ordered = {name: bands[name] for name in CUBE_BANDS if name in bands}
    mask = next(((kind, masks[kind]) for kind in MASK_NAMES if kind in masks), None)
    platform = "landsat" if landsat and not s2 else "sentinel-2" if s2 and not landsat else "unknown"
    return BandPlan(ordered, mask, platform)


def missing_required(bands: Iterable[str]) -> list[str]:
    """The required common band names (:data:`REQUIRED_BANDS`) not in ``bands``."""
    found = set(bands)
    return [b for b in REQUIRED_BANDS if b not in found]


def decode_clear(kind: str, values: np.ndarray) -> np.ndarray:
    """Boolean "usable observation" from a mask band; NaN (no data) is never clear.

    ``kind`` is one of :data:`MASK_NAMES`: ``scl`` (clear unless class in :data:`SCL_NOT_CLEAR`),
    ``qa_pixel`` (clear iff no bit of :data:`QA_NOT_CLEAR_BITS` is set), ``clear`` (1 = clear),
    ``cloud`` (1 = cloud, 0 = clear).
    """
    values = np.asarray(values)
    if kind not in MASK_NAMES:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_NAMES}")
    if values.dtype == bool and kind in ("clear", "cloud"):  # a boolean mask as it is (the same answer, no copies)
        return values.copy() if kind == "clear" else ~values
    # Floats may hold NaN (no data) and class codes off by rounding; integers are codes as they are.
    floating = np.issubdtype(values.dtype, np.floating)
    finite = np.isfinite(values) if floating else None
    filled = np.where(finite, values, 0) if floating else values
    if kind in ("scl", "qa_pixel"):
        codes = np.rint(filled).astype(np.int64) if floating else filled.astype(np.int64)
        ok = ~np.isin(codes, SCL_NOT_CLEAR) if kind == "scl" else (codes & QA_NOT_CLEAR_BITS) == 0
    else:
        ok = filled == (1 if kind == "clear" else 0)
    return ok & finite if floating else ok


def looks_like_dn(values: np.ndarray, threshold: float = 2.0) -> bool:
    """True when the 99th percentile of the finite ``values`` exceeds ``threshold`` (reflectance is ~0..1.5).

    Returns False when there is no finite value (nothing to judge; no numpy warning).
    """
    flat = np.asarray(values, dtype="float64").ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return False
    return bool(np.percentile(flat, 99) > threshold)


def default_dn_scaling(platform: str) -> tuple[float, float]:
    """``(scale, offset)`` turning DN into reflectance when the metadata names none.

    Landsat Collection 2 SR uses the USGS factors; everything else the Sentinel-2 1e-4.
    """
    if platform == "landsat":
        return LANDSAT_C2_SR_SCALE, LANDSAT_C2_SR_OFFSET
    return S2_DN_SCALE, 0.0
