"""STAC catalogues and item collections as a cube (a layout of :mod:`gmsense.sources.local`).

The layout: a static catalogue or collection (``catalog.json`` / ``collection.json``, its items reached
through its links, recursively), an ItemCollection (a GeoJSON ``FeatureCollection`` of items, ``.json`` or
``.geojson``), a single item, or a folder holding a ``catalog.json`` or ``collection.json``; read with
pystac. Each item is one acquisition dated by its ``datetime`` (else ``start_datetime``).

Assets are matched to cube bands by their ``eo:bands`` common name (STAC 1.0 ``eo:bands[].common_name``,
STAC 1.1 ``bands[].eo:common_name``): ``blue``, ``green``, ``red``, ``nir`` (``nir08`` when an item has no
``nir``), ``swir16`` -> swir1, ``swir22`` -> swir2; else by the asset key or band name (``red``, ``B04``,
``SR_B4`` ...: :func:`gmsense.sources._bands.plan_bands`). Masks: an asset keyed or named ``SCL`` or
``QA_PIXEL`` (case-insensitive). Hrefs are local paths (relative ones resolved against the item's or the
file's location) or URLs (``http(s)://`` through GDAL's ``/vsicurl/``, ``s3://`` through ``/vsis3/``);
each asset is opened with rasterio.

Values: an asset's ``raster:bands`` (or STAC 1.1 ``bands``) ``scale``/``offset``/``nodata`` first; else the
raster's own GDAL scale/offset; else by the item's platform (Landsat: 2.75e-5 and -0.2; Sentinel-2: 1e-4,
with -0.1 from ``s2:processing_baseline`` 04.00 on); else the setting ``local.dn_scale`` when it is a number,
otherwise as they are. The sensor is the item's ``instruments`` (``tm``, ``etm+``, ``oli``, ``msi``) or
from its id (``LC08_...``). Pixels go onto the finest red asset's lattice, as other product layouts
(:mod:`gmsense.sources.local.products`: bilinear reflectance, nearest masks).

Why rasterio per asset and not odc-stac/stackstac: the cube must be on the same lattice, with the same
resampling, merging and masks as every other local layout, one dask task per date over the licence's
window only; the per-asset reader gives exactly that without a second grid model.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from gmsense.cube.harmonise import ETM, OLI, TM, sensor_of
from gmsense.errors import ImageryError
from gmsense.sources._bands import (
    LANDSAT_C2_SR_OFFSET,
    LANDSAT_C2_SR_SCALE,
    MASK_NAMES,
    NIR_NARROW,
    S2_DN_SCALE,
    plan_bands,
)
from gmsense.sources.local import DnScale
from gmsense.sources.local.products import PRODUCT_BANDS, Product, band_header

#: STAC ``eo`` common names -> cube bands (``nir08`` is used only when there is no ``nir``).
COMMON_NAMES = {"blue": "blue", "green": "green", "red": "red", "nir": "nir", "nir08": NIR_NARROW,
                "swir16": "swir1", "swir22": "swir2"}
STAC_SUFFIXES = (".json", ".geojson")
INSTRUMENTS = {"tm": TM, "etm+": ETM, "etm": ETM, "oli": OLI, "msi": "MSI"}
#: Sentinel-2 processing baseline from which L2A DNs carry the -1000 offset (-0.1 in reflectance).
S2_OFFSET_BASELINE = 4.0


def stac_file(path: Path) -> Path | None:
    """The STAC JSON file ``path`` is or holds (``catalog.json`` / ``collection.json`` in a folder), or None."""
    path = Path(path)
    if path.is_dir():
        return next((path / n for n in ("catalog.json", "collection.json") if (path / n).is_file()), None)
    if path.is_file() and path.suffix.lower() in STAC_SUFFIXES:
        try:
            with path.open("rb") as handle:
                head = handle.read(4096).decode("utf-8", "replace")
        except OSError:
            return None
        if '"stac_version"' in head or '"FeatureCollection"' in head or '"Feature"' in head:
            return path
    return None


def is_stac(path: Path) -> bool:
    return stac_file(path) is not None


def _load_items(file: Path) -> list[Any]:
    import pystac

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImageryError(f"STAC file {file} cannot be read as JSON ({exc}); fix or regenerate it") from exc
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "FeatureCollection":
            collection = pystac.ItemCollection.from_dict(data, preserve_dict=False)
            items = list(collection.items)
            for item in items:  # relative hrefs are relative to the file
                if item.get_self_href() is None:
                    item.set_self_href(str(file.resolve()))
            return items
        if kind == "Feature":
            return [pystac.Item.from_file(str(file))]
        if kind in ("Catalog", "Collection"):
            return list(pystac.read_file(str(file)).get_items(recursive=True))
    except ImageryError:
        raise
    except Exception as exc:  # pystac raises several types for bad catalogues
        raise ImageryError(f"STAC file {file} cannot be read ({type(exc).__name__}: {exc}); "
                           "check it against the STAC specification (e.g. stac-validator) or regenerate it") from exc
    raise ImageryError(f"STAC file {file} is a {kind or 'JSON document without a type'}, not a Catalog, Collection, "
                       "Item or ItemCollection (FeatureCollection of items)")


def _gdal_href(href: str) -> str:
    scheme = urlparse(href).scheme
    if scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if scheme == "s3":
        return "/vsis3/" + href[len("s3://"):]
    if scheme == "file":
        return urlparse(href).path
    return href


def _asset_bands(asset: Any) -> list[dict[str, Any]]:
    fields = asset.extra_fields
    return list(fields.get("eo:bands") or fields.get("bands") or [])


def _asset_role(key: str, asset: Any) -> str | None:
    """The cube band (or mask kind) an asset holds, or None."""
    bands = _asset_bands(asset)
    if len(bands) <= 1:
        band = bands[0] if bands else {}
        common = band.get("common_name") or band.get("eo:common_name")
        if common in COMMON_NAMES:
            return COMMON_NAMES[common]
        for name in (key, band.get("name")):
            if name and str(name).lower() in MASK_NAMES[:2]:
                return str(name).lower()
        for name in (band.get("name"), key):
            if name and str(name).lower() in ("b8a", "b08a", "nir08"):
                return NIR_NARROW  # the narrow NIR: nir only when an item has no broad one
            plan = plan_bands([name]) if name else None
            if plan and plan.bands:
                return next(iter(plan.bands))
    return None


def _raster_scaling(asset: Any) -> tuple[tuple[float, float] | None, float | None]:
    """``(scale, offset)`` and nodata of a single-band asset from ``raster:bands`` / STAC 1.1 ``bands``."""
    info = (asset.extra_fields.get("raster:bands") or asset.extra_fields.get("bands") or [{}])[0]
    scale, offset = info.get("scale", info.get("raster:scale")), info.get("offset", info.get("raster:offset"))
    nodata = info.get("nodata", asset.extra_fields.get("nodata"))
    scaling = (float(scale if scale is not None else 1.0), float(offset or 0.0)) if (scale, offset) != (None, None) \
        else None
    return scaling, (float(nodata) if isinstance(nodata, int | float) else None)


def _sensor(item: Any) -> tuple[str, str]:
    """``(sensor, platform)`` of an item."""
    props = item.properties
    instruments = [str(i).lower() for i in props.get("instruments") or []]
    sensor = next((INSTRUMENTS[i] for i in instruments if i in INSTRUMENTS), "") or sensor_of(item.id)
    platform = str(props.get("platform") or props.get("constellation") or "").lower()
    if platform.startswith("landsat") or sensor in (TM, ETM, OLI):
        return sensor, "landsat"
    if platform.startswith("sentinel-2") or sensor == "MSI":
        return sensor or "MSI", "sentinel-2"
    return sensor, "unknown"


def _default_scaling(item: Any, platform: str, dn_scale: DnScale) -> tuple[float, float] | None:
    if platform == "landsat":
        return LANDSAT_C2_SR_SCALE, LANDSAT_C2_SR_OFFSET
    if platform == "sentinel-2":
        try:
            baseline = float(item.properties.get("s2:processing_baseline") or 0)
        except ValueError:
            baseline = 0.0
        return S2_DN_SCALE, (-0.1 if baseline >= S2_OFFSET_BASELINE else 0.0)
    return (float(dn_scale), 0.0) if dn_scale != "auto" else None


def _item_product(item: Any, file: Path, dn_scale: DnScale) -> Product:
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise ImageryError(f"STAC item {item.id} in {file} has no datetime (nor start_datetime); give it one")
    day = np.datetime64(pd.Timestamp(dt).tz_localize(None) if pd.Timestamp(dt).tzinfo else pd.Timestamp(dt), "D")
    sensor, platform = _sensor(item)
    fix = f"fix the assets of STAC item {item.id} in {file}"
    roles: dict[str, tuple[str, Any]] = {}
    for key, asset in item.assets.items():
        role = _asset_role(key, asset)
        if role is not None and role not in roles:
            roles[role] = (key, asset)
    if "nir" not in roles and NIR_NARROW in roles:
        roles["nir"] = roles[NIR_NARROW]
    missing = [b for b in ("red", "nir") if b not in roles]
    if missing:
        raise ImageryError(
            f"STAC item {item.id} in {file} has no asset for band(s) {', '.join(missing)} (its assets: "
            f"{', '.join(item.assets) or 'none'}); name each band's asset by eo:bands common_name (red, nir, ...) "
            "or by its key (red, B04, SR_B4, ...)"
        )
    default = _default_scaling(item, platform, dn_scale)
    bands = {}
    for common in PRODUCT_BANDS:
        if common not in roles:
            continue
        key, asset = roles[common]
        scaling, nodata = _raster_scaling(asset)
        href = _gdal_href(asset.get_absolute_href() or asset.href)
        info = band_header(href, day, key, nodata=nodata if nodata is not None else 0.0, scaling=None, fix=fix)
        if scaling is None:  # the raster's own scale/offset, else the platform's
            scaling = _file_scaling(href) or default
        bands[common] = _with_scaling(info, scaling)
    mask, kind = None, None
    for candidate in ("scl", "qa_pixel"):
        if candidate in roles:
            key, asset = roles[candidate]
            href = _gdal_href(asset.get_absolute_href() or asset.href)
            mask, kind = band_header(href, day, key.upper(), nodata=None, scaling=None, fix=fix), candidate
            break
    return Product(name=item.id, day=day, bands=bands, mask=mask, mask_kind=kind, sensor=sensor, platform=platform,
                   fix=fix)


def _with_scaling(info: Any, scaling: tuple[float, float] | None) -> Any:
    from dataclasses import replace

    idx = next(iter(info.index.values()))
    return replace(info, scaling={idx: scaling} if scaling and scaling != (1.0, 0.0) else {})


def _file_scaling(href: str) -> tuple[float, float] | None:
    import rasterio

    from gmsense.sources.local import _band_scaling

    with rasterio.open(href) as src:
        return _band_scaling(src, 1)


def stac_products(path: Path, dn_scale: DnScale = "auto") -> list[Product]:
    """Every item of the STAC file at ``path`` as a :class:`Product` (headers only), by day then id."""
    file = stac_file(path)
    if file is None:
        raise ImageryError(f"imagery {path} is not a STAC catalogue, collection, item or item collection")
    st = file.stat()
    return list(_products(file.resolve(), st.st_size, st.st_mtime_ns, dn_scale))


@lru_cache(maxsize=64)
def _products(file: Path, _size: int, _mtime: int, dn_scale: DnScale) -> tuple[Product, ...]:
    items = _load_items(file)
    if not items:
        raise ImageryError(f"STAC file {file} holds no item; add items (one per acquisition) or point at another file")
    return tuple(sorted((_item_product(i, file, dn_scale) for i in items), key=lambda p: (p.day, p.name)))


def stac_days(path: Path) -> np.ndarray:
    """The items' days (the catalogue is read, the rasters are not opened)."""
    file = stac_file(path)
    assert file is not None
    days = []
    for item in _load_items(file):
        dt = item.datetime or item.common_metadata.start_datetime
        if dt is not None:
            t = pd.Timestamp(dt)
            days.append(np.datetime64(t.tz_localize(None) if t.tzinfo else t, "D"))
    return np.array(days, dtype="datetime64[ns]")
