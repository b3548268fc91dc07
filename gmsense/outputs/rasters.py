"""Per-licence rasters of the stored patches (Cloud-Optimized GeoTIFFs) and their STAC catalogue.

``gmsense export rasters --out DIR`` writes, for every analysed licence, one COG per layer on the
licence's own grid (the local CRS its patches were analysed in, at the scan's resolution: the
``resolution_m`` its analysis recorded, else 10 m), plus ``DIR/catalog.json``: a STAC catalogue
(pystac, relative links, so the folder can be moved or served as it is) with one item per licence,
one asset per layer, the class code table and the provenance of the scan.

**Patch-level, not per-pixel breaks.** The store keeps patches (polygons with their dates, class
and metrics), not the per-pixel breaks of the analysis (those come from
``gmsense.pipeline.analyse_cube(..., keep_breaks=True)`` or :func:`gmsense.analyse`, and are not
stored). These rasters are the stored patches burnt onto the licence's grid: every pixel whose
centre falls inside a patch carries *that patch's* id, class, dates and magnitude (a patch too
small or thin to hold a pixel centre is given the pixel under a point inside it). Where patches
overlap (ground disturbed again) the later first detection is on top.

Layers (file ``<licence>_<layer>.tif``; 0 or NaN is "no patch" and is the file's nodata):

=================  =======  =================================================================
``patch_id``       int32    the number N of patch ``<licence>-PNNNN`` (the item's
                            ``gmsense:patch_ids`` maps every number to the full id)
``class``          uint8    :data:`CLASS_CODES` (also in each item's ``gmsense:class_codes``)
``first_detected`` int32    date first detected, YYYYMMDD
``confirmed_on``   int32    date confirmed, YYYYMMDD
``magnitude``      float32  the patch's mean break magnitude (NaN: none)
=================  =======  =================================================================

Every COG has internal overviews (nearest neighbour for codes and dates, average for magnitude),
so a GIS or a tile server reads a coarse view without the full file.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from affine import Affine
from shapely import wkt
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

from gmsense.errors import InputError
from gmsense.files import atomic_folder
from gmsense.geo.grid import Grid, crop_grid
from gmsense.geo.sites import WGS84, reproject_geometry, utm_crs_for
from gmsense.records import DISTURBANCE_CLASSES
from gmsense.store import PatchRow, ScanRow, ScanUnitRow, SiteRow, Store

#: The ``class`` raster's codes: 0 is no patch, then every value ``disturbance_class`` takes
#: (fixed: a new class gets a new code, existing codes never change).
CLASS_CODES: dict[int, str] = {0: "none", 1: "trench", 2: "pad", 3: "track", 4: "clearing", 5: "natural",
                               6: "uncertain"}
if set(DISTURBANCE_CLASSES) - set(CLASS_CODES.values()):  # pragma: no cover - a guard for developers
    raise RuntimeError("gmsense.outputs.rasters.CLASS_CODES lacks a disturbance class")
DEFAULT_RESOLUTION_M = 10.0
CATALOG_ID = "gmsense-rasters"
#: The note every item carries on what its pixels are.
PATCH_LEVEL_NOTE = ("stored patches rasterised on the licence grid (pixel centre inside the patch): patch-level "
                    "values, not per-pixel breaks; where patches overlap the later first detection is on top")


@dataclass(frozen=True)
class Layer:
    name: str
    dtype: str
    nodata: float
    resampling: str  # of the overviews
    title: str
    description: str


LAYERS = (
    Layer("patch_id", "int32", 0, "NEAREST", "Patch number",
          "N of patch <licence>-PNNNN (see gmsense:patch_ids); 0 = no patch"),
    Layer("class", "uint8", 0, "NEAREST", "Disturbance class code",
          "code of the patch's disturbance_class (see gmsense:class_codes); 0 = no patch"),
    Layer("first_detected", "int32", 0, "NEAREST", "First detected (YYYYMMDD)",
          "date the patch was first detected, as the integer YYYYMMDD; 0 = no patch"),
    Layer("confirmed_on", "int32", 0, "NEAREST", "Confirmed (YYYYMMDD)",
          "date the patch was confirmed, as the integer YYYYMMDD; 0 = none"),
    Layer("magnitude", "float32", math.nan, "AVERAGE", "Break magnitude",
          "the patch's mean break magnitude (drop of the detection index); NaN = no patch"),
)


@dataclass
class RasterExport:
    """What :func:`export_rasters` wrote: the catalogue, and the licences with and without rasters."""

    catalog: Path
    licences: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # licence -> why it has no rasters
    patches: int = 0


def date_code(text: str | None) -> int:
    """``YYYY-MM-DD`` as the integer YYYYMMDD; 0 for no date."""
    if not text:
        return 0
    return int(str(text)[:10].replace("-", ""))


def safe_name(site_id: str) -> str:
    """A file and folder name for a licence id (other characters become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", site_id).strip("._") or "licence"
    return name if name == site_id else f"{name}-{hash_text(site_id) % 10**6:06d}"


def hash_text(text: str) -> int:
    """A stable (not per-process) hash of ``text``."""
    import hashlib

    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16)


def check_rasters_target(out: Path | str) -> Path:
    """``out`` as a Path, or an InputError when writing the rasters there would replace something
    that is not an earlier rasters export (a file, a link, a folder of other files)."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"refusing to write rasters into {out}: it exists and is not a folder; "
                         "give a new folder (or an earlier `gmsense export rasters` folder)")
    if out.is_dir() and any(out.iterdir()):
        catalog = out / "catalog.json"
        try:
            earlier = json.loads(catalog.read_text()).get("id") == CATALOG_ID
        except (OSError, ValueError, AttributeError):
            earlier = False
        if not earlier:
            raise InputError(f"refusing to write rasters into {out}: the folder holds other files (it would be "
                             "replaced); give a new or empty folder, or an earlier `gmsense export rasters` folder")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"cannot write {out}: {out.parent} is not a folder; choose another output path")
    return out


def _patch_numbers(patches: Sequence[PatchRow], site_id: str) -> list[int]:
    """The number of each patch (``<site>-PNNNN`` -> NNNN); 1..n in order when ids do not say it."""
    numbers = []
    for row in patches:
        match = re.fullmatch(re.escape(site_id) + r"-P(\d+)", row.patch_id)
        numbers.append(int(match.group(1)) if match else -1)
    if min(numbers, default=1) < 1 or len(set(numbers)) != len(numbers) or max(numbers, default=0) >= 2**31:
        return list(range(1, len(patches) + 1))
    return numbers


def licence_crs(site: SiteRow, patches: Sequence[PatchRow], unit: ScanUnitRow | None) -> pyproj.CRS:
    """The CRS the licence was analysed in: its patches' (the most common), else its last
    analysis's, else its local UTM zone."""
    if patches:
        return pyproj.CRS.from_user_input(Counter(p.local_crs for p in patches).most_common(1)[0][0])
    if unit is not None and unit.stats.get("crs"):
        return pyproj.CRS.from_user_input(unit.stats["crs"])
    centre = wkt.loads(site.geometry_wkt).centroid
    return utm_crs_for(centre.x, centre.y)


def licence_grid(site: SiteRow, patches: Sequence[PatchRow], crs: pyproj.CRS, resolution_m: float) -> Grid:
    """The grid of the licence's rasters: the licence and every patch (patches may reach outside
    it), on the lattice of multiples of ``resolution_m`` in ``crs``, one pixel of margin."""
    shapes = [reproject_geometry(wkt.loads(site.geometry_wkt), WGS84, crs),
              *(_local(p, crs) for p in patches)]
    bounds = np.array([g.bounds for g in shapes if not g.is_empty])
    extent = (bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())
    return crop_grid(crs, Affine(resolution_m, 0, 0, 0, -resolution_m, 0), extent, pad=1)


def _local(patch: PatchRow, crs: pyproj.CRS) -> BaseGeometry:
    return reproject_geometry(wkt.loads(patch.local_wkt), pyproj.CRS.from_user_input(patch.local_crs), crs)


def rasterise(patches: Sequence[PatchRow], numbers: Sequence[int], grid: Grid) -> dict[str, np.ndarray]:
    """The layers of :data:`LAYERS` for ``patches`` on ``grid`` (see the module's notes)."""
    from rasterio.features import rasterize

    order = sorted(range(len(patches)), key=lambda i: (patches[i].first_detected or "", patches[i].patch_id))
    geoms = [_local(patches[i], grid.crs) for i in order]
    index = np.zeros(grid.shape, dtype="int32")  # 1 + position in ``order``; 0 = no patch
    shapes = [(g, k + 1) for k, g in enumerate(geoms) if not g.is_empty]
    if shapes:
        index = rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0, dtype="int32")
    present = set(np.unique(index).tolist())
    inverse = ~grid.transform
    for k, geom in enumerate(geoms):  # a patch holding no pixel centre still shows, at one pixel
        if k + 1 in present or geom.is_empty:
            continue
        col, row = (math.floor(v) for v in inverse * geom.representative_point().coords[0])
        if 0 <= row < grid.height and 0 <= col < grid.width and index[row, col] == 0:
            index[row, col] = k + 1
    codes = {name: code for code, name in CLASS_CODES.items()}
    rows = [patches[i] for i in order]
    tables = {
        "patch_id": np.array([0, *(numbers[i] for i in order)], dtype="int32"),
        "class": np.array([0, *(codes.get(r.disturbance_class, 0) for r in rows)], dtype="uint8"),
        "first_detected": np.array([0, *(date_code(r.first_detected) for r in rows)], dtype="int32"),
        "confirmed_on": np.array([0, *(date_code(r.confirmed_on) for r in rows)], dtype="int32"),
        "magnitude": np.array([math.nan, *(_magnitude(r) for r in rows)], dtype="float32"),
    }
    return {name: table[index] for name, table in tables.items()}


def _magnitude(row: PatchRow) -> float:
    value = (row.metrics or {}).get("magnitude")
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def overview_count(grid: Grid) -> int:
    """Overview levels down to about 16 pixels on the longer side (at least one)."""
    return max(1, int(math.log2(max(grid.width, grid.height) / 16)) if max(grid.shape) > 32 else 1)


def cog_bytes(array: np.ndarray, grid: Grid, layer: Layer, tags: dict[str, str]) -> bytes:
    """``array`` as a Cloud-Optimized GeoTIFF (GDAL's COG driver; DEFLATE, 256-pixel tiles,
    :func:`overview_count` internal overviews), in memory."""
    from rasterio.io import MemoryFile

    profile = {"driver": "COG", "width": grid.width, "height": grid.height, "count": 1, "dtype": layer.dtype,
               "crs": grid.crs.to_wkt(), "transform": grid.transform, "nodata": layer.nodata,
               "BLOCKSIZE": 256, "COMPRESS": "DEFLATE", "OVERVIEWS": "AUTO",
               "OVERVIEW_COUNT": overview_count(grid), "OVERVIEW_RESAMPLING": layer.resampling}
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(array, 1)
            dst.set_band_description(1, layer.title)
            dst.update_tags(**tags)
            dst.update_tags(1, gmsense_layer=layer.name, description=layer.description)
        return memory.read()


def _footprint(grid: Grid) -> BaseGeometry:
    """The grid's outline in EPSG:4326 (edges densified, so it follows the projection)."""
    outline = box(*grid.bounds).segmentize(max(grid.bounds[2] - grid.bounds[0], grid.bounds[3] - grid.bounds[1]) / 8)
    return reproject_geometry(outline, grid.crs, WGS84)


def _when(unit: ScanUnitRow | None, patches: Sequence[PatchRow], scan: ScanRow | None) -> dict[str, Any]:
    """The item's time: the analysed window (its first and last acquisition), else its patches'."""
    stats = unit.stats if unit is not None else {}
    start = stats.get("first_date") or min((p.first_detected for p in patches if p.first_detected), default=None)
    end = stats.get("last_date") or max((p.last_seen for p in patches if p.last_seen), default=None)
    if start and end:
        return {"datetime": None, "start_datetime": _iso(start), "end_datetime": _iso(end)}
    moment = scan.finished_at if scan is not None and scan.finished_at else datetime.now(UTC)
    return {"datetime": moment.replace(tzinfo=moment.tzinfo or UTC)}


def _iso(day: str) -> datetime:
    return datetime.fromisoformat(str(day)[:10]).replace(tzinfo=UTC)


def _item(site: SiteRow, name: str, grid: Grid, patches: Sequence[PatchRow], numbers: Sequence[int],
          unit: ScanUnitRow | None, scan: ScanRow | None, resolution_m: float) -> Any:
    import pystac
    from pystac.extensions.projection import ProjectionExtension

    from gmsense import __version__

    footprint = _footprint(grid)
    when = _when(unit, patches, scan)
    properties = {
        "title": f"gmsense patches of licence {site.site_id}",
        "description": PATCH_LEVEL_NOTE,
        "gmsense:site_id": site.site_id,
        "gmsense:level": "patch",
        "gmsense:resolution_m": resolution_m,
        "gmsense:class_codes": {str(code): label for code, label in CLASS_CODES.items()},
        "gmsense:patch_ids": {str(n): p.patch_id for n, p in zip(numbers, patches, strict=True)},
        "gmsense:date_encoding": "int32 YYYYMMDD, 0 = none",
        # provenance: the licence's newest analysis, and the scans its patches were last updated by
        "gmsense:scan_id": scan.id if scan is not None else None,
        "gmsense:gmsense_version": scan.gmsense_version if scan is not None else None,
        "gmsense:config_hash": scan.config_hash if scan is not None else None,
        "gmsense:detector": scan.detector if scan is not None else None,
        "gmsense:model_version": scan.model_version if scan is not None else None,
        "gmsense:imagery_source": scan.source if scan is not None else None,
        "gmsense:patch_scan_ids": sorted({p.updated_scan_id for p in patches}),
        "gmsense:exported_by": f"gmsense {__version__}",
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    if "start_datetime" in when:
        properties |= {"start_datetime": when["start_datetime"].isoformat().replace("+00:00", "Z"),
                       "end_datetime": when["end_datetime"].isoformat().replace("+00:00", "Z")}
    item = pystac.Item(id=site.site_id, geometry=mapping(footprint), bbox=list(footprint.bounds),
                       datetime=when.get("datetime"), properties=properties)
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = grid.crs.to_epsg()
    projection.code = f"EPSG:{epsg}" if epsg else None
    if epsg is None:
        projection.wkt2 = grid.crs.to_wkt()
    projection.shape = [grid.height, grid.width]
    projection.transform = list(grid.transform)[:6]
    for layer in LAYERS:
        item.add_asset(layer.name, pystac.Asset(
            href=f"./{name}_{layer.name}.tif", media_type=pystac.MediaType.COG, roles=["data"], title=layer.title,
            description=layer.description,
            extra_fields={"gmsense:dtype": layer.dtype, "gmsense:nodata": "nan" if math.isnan(layer.nodata)
                          else int(layer.nodata)}))
    return item


def export_rasters(store: Store, out: Path | str, site_ids: Sequence[str] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> RasterExport:
    """Write the rasters and the STAC catalogue of the licences ``site_ids`` (default: all) to the
    folder ``out``, atomically (a failure leaves nothing; an earlier export there is replaced only
    once the new one is whole). Licences never analysed get no rasters (listed in ``skipped``).

    Raises InputError, before anything is written, when the store holds no licence, an id names
    no stored licence, or no selected licence has been analysed."""
    import pystac

    out = check_rasters_target(out)
    sites = {row.site_id: row for row in store.site_rows()}
    if not sites:
        raise InputError(f"the store at {store.location} holds no licence yet; run `gmsense scan` first")
    unknown = [s for s in (site_ids or []) if s not in sites]
    if unknown:
        raise InputError(f"no licence {', '.join(map(repr, unknown))} in the store; stored licences: "
                         f"{', '.join(sorted(sites)[:10])}{' ...' if len(sites) > 10 else ''}")
    chosen = list(dict.fromkeys(site_ids)) if site_ids else sorted(sites)
    scans = {s.id: s for s in store.scans()}
    by_site: dict[str, list[PatchRow]] = {}
    for row in store.patch_rows():
        by_site.setdefault(row.site_id, []).append(row)
    units = {site_id: store.last_unit(site_id) for site_id in chosen}
    result = RasterExport(catalog=out / "catalog.json")
    todo = []
    for site_id in chosen:
        if units[site_id] is None and not by_site.get(site_id):
            result.skipped[site_id] = "never analysed"
        else:
            todo.append(site_id)
    if not todo:
        raise InputError(f"no analysed licence to export ({', '.join(chosen[:10])} never scanned); "
                         "run `gmsense scan` first")
    catalog = pystac.Catalog(id=CATALOG_ID, title="gmsense rasters",
                             description="Per-licence rasters of the patches gmsense found (" + PATCH_LEVEL_NOTE
                             + "), as Cloud-Optimized GeoTIFFs.",
                             extra_fields={"gmsense:class_codes": {str(c): n for c, n in CLASS_CODES.items()}})
    with atomic_folder(out) as tmp:
        names: set[str] = set()
        for done, site_id in enumerate(todo):
            if progress is not None:
                progress(site_id, done, len(todo))
            site, patches, unit = sites[site_id], by_site.get(site_id, []), units[site_id]
            name = safe_name(site_id)
            while name in names:
                name += "_"
            names.add(name)
            resolution = float((unit.stats if unit is not None else {}).get("resolution_m") or DEFAULT_RESOLUTION_M)
            grid = licence_grid(site, patches, licence_crs(site, patches, unit), resolution)
            numbers = _patch_numbers(patches, site_id)
            arrays = rasterise(patches, numbers, grid)
            scan = scans.get(unit.scan_id) if unit is not None else None
            folder = tmp / name
            folder.mkdir()
            tags = {"gmsense_site_id": site_id, "gmsense_scan_id": str(scan.id if scan else ""),
                    "gmsense_level": "patch", "gmsense_note": PATCH_LEVEL_NOTE}
            for layer in LAYERS:
                extra = {}
                if layer.name == "class":
                    extra["gmsense_class_codes"] = json.dumps({str(c): n for c, n in CLASS_CODES.items()})
                if layer.name == "patch_id":
                    extra["gmsense_patch_ids"] = json.dumps({str(n): p.patch_id for n, p in
                                                             zip(numbers, patches, strict=True)})
                (folder / f"{name}_{layer.name}.tif").write_bytes(
                    cog_bytes(arrays[layer.name], grid, layer, {**tags, **extra}))
            item = _item(site, name, grid, patches, numbers, unit, scan, resolution)
            catalog.add_item(item)
            item.set_self_href(str(folder / f"{name}.json"))
            result.licences.append(site_id)
            result.patches += len(patches)
        catalog.set_self_href(str(tmp / "catalog.json"))
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    if progress is not None:
        progress("", len(todo), len(todo))
    return result
