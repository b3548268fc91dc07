"""Landsat Collection 2 Level-2 products (USGS) as a cube (a layout of :mod:`gmsense.sources.local`).

The layout: a product folder named by its product id (``LC08_L2SP_118027_20210614_20210622_02_T1``) holding
``<id>_SR_B<n>.TIF``, ``<id>_QA_PIXEL.TIF`` and ``<id>_MTL.txt`` (or ``_MTL.xml``); the ``.tar`` USGS
delivers (read in place through GDAL's ``/vsitar/``); or a folder holding several of either.

Metadata: ``DATE_ACQUIRED`` is the acquisition day; ``REFLECTANCE_MULT_BAND_n`` / ``REFLECTANCE_ADD_BAND_n``
of the ``LEVEL2_SURFACE_REFLECTANCE_PARAMETERS`` group scale each band (reflectance = DN x mult + add;
when the MTL names none, the documented 2.75e-5 and -0.2 of USGS LSDS-1619). DN 0 = fill (no data).

Bands per sensor (the product id's first four characters; USGS LSDS-1618 / LSDS-1619): Landsat 4-5 TM and
7 ETM+ ``SR_B1`` blue, ``SR_B2`` green, ``SR_B3`` red, ``SR_B4`` nir, ``SR_B5`` swir1, ``SR_B7`` swir2;
Landsat 8-9 OLI ``SR_B2`` blue .. ``SR_B7`` swir2. The ``sensor`` coordinate (TM, ETM+, OLI) stays on
the cube, so TM / ETM+ dates are made OLI-like by the setting ``local.harmonise``
(:mod:`gmsense.cube.harmonise`). Clear: no QA_PIXEL bit of fill, dilated cloud, cirrus, cloud, cloud
shadow or snow set (:data:`gmsense.sources._bands.QA_NOT_CLEAR_BITS`). Grid: the first product's 30 m
lattice (the finest red band, see :mod:`gmsense.sources.local.products`); products of another UTM zone
are warped onto it (bilinear reflectance, nearest QA_PIXEL).
"""

from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import numpy as np

from gmsense.cube.harmonise import ETM, OLI, SENSOR_OF_PREFIX, TM
from gmsense.errors import ImageryError
from gmsense.sources._bands import LANDSAT_C2_SR_OFFSET, LANDSAT_C2_SR_SCALE
from gmsense.sources.local.products import Product, band_header, compact_day, products_in

#: A Collection 2 Level-2 product id: sensor+satellite, level, path/row, acquired, processed, collection, tier.
PRODUCT_ID = re.compile(r"^(L[CTOE]0[4-9])_L2S[PR]_(\d{6})_(\d{8})_(\d{8})_02_(T1|T2|RT)$")
#: Common band name -> Landsat band number, by sensor.
BAND_NUMBERS = {
    TM: {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 7},
    ETM: {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 7},
    OLI: {"blue": 2, "green": 3, "red": 4, "nir": 5, "swir1": 6, "swir2": 7},
}
SR_GROUP = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"


def product_day(name: str) -> np.datetime64 | None:
    """The acquisition day in a product id (folder or ``.tar`` name), or None when it is no C2 L2 id."""
    m = PRODUCT_ID.match(name.removesuffix(".tar"))
    if not m:
        return None
    return compact_day(m.group(3))


def _is_product(p: Path) -> bool:
    if p.is_dir():
        return product_day(p.name) is not None
    return p.is_file() and p.suffix.lower() == ".tar" and product_day(p.name) is not None


def landsat_products_in(path: Path) -> list[Path]:
    """The product folders and tars at ``path`` (itself, or its entries), sorted by name."""
    return products_in(Path(path), _is_product)


def is_landsat(path: Path) -> bool:
    """True when ``path`` is a Landsat C2 L2 product (folder or tar) or holds some."""
    return bool(landsat_products_in(path))


def landsat_days(path: Path) -> np.ndarray:
    """Acquisition days from the product ids (no file opened)."""
    return np.array([product_day(p.name) for p in landsat_products_in(path)], dtype="datetime64[ns]")


def _fix(product: Path) -> str:
    return f"download Landsat product {product.name} again (complete), or remove it"


def parse_mtl(text: str) -> dict[str, dict[str, str]]:
    """An MTL file (``_MTL.txt`` ODL ``GROUP = ... / KEY = value``, or ``_MTL.xml``) as group -> key -> value
    (innermost group; values unquoted)."""
    groups: dict[str, dict[str, str]] = {}
    if text.lstrip().startswith("<"):
        root = ET.fromstring(text)
        for group in root.iter():
            for child in group:
                if len(child) == 0:
                    groups.setdefault(group.tag, {})[child.tag] = (child.text or "").strip()
        return groups
    stack: list[str] = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if key == "GROUP":
            stack.append(value)
        elif key == "END_GROUP":
            if stack:
                stack.pop()
        elif stack:
            groups.setdefault(stack[-1], {})[key] = value.strip('"')
    return groups


def _find(groups: dict[str, dict[str, str]], key: str, group: str | None = None) -> str | None:
    if group is not None:
        return groups.get(group, {}).get(key)
    return next((g[key] for g in groups.values() if key in g), None)


class _Files:
    """The files of a product folder or tar and how GDAL opens them."""

    def __init__(self, product: Path) -> None:
        self.product = product
        if product.is_dir():
            self.names = sorted(p.name for p in product.iterdir() if p.is_file())
        else:
            try:
                with tarfile.open(product) as t:
                    self.members = {Path(m.name).name: m.name for m in t.getmembers() if m.isfile()}
            except (tarfile.TarError, OSError) as exc:
                raise ImageryError(f"Landsat product {product} is not a readable tar ({exc}); {_fix(product)}") from exc
            self.names = sorted(self.members)

    def gdal_path(self, name: str) -> str:
        if self.product.is_dir():
            return str(self.product / name)
        return f"/vsitar/{self.product.resolve()}/{self.members[name]}"

    def read_text(self, name: str) -> str:
        if self.product.is_dir():
            return (self.product / name).read_text(encoding="utf-8")
        with tarfile.open(self.product) as t:
            handle = t.extractfile(self.members[name])
            assert handle is not None
            return handle.read().decode("utf-8")

    def ending(self, suffix: str) -> str | None:
        hits = [n for n in self.names if n.upper().endswith(suffix.upper())]
        return hits[0] if hits else None


def read_landsat_product(product: Path) -> Product:
    """Check a product folder or tar and read its headers (no pixels).

    Raises :class:`ImageryError` naming the product and what is missing or unreadable. Remembered in
    the process while the product keeps its size and modification time.
    """
    product = Path(product)
    st = product.stat()
    return _read_product(product, (str(product.resolve()), st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=1024)
def _read_product(product: Path, _signature: tuple) -> Product:
    pid = product.name.removesuffix(".tar")
    sensor = SENSOR_OF_PREFIX[pid[:4]]
    files = _Files(product)
    mtl = files.ending("_MTL.txt") or files.ending("_MTL.xml")
    if mtl is None:
        raise ImageryError(f"Landsat product {product} has no {pid}_MTL.txt (or _MTL.xml), which gives its "
                           f"acquisition date and reflectance scaling; {_fix(product)}")
    try:
        groups = parse_mtl(files.read_text(mtl))
    except (ET.ParseError, UnicodeDecodeError) as exc:
        raise ImageryError(f"Landsat metadata {product}/{mtl} cannot be parsed ({exc}); {_fix(product)}") from exc
    acquired = _find(groups, "DATE_ACQUIRED")
    try:
        day = np.datetime64(acquired, "D") if acquired else product_day(pid)
    except ValueError:
        day = None
    if day is None:
        raise ImageryError(f"Landsat metadata {product}/{mtl} has no valid DATE_ACQUIRED; {_fix(product)}")
    bands = {}
    missing = []
    for common, n in BAND_NUMBERS[sensor].items():
        name = files.ending(f"_SR_B{n}.TIF")
        if name is None:
            missing.append(f"{pid}_SR_B{n}.TIF ({common})")
            continue
        mult = _number(_find(groups, f"REFLECTANCE_MULT_BAND_{n}", SR_GROUP), LANDSAT_C2_SR_SCALE)
        add = _number(_find(groups, f"REFLECTANCE_ADD_BAND_{n}", SR_GROUP), LANDSAT_C2_SR_OFFSET)
        bands[common] = band_header(files.gdal_path(name), day, f"SR_B{n}", nodata=0.0, scaling=(mult, add),
                                    fix=_fix(product))
    if missing:
        raise ImageryError(f"Landsat product {product} ({sensor}) lacks surface reflectance file(s) "
                           f"{', '.join(missing)}; {_fix(product)}")
    qa = files.ending("_QA_PIXEL.TIF")
    if qa is None:
        raise ImageryError(f"Landsat product {product} has no {pid}_QA_PIXEL.TIF, needed to mask clouds; "
                           f"{_fix(product)}")
    mask = band_header(files.gdal_path(qa), day, "QA_PIXEL", nodata=None, scaling=None, fix=_fix(product))
    return Product(name=pid, day=day, bands=bands, mask=mask, mask_kind="qa_pixel", sensor=sensor,
                   platform="landsat", fix=_fix(product))


def _number(value: str | None, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        return default


def landsat_products(path: Path) -> list[Product]:
    """Every Landsat product at ``path``, checked (headers only), by day then name."""
    return sorted((read_landsat_product(p) for p in landsat_products_in(path)), key=lambda p: (p.day, p.name))
