"""The shape of local imagery (pixel size, dates, bands) from file names and headers only, for
the scan planner; no pixel is read."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from gmsense.config import SeasonSettings
from gmsense.sources._bands import plan_bands
from gmsense.sources.local import (
    _DIM_ALIASES,
    _open_store,
    _require_dated_files,
    _store_crs,
    _store_transform,
    parse_range,
    read_tiff_header,
)
from gmsense.sources.shape import ImageryShape, shape_from_times

#: Metres per degree of latitude: the pixel size of imagery in a geographic CRS (it is reprojected
#: onto a grid of about that size in the licence's CRS).
METRES_PER_DEGREE = 111_320.0


def describe_imagery(path: Path, start: str | None, end: str | None, season: SeasonSettings,
                     layout: str = "auto") -> ImageryShape:
    """Pixel size (metres), dates within ``start..end`` and bands of the local imagery at ``path``
    (any layout of :func:`gmsense.sources.local.read_local_cube`, ``layout`` or detected); cached per
    path, its modification time, the dates, the season and the layout."""
    path = Path(path)
    return _describe(str(path.resolve()), path.stat().st_mtime_ns, start, end, season.start_month, season.end_month,
                     layout)


@lru_cache(maxsize=64)
def _describe(path_text: str, _mtime_ns: int, start: str | None, end: str | None, first_month: int,
              last_month: int, layout: str = "auto") -> ImageryShape:
    from gmsense.sources.local.layouts import PRODUCT_LAYOUTS, detect_layout, layout_days, layout_resolution

    path = Path(path_text)
    kind = detect_layout(path, layout)
    if kind in PRODUCT_LAYOUTS:
        days = layout_days(path, kind)
        size, crs, bands = layout_resolution(path, kind), None, 6
    elif kind == "cube":
        with _open_store(path) as ds:
            ds = ds.rename({k: v for k, v in _DIM_ALIASES.items() if k in ds.dims and v not in ds.dims})
            days = np.asarray(ds["time"].values, dtype="datetime64[ns]")
            size = abs(_store_transform(ds, path).a)
            crs = _store_crs(ds)
            bands = len(plan_bands(str(v) for v in ds.data_vars).bands)
    elif kind == "theia":
        from gmsense.sources.local.theia import theia_product_folders

        days = np.array([d for d, _ in theia_product_folders(path)], dtype="datetime64[ns]")
        size, crs, bands = 10.0, None, 6  # resampled onto the 10 m grid
    else:
        files = _require_dated_files(path)
        days = np.array([d for d, _ in files], dtype="datetime64[ns]")
        first = read_tiff_header(files[0][1], files[0][0])
        size, crs, bands = abs(first.transform.a), first.crs, len(first.plan.bands)
    if crs is not None and crs.is_geographic:
        size *= METRES_PER_DEGREE
    days = np.unique(days)  # files of one date are merged into one acquisition
    days = days[parse_range(start, end).keep(days)] if days.size else days
    return shape_from_times(days, SeasonSettings(start_month=first_month, end_month=last_month), float(size),
                            bands=max(bands, 1), lazy=True)
