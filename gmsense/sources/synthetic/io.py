"""Write synthetic scenes in the local GeoTIFF-folder layout, so they exercise the local reader.

One file per acquisition, ``YYYY-MM-DD_SYNTH.tif``: Sentinel-2 band names ``B02 B03 B04 B08 B11
B12`` (those the domain's sensor has; Landsat-like scenes too) as uint16 DN with scale 1e-4 in the
GDAL metadata, nodata 0, and an ``SCL`` band; plus
``truth.geojson`` (EPSG:4326) with one feature per event (the columns of
:data:`gmsense.sources.synthetic.TRUTH_COLUMNS`), and optionally ``preview.png``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rasterio.io import MemoryFile

from gmsense.config import Settings
from gmsense.errors import InputError
from gmsense.files import atomic_folder, ensure_folder, fsync_path, output_error, reraise_as_output_error
from gmsense.geo.grid import Grid
from gmsense.geo.sites import Site
from gmsense.sources.synthetic import synthesize

S2_NAMES = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir1": "B11", "swir2": "B12"}
DN_SCALE = 1e-4


def write_scene(site: Site, settings: Settings, folder: Path, *, seed: int | None = None,
                preview: bool = False, progress: Callable[[int, int], None] | None = None,
                domain: str | None = None) -> Path:
    """Synthesize the scene of ``site`` (in ``domain``, else the site's or the settings' domain,
    see :func:`gmsense.sources.synthetic.resolve_domain`) and write it to ``folder`` (with
    ``preview.png`` if ``preview``); returns the folder. Written into a temporary folder beside ``folder`` and
    renamed into place when complete, so a failure (a full disk: an OutputError) leaves nothing
    behind and an earlier scene in ``folder`` stays until the new one is whole. ``progress`` is
    called with (images written, images in the scene)."""
    with atomic_folder(folder) as tmp:
        write_scene_files(site, settings, tmp, seed=seed, preview=preview, progress=progress, domain=domain)
    return Path(folder)


def write_scene_files(site: Site, settings: Settings, folder: Path, *, seed: int | None = None,
                      preview: bool = False, progress: Callable[[int, int], None] | None = None,
                      domain: str | None = None) -> Path:
    """Write the files of the scene of ``site`` into the existing ``folder`` (see :func:`write_scene`).

    GDAL does not report a full disk when it writes a GeoTIFF (libtiff prints the error and the
    file is left unreadable), so each image is made in memory and written with Python's file
    calls, which raise; every file is flushed to disk."""
    folder = Path(folder)
    cube, truth = synthesize(site, site.buffered(settings.sites.buffer_m), settings.synthetic, seed=seed,
                             domain=domain)
    grid = Grid.of(cube)
    bands = [b for b in S2_NAMES if b in cube]  # a domain without SWIR writes four bands
    profile = {"driver": "GTiff", "height": grid.height, "width": grid.width, "count": len(bands) + 1,
               "dtype": "uint16", "crs": site.crs.to_wkt(), "transform": grid.transform, "nodata": 0,
               "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256}
    times = cube["time"].values
    for i, t in enumerate(times):
        day = str(np.datetime64(t, "D"))
        with MemoryFile() as memory:
            with memory.open(**profile) as dst:
                for k, band in enumerate(bands, start=1):
                    dn = np.clip(np.round(cube[band].values[i] / DN_SCALE), 1, 65535).astype("uint16")
                    dst.write(dn, k)
                    dst.set_band_description(k, S2_NAMES[band])
                    dst.update_tags(k, scale=DN_SCALE)
                dst.write(cube["scl"].values[i].astype("uint16"), len(bands) + 1)
                dst.set_band_description(len(bands) + 1, "SCL")
                dst.scales = [DN_SCALE] * len(bands) + [1.0]
                dst.update_tags(DATE=day, SOURCE="gmsense synthetic", SEED=str(cube.attrs["seed"]),
                                DOMAIN=str(cube.attrs["domain"]))
            _write(folder / f"{day}_SYNTH.tif", memory.read())
        if progress:
            progress(i + 1, len(times))
    buffer = io.BytesIO()
    truth.to_crs(4326).to_file(buffer, driver="GeoJSON", layer="truth", engine="pyogrio")
    _write(folder / "truth.geojson", buffer.getvalue())
    if preview:
        from gmsense.sources.synthetic.preview import write_preview

        write_preview(cube, truth, site.geometry, folder / "preview.png")
        fsync_path(folder / "preview.png")
    return folder


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_scenes(sites: Sequence[Site], settings: Settings, out_dir: Path, *, seed: int | None = None,
                 preview: bool = False, progress: Callable[[Site, int, int], None] | None = None,
                 domain: str | None = None) -> list[Path]:
    """Write the scene of every licence of ``sites`` (in ``domain`` if given, see
    :func:`write_scene`) to ``out_dir/<site_id>``, all or nothing:
    the scenes are made in one temporary folder in ``out_dir`` and moved into place only when
    all are complete (replacing earlier scenes of the same licences); a failure removes this
    run's files. ``progress`` is called with (site, images written, images in its scene)."""
    out_dir = Path(out_dir)
    for site in sites:
        target = out_dir / site.site_id
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise InputError(f"refusing to write the scene of {site.site_id} into {target}: it exists and is not "
                             "a folder; choose another --out")
    ensure_folder(out_dir)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".synth-", suffix=".partial", dir=out_dir))
    except OSError as exc:
        raise output_error(exc, out_dir) from None  # type: ignore[misc]
    moved: list[tuple[Path, Path | None]] = []  # (target, its previous scene kept in staging)
    try:
        for site in sites:
            folder = staging / site.site_id
            folder.mkdir()
            write_scene_files(site, settings, folder, seed=seed, preview=preview,
                              progress=(lambda done, total, site=site: progress(site, done, total))
                              if progress else None, domain=domain)
            fsync_path(folder)
        # every scene is whole: move them into place (renames within one file system)
        previous = staging / ".previous"
        previous.mkdir()
        for site in sites:
            target = out_dir / site.site_id
            kept = None
            if target.exists():
                kept = previous / site.site_id
                target.replace(kept)
            moved.append((target, kept))
            (staging / site.site_id).replace(target)
        fsync_path(out_dir)
    except BaseException as exc:
        for target, kept in reversed(moved):  # take this run's scenes out, put earlier ones back
            if kept is None or kept.exists():
                shutil.rmtree(target, ignore_errors=True)
            if kept is not None and kept.exists():
                kept.replace(target)
        reraise_as_output_error(exc, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / site.site_id for site in sites]
