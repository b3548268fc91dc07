"""Which layout local imagery has: detected from the path, or named by the setting ``local.layout``.

Layouts (:data:`LAYOUTS`): ``cube`` (NetCDF/Zarr), ``stac`` (a STAC catalogue, collection, item or
ItemCollection), ``safe`` (Sentinel-2 L2A SAFE folders or zips), ``landsat`` (Landsat Collection 2 Level-2
folders or tars), ``theia`` (THEIA/MAJA product folders), ``folder`` (dated GeoTIFFs or annual composites
``YYYY.tif``). ``auto`` tries them in that order; a folder holding both SAFE and Landsat products reads
both (``products``: one cube, see :mod:`gmsense.sources.local.products`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmsense.errors import ImageryError

#: The layouts a user can name (``--layout``), ``auto`` first.
LAYOUTS = ("auto", "folder", "theia", "safe", "landsat", "stac", "cube")
#: What each layout is, for messages.
DESCRIPTIONS = {
    "folder": "a folder of dated GeoTIFFs (YYYY-MM-DD*.tif) or annual composites (YYYY.tif)",
    "theia": "THEIA Sentinel-2 L2A product folders (SENTINEL2A_YYYYMMDD-hhmmss-mmm_L2A_T*_*_V*)",
    "safe": "Sentinel-2 L2A SAFE products (S2*_MSIL2A_*.SAFE folders or their .zip)",
    "landsat": "Landsat Collection 2 Level-2 products (LC08_L2SP_*_02_T1 folders or their .tar)",
    "stac": "a STAC catalogue, collection, item or ItemCollection (.json/.geojson)",
    "cube": "a NetCDF (.nc) or Zarr (.zarr) cube",
}
#: The layouts read as products by :func:`gmsense.sources.local.products.read_products`.
PRODUCT_LAYOUTS = ("safe", "landsat", "stac", "products")


def _is_cube(path: Path) -> bool:
    from gmsense.sources.local import STORE_SUFFIXES, _is_zarr

    return path.suffix.lower() in STORE_SUFFIXES or _is_zarr(path)


def _has(path: Path, layout: str) -> bool:
    if layout == "cube":
        return _is_cube(path)
    if layout == "stac":
        from gmsense.sources.local.stac import is_stac

        return is_stac(path)
    if layout == "safe":
        from gmsense.sources.local.safe import is_safe

        return is_safe(path)
    if layout == "landsat":
        from gmsense.sources.local.landsat import is_landsat

        return is_landsat(path)
    if layout == "theia":
        from gmsense.sources.local.theia import is_theia_folder

        return is_theia_folder(path)
    return path.is_dir()


def detect_layout(path: Path, layout: str = "auto") -> str:
    """The layout of the imagery at ``path``: ``layout`` when named (checked), else detected; ``products``
    for a folder holding both SAFE and Landsat products. Raises :class:`ImageryError`."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise ImageryError(f"unknown imagery layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        if not _has(path, layout):
            raise ImageryError(f"imagery {path} is not {DESCRIPTIONS[layout]}, as the layout {layout!r} says; "
                               "point the imagery path at such imagery, or let the layout be detected (auto)")
        return layout
    if _is_cube(path):
        return "cube"
    if _has(path, "stac"):
        return "stac"
    safe, landsat = _has(path, "safe"), _has(path, "landsat")
    if safe and landsat:
        return "products"
    if safe:
        return "safe"
    if landsat:
        return "landsat"
    if path.is_dir() and _has(path, "theia"):
        return "theia"
    if path.is_dir():
        return "folder"
    raise ImageryError(
        f"imagery {path} is none of the layouts gmsense reads: " + "; ".join(DESCRIPTIONS.values())
        + "; point the imagery path at one of those"
    )


def layout_products(path: Path, layout: str, dn_scale: object = "auto") -> list:
    """The products (headers checked, no pixels) of a product layout, by day then name."""
    from gmsense.sources.local.landsat import landsat_products
    from gmsense.sources.local.safe import safe_products
    from gmsense.sources.local.stac import stac_products

    if layout == "safe":
        return safe_products(path)
    if layout == "landsat":
        return landsat_products(path)
    if layout == "stac":
        return stac_products(path, dn_scale)  # type: ignore[arg-type]
    if layout == "products":
        return sorted([*safe_products(path), *landsat_products(path)], key=lambda p: (p.day, p.name))
    raise ValueError(f"{layout!r} is not a product layout")


def layout_days(path: Path, layout: str) -> np.ndarray:
    """The acquisition days of a product layout, from names (SAFE, Landsat) or the catalogue (STAC)."""
    from gmsense.sources.local.landsat import landsat_days
    from gmsense.sources.local.safe import safe_days
    from gmsense.sources.local.stac import stac_days

    if layout == "safe":
        return safe_days(path)
    if layout == "landsat":
        return landsat_days(path)
    if layout == "stac":
        return stac_days(path)
    return np.concatenate([safe_days(path), landsat_days(path)])


def layout_resolution(path: Path, layout: str) -> float:
    """Pixel size (metres) of a product layout's cube: 10 m for Sentinel-2, 30 m for Landsat; a STAC cube's
    from its first item's red asset."""
    if layout in ("safe", "products"):
        return 10.0
    if layout == "landsat":
        return 30.0
    first = layout_products(path, layout)[0].reference
    return float(abs(first.transform.a)) * (111_320.0 if first.crs.is_geographic else 1.0)
