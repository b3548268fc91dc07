"""Imagery sources. Each returns the cube contract of DESIGN.md for one licence's monitoring area.

A source is anything with a ``name`` and ``load(site, region, start, end) -> xarray.Dataset``
(see :class:`Source`); :func:`get_source` builds one by name. Sources must be picklable: they
travel to dask workers. A source may also ``describe`` what it would deliver (pixel size, dates,
bands: an :class:`~gmsense.sources.shape.ImageryShape`) without reading pixels; the scan planner
sizes its work units from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import numpy as np
import xarray as xr
from shapely.geometry.base import BaseGeometry

from gmsense.config import Settings
from gmsense.errors import InputError
from gmsense.geo.sites import Site
from gmsense.sources.shape import (
    LANDSAT_REVISIT_DAYS,
    SENTINEL2_REVISIT_DAYS,
    ImageryShape,
    shape_from_cadence,
    shape_from_times,
)

SOURCE_NAMES = ("synthetic", "local", "earthengine")
#: How fast the synthetic source draws a scene, pixels x dates per second on one core: 2.4-3.0
#: million for the 10 m demo licences (about 42,000 px x 86 dates in 1.1-1.6 s), 1.5-2.1 million
#: for the same licences at 30 m (fixed costs weigh more), measured with ``taskset -c 1`` on this
#: 2-core machine (2026-11-29).
SYNTHETIC_PIXEL_DATES_PER_S = 2.5e6


class Source(Protocol):
    name: str

    def load(self, site: Site, region: BaseGeometry, start: str | None, end: str | None) -> xr.Dataset:
        """The cube over ``region`` (in ``site.crs``), dates within ``start..end`` (inclusive)."""
        ...

    def latest_date(self, site: Site, start: str | None, end: str | None) -> str | None:
        """The newest acquisition date available for ``site`` within ``start..end`` (ISO), cheaply;
        None when the source cannot tell without loading (then the licence is always scanned)."""
        ...

    def describe(self, site: Site, start: str | None, end: str | None) -> ImageryShape | None:
        """Optional, cheap (no pixels read): pixel size, dates and bands the cube of ``site`` within
        ``start..end`` would have; None when unknown (the planner then assumes Sentinel-2 at 10 m)."""
        ...


#: The last synthetic world made in this process: the tiles of a licence (each read twice by a
#: scan, gmsense.batch.tiles) cut the same world, which costs more to make than to cut.
_LAST_WORLD: dict[tuple[str, ...], xr.Dataset] = {}


def _synthetic_world(site: Site, area: BaseGeometry, settings: Settings) -> xr.Dataset:
    """:func:`gmsense.sources.synthetic.synthesize`'s cube for ``site`` over ``area``, remembered."""
    from gmsense.sources.synthetic import synthesize

    key = (site.site_id, area.wkb_hex, site.geometry.wkb_hex, site.crs.to_string(),
           json.dumps(site.attrs, sort_keys=True, default=str), settings.synthetic.model_dump_json())
    if key not in _LAST_WORLD:
        _LAST_WORLD.clear()
        _LAST_WORLD[key] = synthesize(site, area, settings.synthetic)[0]
    return _LAST_WORLD[key]


def _check_hemisphere(cube: xr.Dataset, settings: Settings) -> None:
    """Warn when a southern synthetic world is scanned with a growing season that does not run across
    New Year (its green season is November to March: the scan would see its shoulders only)."""
    import warnings

    from gmsense.sources.synthetic import scan_settings

    domain = str(cube.attrs.get("domain", "classic"))
    if "+south" in domain and not settings.season.crosses_new_year:
        season = scan_settings(settings, domain).season
        warnings.warn(f"synthetic world {domain} is on the southern calendar but the growing season is months "
                      f"{settings.season.start_month}-{settings.season.end_month}; scan it with season "
                      f"start_month {season.start_month}, end_month {season.end_month}", UserWarning, stacklevel=3)


@dataclass(frozen=True)
class SyntheticSource:
    """The embedded default: a seeded synthetic world (see gmsense.sources.synthetic)."""

    settings: Settings
    name: str = "synthetic"

    def load(self, site: Site, region: BaseGeometry, start: str | None, end: str | None) -> xr.Dataset:
        """The world is made for the licence's whole monitoring area (its layout, events and sky
        depend on it) and cut to ``region``'s bounds, so a tile sees the same world as the whole."""
        whole = site.buffered(self.settings.sites.buffer_m)
        area = whole if whole.covers(region) else whole.union(region)
        cube = _synthetic_world(site, area, self.settings).sel(time=slice(start, end))
        _check_hemisphere(cube, self.settings)
        if region.covers(whole):
            return cube
        minx, miny, maxx, maxy = region.bounds
        half = float(cube.attrs["resolution_m"]) / 2  # the domain may set the pixel size
        return cube.sel(x=slice(minx - half, maxx + half), y=slice(maxy + half, miny - half))

    def latest_date(self, site: Site, start: str | None, end: str | None) -> str | None:
        return None

    def describe(self, site: Site, start: str | None, end: str | None) -> ImageryShape:
        """The scene's own dates and its domain's pixel size and bands (six float32 bands, ``clear``
        and the uint8 ``scl``)."""
        from gmsense.sources.synthetic import scene_dates

        times, domain = scene_dates(site, self.settings.synthetic)
        days = times.astype("datetime64[D]")
        keep = np.ones(days.size, bool)
        if start:
            keep &= days >= np.datetime64(start, "D")
        if end:
            keep &= days <= np.datetime64(end, "D")
        resolution = domain.resolution(self.settings.synthetic.resolution_m)
        return shape_from_times(times[keep], self.settings.season, resolution, bands=len(domain.sensor.bands),
                                mask_bytes=2, read_pixel_dates_per_s=SYNTHETIC_PIXEL_DATES_PER_S)


@dataclass(frozen=True)
class LocalSource:
    """A folder of dated GeoTIFFs or annual composites, THEIA, Sentinel-2 SAFE or Landsat C2 products, a STAC
    catalogue, or a NetCDF/Zarr cube (see gmsense.sources.local)."""

    path: Path
    settings: Settings
    name: str = "local"

    def load(self, site: Site, region: BaseGeometry, start: str | None, end: str | None) -> xr.Dataset:
        from gmsense.sources.local import read_local_cube

        return read_local_cube(self.path, region, site.crs, start=start, end=end,
                               dn_scale=self.settings.local.dn_scale, site_id=site.site_id,
                               band_names=self.settings.local.band_names,
                               harmonise_method=self.settings.local.harmonise, layout=self.settings.local.layout)

    def latest_date(self, site: Site, start: str | None, end: str | None) -> str | None:
        from gmsense.sources.local import latest_date

        return latest_date(self.path, start, end, layout=self.settings.local.layout)

    def describe(self, site: Site, start: str | None, end: str | None) -> ImageryShape:
        """From file names and the first file's header (or the store's coordinates); read lazily."""
        from gmsense.sources.local.shape import describe_imagery

        return describe_imagery(self.path, start, end, self.settings.season, layout=self.settings.local.layout)


@dataclass(frozen=True)
class EarthEngineSource:
    """Google Earth Engine: Sentinel-2 + Cloud Score+ or Landsat 8/9 C2 L2, fetched by computePixels
    into a Zarr cache (see gmsense.sources.earthengine and docs/earthengine.md)."""

    settings: Settings
    name: str = "earthengine"

    def load(self, site: Site, region: BaseGeometry, start: str | None, end: str | None) -> xr.Dataset:
        from gmsense.sources.earthengine import load_cube

        return load_cube(self.settings.earthengine, region, site.crs, start, end, site_id=site.site_id).cube

    def latest_date(self, site: Site, start: str | None, end: str | None) -> str | None:
        from gmsense.sources.earthengine import latest_date

        region = site.buffered(self.settings.sites.buffer_m)
        return latest_date(self.settings.earthengine, region, site.crs, start, end, site_id=site.site_id)

    def describe(self, site: Site, start: str | None, end: str | None) -> ImageryShape:
        """From the collection's pixel size and revisit (no request is made): Sentinel-2 at 10 m every
        5 days, Landsat 8/9 at 30 m every 8 days, over ``start..end`` (open ends: the synthetic range)."""
        first = date.fromisoformat(start or self.settings.synthetic.start)
        last = date.fromisoformat(end or self.settings.synthetic.end)
        if self.settings.earthengine.collection.startswith("landsat"):  # landsat, landsat-archive
            return shape_from_cadence(first, last, LANDSAT_REVISIT_DAYS, self.settings.season, 30.0)
        return shape_from_cadence(first, last, SENTINEL2_REVISIT_DAYS, self.settings.season, 10.0)


def get_source(name: str, settings: Settings, imagery: Path | None = None) -> Source:
    """A source by name; ``imagery`` is required for ``local`` and checked (headers only) here,
    so a corrupt file or a wrong path stops the scan before anything is written."""
    if name == "synthetic":
        return SyntheticSource(settings)
    if name == "local":
        if imagery is None:
            raise InputError("the local source needs an imagery path (a folder of dated GeoTIFFs or annual composites; "
                             "THEIA, Sentinel-2 SAFE or Landsat C2 products; a STAC catalogue; or a .nc/.zarr cube)")
        from gmsense.sources.local import check_imagery

        check_imagery(Path(imagery), settings.local.layout)
        return LocalSource(Path(imagery), settings)
    if name == "earthengine":
        from gmsense.sources.earthengine import connect

        connect(settings.earthengine)  # credentials, project and network, before anything is written
        return EarthEngineSource(settings)
    raise InputError(f"unknown source {name!r}; choose one of: {', '.join(SOURCE_NAMES)}")
