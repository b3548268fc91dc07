"""Write synthetic scenes in the local GeoTIFF-folder layout, so they exercise the local reader.

One file per acquisition, ``YYYY-MM-DD_SYNTH.tif``: Sentinel-2 band names ``B02 B03 B04 B08 B11
B12`` as uint16 DN with scale 1e-4 in the GDAL metadata, nodata 0, and an ``SCL`` band; plus
``truth.geojson`` (EPSG:4326) with one feature per event (the columns of
:data:`gmsense.sources.synthetic.TRUTH_COLUMNS`), and optionally ``preview.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from gmsense.config import Settings
from gmsense.detect.patches import grid_transform
from gmsense.sites import Site
from gmsense.sources.synthetic import synthesize

S2_NAMES = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir1": "B11", "swir2": "B12"}
DN_SCALE = 1e-4


def write_scene(site: Site, settings: Settings, folder: Path, *, seed: int | None = None,
                preview: bool = False) -> Path:
    """Synthesize the scene of ``site`` and write it to ``folder`` (with ``preview.png`` if
    ``preview``); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cube, truth = synthesize(site, site.buffered(settings.sites.buffer_m), settings.synthetic, seed=seed)
    transform = grid_transform(cube)
    bands = list(S2_NAMES)
    profile = {"driver": "GTiff", "height": cube.sizes["y"], "width": cube.sizes["x"], "count": len(bands) + 1,
               "dtype": "uint16", "crs": site.crs.to_wkt(), "transform": transform, "nodata": 0,
               "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}
    for i, t in enumerate(cube["time"].values):
        day = str(np.datetime64(t, "D"))
        path = folder / f"{day}_SYNTH.tif"
        with rasterio.open(path, "w", **profile) as dst:
            for k, band in enumerate(bands, start=1):
                dn = np.clip(np.round(cube[band].values[i] / DN_SCALE), 1, 65535).astype("uint16")
                dst.write(dn, k)
                dst.set_band_description(k, S2_NAMES[band])
                dst.update_tags(k, scale=DN_SCALE)
            dst.write(cube["scl"].values[i].astype("uint16"), len(bands) + 1)
            dst.set_band_description(len(bands) + 1, "SCL")
            dst.scales = [DN_SCALE] * len(bands) + [1.0]
            dst.update_tags(DATE=day, SOURCE="gmsense synthetic", SEED=str(cube.attrs["seed"]))
    truth.to_crs(4326).to_file(folder / "truth.geojson", driver="GeoJSON", engine="pyogrio")
    if preview:
        from gmsense.sources.synthetic_preview import write_preview

        write_preview(cube, truth, site.geometry, folder / "preview.png")
    return folder
