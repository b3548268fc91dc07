"""`gmsense bench scale`: how a province-sized scan scales.

- ``small``: the same scan of many small licences (synthetic, 2 seasons) with 1 and with 2
  worker processes: wall time, speed-up, licences per second, and the per-licence overhead (scan
  wall time per licence and worker minus the in-process analysis time of one licence).
- ``large``: one large licence scanned with a memory budget (``--memory-limit``), so the
  planner cuts it into tiles: wall time, number of tiles and the peak resident memory of the
  process that ran it (a fresh subprocess, sampled every 0.2 s), against the budget.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from shapely.geometry import box

from gmsense import __version__
from gmsense.bench import write_json_and_markdown
from gmsense.config import Settings
from gmsense.geo.sites import Site

PERIOD = ("2020-04-01", "2021-10-31")
ORIGIN = (600_000.0, 5_290_000.0)  # UTM 52N, Heilongjiang
SMALL_SIDE_M = 200.0
SMALL_BUFFER_M = 100.0


def small_licences(n: int) -> list[Site]:
    """``n`` licences of 200 m x 200 m on a 1 km grid (each analysed with a 100 m buffer)."""
    crs = pyproj.CRS.from_epsg(32652)
    cols = int(np.ceil(np.sqrt(n)))
    sites = []
    for k in range(n):
        x0, y0 = ORIGIN[0] + (k % cols) * 1_000.0, ORIGIN[1] + (k // cols) * 1_000.0
        sites.append(Site(f"S{k:04d}", box(x0, y0, x0 + SMALL_SIDE_M, y0 + SMALL_SIDE_M), crs,
                          {"synthetic_scenario": "mixed"}))
    return sites


def _settings() -> Settings:
    return Settings().with_overrides({"synthetic.start": PERIOD[0], "synthetic.end": PERIOD[1],
                                      "sites.buffer_m": SMALL_BUFFER_M})


def _scan_seconds(sites: list[Site], settings: Settings, workers: int | None, db: Path) -> tuple[float, str]:
    from gmsense.batch.request import ScanOptions, ScanRequest
    from gmsense.batch.scan import run_scan
    from gmsense.sources import get_source
    from gmsense.store import Store

    t0 = time.perf_counter()
    summary = run_scan(ScanRequest(sites, get_source("synthetic", settings), settings), Store(str(db)),
                       options=ScanOptions(workers=workers))
    return time.perf_counter() - t0, summary.status


def run_small(n: int = 120) -> dict[str, Any]:
    from gmsense.pipeline import analyse_site
    from gmsense.sources import get_source

    settings = _settings()
    sites = small_licences(n)
    source = get_source("synthetic", settings)
    analyse_site(sites[0], source, settings)  # warm-up
    sample = sites[:5]
    t0 = time.perf_counter()
    for site in sample:
        analyse_site(site, source, settings)
    per_licence = (time.perf_counter() - t0) / len(sample)
    out: dict[str, Any] = {"licences": n, "licence_m": SMALL_SIDE_M, "buffer_m": SMALL_BUFFER_M,
                           "period": list(PERIOD), "analysis_s_per_licence": round(per_licence, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            seconds, status = _scan_seconds(sites, settings, workers, Path(tmp) / f"w{workers}.db")
            out[f"workers_{workers}"] = {
                "seconds": round(seconds, 1), "status": status, "licences_per_s": round(n / seconds, 2),
                "overhead_s_per_licence": round(seconds * workers / n - per_licence, 3)}
    out["speedup"] = round(out["workers_1"]["seconds"] / out["workers_2"]["seconds"], 2)
    return out


def _peak_rss(command: list[str]) -> tuple[float, int, str]:
    """Run ``command``; (seconds, peak resident bytes of it and its children, output)."""
    import psutil

    t0 = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(process.pid)
        while not done.is_set():
            try:
                rss = parent.memory_info().rss + sum(c.memory_info().rss for c in parent.children(recursive=True))
            except psutil.Error:
                rss = 0
            peak = max(peak, rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    sampler.join()
    if process.returncode not in (0, 3):
        raise RuntimeError(f"the large-licence scan failed ({process.returncode}): {output[-2000:]}")
    return time.perf_counter() - t0, peak, output


def large_scene(side_km: float, path: Path, *, compressed: bool = True, chunk_px: int = 100) -> Site:
    """A ``side_km`` square licence and a Zarr cube of it (local imagery, 3 seasons): a 2 km
    synthetic scene repeated as a mosaic (streamed with dask, never whole in memory), in chunks of
    every date and ``chunk_px`` pixels each way; ``compressed=False`` writes the chunks raw (reading
    is then a copy from the page cache: what the analysis costs shows, not the decompression)."""
    import dask.array as da
    import xarray as xr

    from gmsense.sources.synthetic import synthesize

    crs = pyproj.CRS.from_epsg(32652)
    x0, y0 = ORIGIN
    block = 2_000.0
    seed_site = Site("LARGE-SEED", box(x0 + 250, y0 + 250, x0 + block - 250, y0 + block - 250), crs,
                     {"synthetic_scenario": "mixed"})
    settings = Settings().with_overrides({"synthetic.start": "2019-04-01", "synthetic.end": "2021-10-31"})
    cube, _ = synthesize(seed_site, box(x0, y0, x0 + block, y0 + block), settings.synthetic)
    reps = int(np.ceil(side_km * 1_000.0 / block))
    res = float(cube.x[1] - cube.x[0])
    nx, ny = cube.sizes["x"] * reps, cube.sizes["y"] * reps
    xs = x0 + (np.arange(nx) + 0.5) * res
    ys = y0 + reps * block - (np.arange(ny) + 0.5) * res
    data = {name: (("time", "y", "x"),
                   da.tile(da.from_array(cube[name].values, chunks=(-1, chunk_px, chunk_px)), (1, reps, reps)))
            for name in [*[b for b in ("blue", "green", "red", "nir", "swir1", "swir2") if b in cube], "clear"]}
    mosaic = xr.Dataset(data, coords={"time": cube.time.values, "y": ys, "x": xs})
    mosaic = mosaic.rio.write_crs(crs)
    encoding = None if compressed else {name: {"compressors": None} for name in data}
    mosaic.to_zarr(path, mode="w", encoding=encoding)
    side = reps * block
    return Site("LARGE", box(x0 + 500, y0 + 500, x0 + side - 500, y0 + side - 500), crs, {})


def run_large(side_km: float, memory_limit: str) -> dict[str, Any]:
    """One ``side_km`` x ``side_km`` licence (local Zarr imagery, 3 seasons) scanned in a fresh
    subprocess with ``--memory-limit``; peak resident memory of that process and its workers."""
    from gmsense.batch.planner import parse_memory, plan
    from gmsense.geo.sites import write_sites
    from gmsense.sources import LocalSource

    with tempfile.TemporaryDirectory() as tmp:
        imagery = Path(tmp) / "large.zarr"
        t0 = time.perf_counter()
        site = large_scene(side_km, imagery)
        made_s = time.perf_counter() - t0
        settings = Settings().with_overrides({"synthetic.start": "2019-04-01", "synthetic.end": "2021-10-31"})
        units = plan([site], settings, parse_memory(memory_limit), start="2019-04-01", end="2021-10-31",
                     source=LocalSource(imagery, settings))  # the tiles the scan below makes
        sites_file = write_sites([site], Path(tmp) / "large.geojson")
        cli = Path(sys.executable).with_name("gmsense")
        seconds, peak, output = _peak_rss([str(cli), "scan", "--sites", str(sites_file), "--source", "local",
                                           "--imagery", str(imagery), "--start", "2019-04-01", "--end", "2021-10-31",
                                           "--db", str(Path(tmp) / "large.db"), "--memory-limit", memory_limit,
                                           "--no-progress"])
        extent = site.buffered(settings.sites.buffer_m).bounds
    return {"licence_km": round((extent[2] - extent[0] - 2 * settings.sites.buffer_m) / 1000, 1),
            "area_km": round((extent[2] - extent[0]) / 1000, 1), "seasons": 3, "memory_limit": memory_limit,
            "tiles": len(units), "scene_written_s": round(made_s, 1), "seconds": round(seconds, 1),
            "peak_rss_gb": round(peak / 1e9, 2), "tail": output[-300:]}


def run_scale(out: Path | None = None, *, small: int = 120, large_km: float | None = 8.0,
              memory_limit: str = "1.5GB") -> dict[str, Any]:
    results: dict[str, Any] = {"small": run_small(small)}
    if large_km:
        results["large"] = run_large(large_km, memory_limit)
    results["machine"] = {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                          "cpus": __import__("os").cpu_count()}
    results["gmsense_version"] = __version__
    if out is not None:
        write_json_and_markdown(results, out, scale_markdown(results))
    return results


def scale_markdown(r: dict[str, Any]) -> str:
    s = r["small"]
    rows = [
        ("small licences", f"{s['licences']} of {s['licence_m']:.0f} m x {s['licence_m']:.0f} m "
                           f"(+{s['buffer_m']:.0f} m buffer), {s['period'][0]} to {s['period'][1]}"),
        ("analysis per licence (in process)", f"{s['analysis_s_per_licence']} s"),
        ("1 worker", f"{s['workers_1']['seconds']} s, {s['workers_1']['licences_per_s']} licences/s, overhead "
                     f"{s['workers_1']['overhead_s_per_licence']} s/licence"),
        ("2 workers", f"{s['workers_2']['seconds']} s, {s['workers_2']['licences_per_s']} licences/s, overhead "
                      f"{s['workers_2']['overhead_s_per_licence']} s/licence"),
        ("speed-up 1 -> 2 workers", f"{s['speedup']}x"),
    ]
    if large := r.get("large"):
        rows += [("large licence", f"{large['licence_km']} km x {large['licence_km']} km "
                                   f"({large['area_km']} km with the buffer), {large['seasons']} seasons of local "
                                   f"Zarr imagery, --memory-limit {large['memory_limit']} -> {large['tiles']} tiles"),
                 ("large licence scan", f"{large['seconds']} s, peak resident {large['peak_rss_gb']} GB")]
    return "| measure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"
