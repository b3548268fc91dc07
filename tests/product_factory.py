"""Small valid products of the layouts imagery is delivered in, written into a test's folder.

Sentinel-2 L2A SAFE (JPEG 2000 bands written losslessly with GDAL's JP2OpenJPEG driver, ``MTD_MSIL2A.xml``),
Landsat Collection 2 Level-2 (``SR_B*.TIF``, ``QA_PIXEL.TIF``, ``_MTL.txt`` or ``_MTL.xml``) and STAC
(a static catalogue or ItemCollection written with pystac), from arrays of DNs, and
:func:`repackage_scene` to turn a synthetic scene (:func:`gmsense.sources.synthetic.io.write_scene`)
into any of them.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pyproj
import pystac
import rasterio
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.shutil import copy as gdal_copy

SAFE_10M = ("B02", "B03", "B04", "B08")
SAFE_20M = ("B11", "B12")
S2_COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16", "B12": "swir22"}
BAND_IDS = {"B02": 1, "B03": 2, "B04": 3, "B08": 7, "B11": 11, "B12": 12}
OLI_SR = {"blue": 2, "green": 3, "red": 4, "nir": 5, "swir1": 6, "swir2": 7}
TM_SR = {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 7}


def write_raster(path: Path, array: np.ndarray, crs: pyproj.CRS, transform: Affine, *, driver: str = "GTiff",
                 nodata: float | None = None) -> Path:
    """One band; JP2 through a lossless copy (JP2OpenJPEG writes by copy only)."""
    profile = {"driver": "GTiff", "width": array.shape[1], "height": array.shape[0], "count": 1,
               "dtype": str(array.dtype), "crs": crs.to_wkt(), "transform": transform, "nodata": nodata}
    path.parent.mkdir(parents=True, exist_ok=True)
    if driver == "GTiff":
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array, 1)
        return path
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(array, 1)
        with memory.open() as src:
            gdal_copy(src, path, driver=driver, QUALITY=100, REVERSIBLE="YES")
    return path


def safe_name(day: str, tile: str = "52TDM", baseline: str = "04.00", mission: str = "S2A") -> str:
    d = day.replace("-", "")
    return f"{mission}_MSIL2A_{d}T025551_N{baseline.replace('.', '')}_R032_T{tile}_{d}T060237.SAFE"


def mtd_xml(day: str, baseline: str, offsets: dict[str, float] | None, quantification: float = 10000) -> str:
    offset_list = "".join(f'<BOA_ADD_OFFSET band_id="{BAND_IDS[b]}">{v:g}</BOA_ADD_OFFSET>'
                          for b, v in (offsets or {}).items())
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info><Product_Info>
    <PRODUCT_START_TIME>{day}T02:55:51.024Z</PRODUCT_START_TIME>
    <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
    <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
  </Product_Info>
  <Product_Image_Characteristics>
    <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">{quantification:g}</BOA_QUANTIFICATION_VALUE>
    </QUANTIFICATION_VALUES_LIST>
    {"<BOA_ADD_OFFSET_VALUES_LIST>" + offset_list + "</BOA_ADD_OFFSET_VALUES_LIST>" if offsets else ""}
  </Product_Image_Characteristics></n1:General_Info>
</n1:Level-2A_User_Product>
"""


def write_safe(folder: Path, day: str, dn10: dict[str, np.ndarray], dn20: dict[str, np.ndarray], scl20: np.ndarray,
               crs: pyproj.CRS, transform10: Affine, *, tile: str = "52TDM", baseline: str = "04.00",
               offsets: dict[str, float] | None = None, as_zip: bool = False, omit: Sequence[str] = (),
               metadata: bool = True) -> Path:
    """A Sentinel-2 L2A SAFE product (one granule) of uint16 DN arrays; 20 m arrays at half the 10 m size.

    ``offsets``: BOA_ADD_OFFSET per band written into the metadata (None: none written). ``omit``: band
    names (``B04``, ``SCL``) left out. ``as_zip``: the zip of the SAFE folder (the folder removed).
    """
    name = safe_name(day, tile, baseline)
    root = folder / name
    d = day.replace("-", "")
    img = root / "GRANULE" / f"L2A_T{tile}_A031234_{d}T025551" / "IMG_DATA"
    transform20 = transform10 @ Affine.scale(2)
    for band, arr in dn10.items():
        if band not in omit:
            write_raster(img / "R10m" / f"T{tile}_{d}T025551_{band}_10m.jp2", arr, crs, transform10,
                         driver="JP2OpenJPEG")
    for band, arr in {**dn20, "SCL": scl20}.items():
        if band not in omit:
            write_raster(img / "R20m" / f"T{tile}_{d}T025551_{band}_20m.jp2", arr, crs, transform20,
                         driver="JP2OpenJPEG")
    if metadata:
        (root / "MTD_MSIL2A.xml").write_text(mtd_xml(day, baseline, offsets))
    if not as_zip:
        return root
    target = folder / (name.removesuffix(".SAFE") + ".zip")
    with zipfile.ZipFile(target, "w") as z:
        for p in sorted(root.rglob("*")):
            z.write(p, p.relative_to(folder).as_posix())
    _remove(root)
    return target


def _remove(root: Path) -> None:
    for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    root.rmdir()


def landsat_id(day: str, prefix: str = "LC08", pathrow: str = "118027") -> str:
    return f"{prefix}_L2SP_{pathrow}_{day.replace('-', '')}_{day.replace('-', '')[:6]}28_02_T1"


def mtl_text(pid: str, day: str, numbers: Sequence[int], mult: float, add: float, *, xml: bool) -> str:
    spacecraft = {"LC08": "LANDSAT_8", "LC09": "LANDSAT_9", "LE07": "LANDSAT_7", "LT05": "LANDSAT_5"}[pid[:4]]
    l1 = {f"REFLECTANCE_MULT_BAND_{n}": "2.0E-05" for n in numbers} | {f"REFLECTANCE_ADD_BAND_{n}": "-0.1"
                                                                       for n in numbers}
    l2 = {f"REFLECTANCE_MULT_BAND_{n}": f"{mult:.4E}" for n in numbers} | {f"REFLECTANCE_ADD_BAND_{n}": f"{add:g}"
                                                                           for n in numbers}
    groups = {
        "PRODUCT_CONTENTS": {"LANDSAT_PRODUCT_ID": f'"{pid}"', "PROCESSING_LEVEL": '"L2SP"'},
        "IMAGE_ATTRIBUTES": {"SPACECRAFT_ID": f'"{spacecraft}"', "DATE_ACQUIRED": day},
        # The Level-1 TOA rescaling comes first in real MTLs, with the same key names: it must not be used.
        "LEVEL1_RADIOMETRIC_RESCALING": l1,
        "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": l2,
    }
    if xml:
        body = "".join(f"<{g}>" + "".join(f"<{k}>{v.strip(chr(34))}</{k}>" for k, v in kv.items()) + f"</{g}>"
                       for g, kv in groups.items())
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<LANDSAT_METADATA_FILE>{body}</LANDSAT_METADATA_FILE>\n'
    lines = ["GROUP = LANDSAT_METADATA_FILE"]
    for g, kv in groups.items():
        lines += [f"  GROUP = {g}", *[f"    {k} = {v}" for k, v in kv.items()], f"  END_GROUP = {g}"]
    return "\n".join([*lines, "END_GROUP = LANDSAT_METADATA_FILE", "END", ""])


def write_landsat(folder: Path, day: str, sr: dict[str, np.ndarray], qa: np.ndarray, crs: pyproj.CRS,
                  transform: Affine, *, prefix: str = "LC08", pathrow: str = "118027", mult: float = 2.75e-5,
                  add: float = -0.2, mtl: str | None = "txt", as_tar: bool = False, omit: Sequence[str] = ()) -> Path:
    """A Landsat C2 L2 product of uint16 DNs keyed by common name (numbered per sensor), QA_PIXEL and an MTL."""
    pid = landsat_id(day, prefix, pathrow)
    root = folder / pid
    numbers = TM_SR if prefix in ("LT04", "LT05", "LE07") else OLI_SR
    for common, arr in sr.items():
        if common not in omit:
            write_raster(root / f"{pid}_SR_B{numbers[common]}.TIF", arr, crs, transform, nodata=0)
    if "QA_PIXEL" not in omit:
        write_raster(root / f"{pid}_QA_PIXEL.TIF", qa, crs, transform, nodata=1)
    if mtl:
        (root / f"{pid}_MTL.{mtl}").write_text(mtl_text(pid, day, sorted(numbers.values()), mult, add,
                                                        xml=mtl == "xml"))
    if not as_tar:
        return root
    target = folder / f"{pid}.tar"
    with tarfile.open(target, "w") as t:
        for p in sorted(root.iterdir()):
            t.add(p, arcname=p.name)  # as USGS delivers them: the files at the tar's root
    _remove(root)
    return target


def write_stac(folder: Path, items: Sequence[dict], *, kind: str = "catalog", relative: bool = True) -> Path:
    """A static catalogue (``catalog.json`` + item folders) or an ItemCollection file of ``items``.

    Each item: ``id``, ``datetime`` (ISO), ``bbox`` (EPSG:4326), ``assets`` {key: (path, common name or None,
    {raster fields})}, optional ``properties``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stac_items = []
    for spec in items:
        w, s, e, n = spec["bbox"]
        item = pystac.Item(id=spec["id"], geometry={"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n],
                                                                                          [w, s]]]},
                           bbox=[w, s, e, n], datetime=datetime.fromisoformat(spec["datetime"]),
                           properties=dict(spec.get("properties", {})))
        for key, (path, common, raster) in spec["assets"].items():
            extra = {}
            if common:
                extra["eo:bands"] = [{"name": key, "common_name": common}]
            if raster:
                extra["raster:bands"] = [raster]
            item.add_asset(key, pystac.Asset(href=str(path), media_type=pystac.MediaType.COG, roles=["data"],
                                             extra_fields=extra))
        stac_items.append(item)
    if kind == "items":
        target = folder / "items.geojson"
        collection = pystac.ItemCollection(stac_items)
        data = collection.to_dict()
        if relative:
            for feature in data["features"]:
                for asset in feature["assets"].values():
                    asset["href"] = str(Path(asset["href"]).relative_to(folder))
        target.write_text(json.dumps(data))
        return target
    catalog = pystac.Catalog(id="test-imagery", description="test imagery")
    for item in stac_items:
        catalog.add_item(item)
    catalog.normalize_hrefs(str(folder))
    catalog.make_all_asset_hrefs_relative() if relative else catalog.make_all_asset_hrefs_absolute()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED if relative else pystac.CatalogType.ABSOLUTE_PUBLISHED)
    return folder / "catalog.json"


def repackage_scene(scene: Path, out: Path, layout: str) -> Path:
    """A synthetic scene's dated GeoTIFFs (reflectance x 1e-4, SCL) as ``safe`` products (zipped every other
    date, baseline 04.00 offsets), ``landsat`` OLI products (tars every other date, QA_PIXEL from SCL) or a
    ``stac`` catalogue of per-band COGs. Returns the imagery path to scan."""
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for k, tif in enumerate(sorted(scene.glob("????-??-??_*.tif"))):
        day = tif.name[:10]
        with rasterio.open(tif) as src:
            names = list(src.descriptions)
            data = {name: src.read(i + 1) for i, name in enumerate(names)}
            refl = {name: data[name].astype("float64") * src.scales[i] for i, name in enumerate(names)}
            crs, transform = pyproj.CRS.from_wkt(src.crs.to_wkt()), src.transform
        h, w = (s - s % 2 for s in data["SCL"].shape)
        if layout == "safe":
            dn = {b: np.clip(np.round(refl[b][:h, :w] * 1e4) + 1000, 1, 65535).astype("uint16") for b in SAFE_10M}
            dn20 = {b: np.clip(np.round(refl[b][:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) * 1e4) + 1000,
                               1, 65535).astype("uint16") for b in SAFE_20M if b in refl}
            scl = data["SCL"][:h:2, :w:2].astype("uint8")
            write_safe(out, day, dn, dn20, scl, crs, transform, offsets=dict.fromkeys([*SAFE_10M, *SAFE_20M], -1000),
                       as_zip=k % 2 == 1)
        elif layout == "landsat":
            sr = {c: np.clip(np.round((refl[b] + 0.2) / 2.75e-5), 1, 65535).astype("uint16")
                  for b, c in zip((*SAFE_10M, *SAFE_20M), OLI_SR, strict=True) if b in refl}
            qa = np.where(np.isin(data["SCL"], (3, 8, 9, 10)), 1 << 3, 1 << 6).astype("uint16")
            write_landsat(out, day, sr, qa, crs, transform, as_tar=k % 2 == 1)
        else:
            bands = out / "data" / day
            assets = {}
            for b in (*SAFE_10M, *SAFE_20M):
                if b in data:
                    assets[b] = (write_raster(bands / f"{b}.tif", data[b], crs, transform, nodata=0), S2_COMMON[b],
                                 {"scale": 1e-4, "offset": 0.0, "nodata": 0})
            assets["SCL"] = (write_raster(bands / "SCL.tif", data["SCL"], crs, transform), None, None)
            lonlat = pyproj.Transformer.from_crs(crs, 4326, always_xy=True).transform_bounds(
                *_bounds(transform, data["SCL"].shape))
            items.append({"id": f"S2A_{day}", "datetime": f"{day}T03:00:00+00:00", "bbox": list(lonlat),
                          "assets": assets, "properties": {"platform": "sentinel-2a", "instruments": ["msi"]}})
    return write_stac(out, items) if layout == "stac" else out


def _bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = shape
    x0, y0 = transform.c, transform.f
    x1, y1 = x0 + transform.a * w, y0 + transform.e * h
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
