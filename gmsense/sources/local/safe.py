"""Sentinel-2 Level-2A SAFE products (ESA/Copernicus) as a cube (a layout of :mod:`gmsense.sources.local`).

The layout: a ``.SAFE`` folder (``S2A_MSIL2A_20210614T025551_N0300_R032_T51TXM_20210614T060237.SAFE``),
a ``.zip`` of one (as the Copernicus Data Space delivers it; read in place through GDAL's ``/vsizip/``),
or a folder holding several of either. Each granule ``GRANULE/*/IMG_DATA`` has JPEG 2000 bands per
resolution: ``R10m/*_B02_10m.jp2`` (B02 B03 B04 B08), ``R20m/*_B11_20m.jp2`` (B11 B12) and the scene
classification ``R20m/*_SCL_20m.jp2``; read with rasterio (GDAL's JP2OpenJPEG driver). ``MTD_MSIL2A.xml``
gives the acquisition date (``PRODUCT_START_TIME``; the product name's date when it has none), the
processing baseline, ``BOA_QUANTIFICATION_VALUE`` and the per-band ``BOA_ADD_OFFSET``.

Values: reflectance = (DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE, DN 0 = no data. When the metadata
names no offset, it is -1000 for processing baseline 04.00 and later (products since 25 January 2022)
and 0 before; the quantification value defaults to 10000. Baselines before 02.00, or from 06.00 on
without the offsets in their metadata, are refused (their convention is not known to this reader).

Bands: B02 blue, B03 green, B04 red, B08 nir (10 m); B11 swir1, B12 swir2 (20 m). Grid: the 10 m B04
lattice (see :mod:`gmsense.sources.local.products`): B11/B12 are resampled onto it **bilinearly**, SCL by
**nearest** neighbour; clear = SCL not in no data, saturated, cloud shadow, cloud, cirrus, snow.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np

from gmsense.errors import ImageryError
from gmsense.sources.local.products import Product, band_header, compact_day, products_in

#: A Sentinel-2 L2A product name: mission, sensing start, baseline, orbit, tile, product discriminator.
SAFE_NAME = re.compile(r"^(S2[A-D])_MSIL2A_(\d{8})T(\d{6})_N(\d{4})_R(\d{3})_T(\w{5})_(\d{8}T\d{6})(\.SAFE)?$")
#: Common band name -> (Sentinel-2 band, resolution folder), in cube order.
SAFE_BANDS = {"blue": ("B02", 10), "green": ("B03", 10), "red": ("B04", 10), "nir": ("B08", 10),
              "swir1": ("B11", 20), "swir2": ("B12", 20)}
#: The scene classification band and its resolution.
SCL = ("SCL", 20)
#: ``band_id`` of ``BOA_ADD_OFFSET`` in MTD_MSIL2A.xml (the order of the Spectral_Information_List).
BAND_IDS = {"B01": 0, "B02": 1, "B03": 2, "B04": 3, "B05": 4, "B06": 5, "B07": 6, "B08": 7, "B8A": 8,
            "B09": 9, "B10": 10, "B11": 11, "B12": 12}
QUANTIFICATION = 10000.0
#: Processing baseline from which L2A DNs carry an offset of -1000 (ESA, "Sentinel-2: Processing
#: Baseline 04.00", January 2022).
OFFSET_BASELINE = (4, 0)
OFFSET_FROM_0400 = -1000.0
#: Baselines whose convention this reader knows without metadata offsets: 02.00 up to 05.99.
KNOWN_BASELINES = ((2, 0), (5, 99))
METADATA = "MTD_MSIL2A.xml"


def _stem(name: str) -> str:
    for suffix in (".zip", ".SAFE"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def safe_name_day(name: str) -> np.datetime64 | None:
    """The sensing day in a product (folder or zip) name, or None when the name is no L2A product's."""
    m = SAFE_NAME.match(_stem(name) if name.endswith(".zip") else name)
    if not m:
        return None
    return compact_day(m.group(2))


def _is_product(p: Path) -> bool:
    if p.is_dir():
        return p.suffix == ".SAFE" and ((p / METADATA).is_file() or safe_name_day(p.name) is not None)
    return p.is_file() and p.suffix.lower() == ".zip" and "MSIL2A" in p.name


def safe_products_in(path: Path) -> list[Path]:
    """The SAFE folders and zips at ``path`` (itself, or its entries), sorted by name."""
    return products_in(Path(path), _is_product)


def is_safe(path: Path) -> bool:
    """True when ``path`` is a Sentinel-2 L2A SAFE product (folder or zip) or holds some."""
    return bool(safe_products_in(path))


def safe_days(path: Path) -> np.ndarray:
    """Sensing days from the product names (no file opened; a product not named as ESA names them is read)."""
    days = []
    for p in safe_products_in(path):
        day = safe_name_day(p.name)
        days.append(day if day is not None else _read_product(p, _signature(p))[0].day)
    return np.array(days, dtype="datetime64[ns]")


def _fix(product: Path) -> str:
    return f"download Sentinel-2 product {product.name} again (complete), or remove it"


class _Tree:
    """The files of a SAFE folder or zip, as paths relative to the ``.SAFE`` root, and how GDAL opens them."""

    def __init__(self, product: Path) -> None:
        self.product = product
        if product.is_dir():
            self.root = ""
            self.files = [str(PurePosixPath(*p.relative_to(product).parts)) for p in product.rglob("*") if p.is_file()]
        else:
            try:
                with zipfile.ZipFile(product) as z:
                    names = [n for n in z.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError) as exc:
                raise ImageryError(f"Sentinel-2 product {product} is not a readable zip ({exc}); "
                                   f"{_fix(product)}") from exc
            roots = sorted({n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".SAFE")})
            if not roots:
                raise ImageryError(f"zip {product} holds no .SAFE folder; it is not a Sentinel-2 L2A product")
            self.root = roots[0]
            self.files = [n.split("/", 1)[1] for n in names if n.startswith(self.root + "/")]

    def gdal_path(self, relative: str) -> str:
        if self.product.is_dir():
            return str(self.product / relative)
        return f"/vsizip/{self.product.resolve()}/{self.root}/{relative}"

    def read_text(self, relative: str) -> str:
        if self.product.is_dir():
            return (self.product / relative).read_text(encoding="utf-8")
        with zipfile.ZipFile(self.product) as z:
            return z.read(f"{self.root}/{relative}").decode("utf-8")

    @property
    def name(self) -> str:
        return self.product.name if self.product.is_dir() else self.root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_metadata(text: str, where: str) -> dict[str, object]:
    """From MTD_MSIL2A.xml: ``start`` (ISO time or None), ``baseline`` (e.g. ``"04.00"`` or None),
    ``quantification`` (float or None) and ``offsets`` (band id -> offset)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ImageryError(f"Sentinel-2 metadata {where} is not valid XML ({exc}); download the product again") from exc
    out: dict[str, object] = {"start": None, "baseline": None, "quantification": None, "offsets": {}}
    offsets: dict[int, float] = {}
    for el in root.iter():
        tag, value = _local(el.tag), (el.text or "").strip()
        if tag == "PRODUCT_START_TIME" and out["start"] is None:
            out["start"] = value
        elif tag == "PROCESSING_BASELINE" and out["baseline"] is None:
            out["baseline"] = value
        elif tag == "BOA_QUANTIFICATION_VALUE" and out["quantification"] is None:
            out["quantification"] = float(value)
        elif tag == "BOA_ADD_OFFSET" and "band_id" in el.attrib:
            offsets[int(el.attrib["band_id"])] = float(value)
    out["offsets"] = offsets
    return out


def _baseline(text: str | None) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d{1,2})\.(\d{2})", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _signature(product: Path) -> tuple[str, int, int]:
    st = product.stat()
    return str(product.resolve()), st.st_size, st.st_mtime_ns


def read_safe_product(product: Path) -> list[Product]:
    """Check a SAFE folder or zip and read its headers (no pixels): one :class:`Product` per granule.

    Raises :class:`ImageryError` naming the product and what is missing or unreadable. Remembered in
    the process while the product keeps its size and modification time.
    """
    return list(_read_product(Path(product), _signature(Path(product))))


@lru_cache(maxsize=1024)
def _read_product(product: Path, _signature: tuple) -> tuple[Product, ...]:
    tree = _Tree(product)
    if METADATA not in tree.files:
        raise ImageryError(f"Sentinel-2 product {product} has no {METADATA} (its acquisition date, processing "
                           f"baseline and offsets); {_fix(product)}")
    meta = parse_metadata(tree.read_text(METADATA), f"{product}/{METADATA}")
    day = _day(meta, tree.name, product)
    baseline = _baseline(meta["baseline"]) or _name_baseline(tree.name)
    offsets: dict[int, float] = meta["offsets"]  # type: ignore[assignment]
    if baseline is None and not offsets:
        raise ImageryError(f"Sentinel-2 product {product}: {METADATA} names no PROCESSING_BASELINE and no "
                           f"BOA_ADD_OFFSET; {_fix(product)}")
    if not offsets and baseline is not None and not (KNOWN_BASELINES[0] <= baseline <= KNOWN_BASELINES[1]):
        named = meta["baseline"] or f"{baseline[0]:02d}.{baseline[1]:02d}"
        raise ImageryError(
            f"Sentinel-2 product {product} has processing baseline {named}, "
            f"which this reader does not support without BOA_ADD_OFFSET values in {METADATA} (it knows 02.00 to "
            "05.99); use a product of a supported baseline, or convert it to dated GeoTIFFs with a scale and offset"
        )
    quant = float(meta["quantification"] or QUANTIFICATION)  # type: ignore[arg-type]
    default_offset = OFFSET_FROM_0400 if baseline is not None and baseline >= OFFSET_BASELINE else 0.0

    granules = sorted({f.split("/")[1] for f in tree.files if f.startswith("GRANULE/") and f.count("/") >= 3})
    if not granules:
        raise ImageryError(f"Sentinel-2 product {product} has no GRANULE/*/IMG_DATA folder; {_fix(product)}")
    out = []
    for granule in granules:
        files = [f for f in tree.files if f.startswith(f"GRANULE/{granule}/IMG_DATA/")]
        found = {common: _band_file(files, band, res) for common, (band, res) in SAFE_BANDS.items()}
        missing = [f"{SAFE_BANDS[c][0]} ({SAFE_BANDS[c][1]} m)" for c, f in found.items() if f is None]
        if missing:
            raise ImageryError(
                f"Sentinel-2 product {product} (granule {granule}) lacks band file(s) {', '.join(missing)} "
                f"(expected IMG_DATA/R10m/*_B04_10m.jp2 and R20m/*_B11_20m.jp2 and so on); {_fix(product)}"
            )
        scl = _band_file(files, *SCL)
        if scl is None:
            raise ImageryError(
                f"Sentinel-2 product {product} (granule {granule}) has no scene classification "
                f"IMG_DATA/R20m/*_SCL_20m.jp2, needed to mask clouds; {_fix(product)}"
            )
        bands = {}
        for common, rel in found.items():
            band = SAFE_BANDS[common][0]
            offset = offsets.get(BAND_IDS[band], default_offset)
            bands[common] = band_header(tree.gdal_path(rel), day, band, nodata=0.0,  # type: ignore[arg-type]
                                        scaling=(1.0 / quant, offset / quant), fix=_fix(product))
        mask = band_header(tree.gdal_path(scl), day, "SCL", nodata=None, scaling=None, fix=_fix(product))
        name = _stem(tree.name) + (f"/{granule}" if len(granules) > 1 else "")
        out.append(Product(name=name, day=day, bands=bands, mask=mask, mask_kind="scl", sensor="MSI",
                           platform="sentinel-2", fix=_fix(product),
                           extra={"baseline": meta["baseline"], "offset": offsets or default_offset}))
    return tuple(out)


def _band_file(files: list[str], band: str, res: int) -> str | None:
    pattern = re.compile(rf"/R{res}m/[^/]*_{band}_{res}m\.jp2$", re.IGNORECASE)
    hits = sorted(f for f in files if pattern.search(f))
    return hits[0] if hits else None


def _name_baseline(name: str) -> tuple[int, int] | None:
    m = SAFE_NAME.match(_stem(name) + ".SAFE")
    return (int(m.group(4)[:2]), int(m.group(4)[2:])) if m else None


def _day(meta: dict[str, object], name: str, product: Path) -> np.datetime64:
    start = meta["start"]
    if start:
        try:
            return np.datetime64(str(start)[:10], "D")
        except ValueError:
            pass
    day = safe_name_day(_stem(name) + ".SAFE")
    if day is None:
        raise ImageryError(f"Sentinel-2 product {product}: {METADATA} has no PRODUCT_START_TIME and the name does not "
                           f"say the date; {_fix(product)}")
    return day


def safe_products(path: Path) -> list[Product]:
    """Every granule of every SAFE product at ``path``, checked (headers only), by day then name."""
    products = [g for p in safe_products_in(path) for g in read_safe_product(p)]
    return sorted(products, key=lambda g: (g.day, g.name))
