"""``gmsense plan``: the units, tiles, memory and time of a scan, before anything is fetched."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from gmsense.cli._common import ConfigOption, LayoutOption, err, out, user_errors

if TYPE_CHECKING:
    from gmsense.batch.forecast import ScanPlan


def _source(name: str, settings: Any, imagery: Path | None) -> Any:
    """The source to describe the imagery; Earth Engine without connecting (planning makes no request)."""
    from gmsense.errors import InputError
    from gmsense.sources import EarthEngineSource, get_source

    if name == "local" and imagery is None:
        raise InputError("--source local needs --imagery PATH (a folder of dated GeoTIFFs; THEIA, Sentinel-2 SAFE or "
                         "Landsat C2 products; a STAC catalogue; or a .nc/.zarr cube)")
    if name == "earthengine":
        return EarthEngineSource(settings)
    return get_source(name, settings, imagery)


def plan_table(result: ScanPlan, top: int) -> Table:
    """The ``top`` licences (or groups) that take longest, largest first."""
    from gmsense.batch.forecast import format_bytes, format_seconds

    rows = sorted(result.rows, key=lambda r: (-r.seconds, -r.bytes_per_unit, r.name))
    shown = rows[:top]
    title = "work units" if len(shown) == len(rows) else f"the {len(shown)} longest of {len(rows)} entries"
    table = Table(title=title)
    for col in ("licence", "units", "tiles", "memory per unit", "time per unit", "time (1 core)"):
        table.add_column(col, justify="left" if col == "licence" else "right", no_wrap=col == "licence")
    for r in shown:
        over = r.bytes_per_unit > result.memory_limit
        table.add_row(r.name, str(r.units), str(r.tiles or "-"),
                      f"[red]{format_bytes(r.bytes_per_unit)}[/]" if over else format_bytes(r.bytes_per_unit),
                      format_seconds(r.seconds_per_unit), format_seconds(r.seconds))
    return table


def totals_line(result: ScanPlan) -> str:
    from gmsense.batch.forecast import format_bytes, format_seconds
    from gmsense.cli import plural

    return (f"total: {plural(result.licences, 'licence', 'licences')}, {plural(len(result.units), 'unit', 'units')}, "
            f"{plural(result.tiles, 'tile', 'tiles')}; {result.core_seconds / 3600:.2f} core-hours "
            f"({format_seconds(result.core_seconds)} on one core), wall time about "
            f"{format_seconds(result.wall_seconds)} on {plural(result.workers, 'worker', 'workers')}; memory limit "
            f"{format_bytes(result.memory_limit)} per unit")


@user_errors
def plan_command(
    sites: Annotated[Path, typer.Option("--sites", help="licence areas: GeoJSON, GeoPackage or Shapefile, any CRS")],
    source: Annotated[str, typer.Option(
        "--source", help="synthetic | local | earthengine (no request is made)")] = "synthetic",
    imagery: Annotated[Path | None, typer.Option(
        "--imagery", help="for --source local: GeoTIFF folder, product folder (THEIA, SAFE, Landsat), STAC "
                          "catalogue or .nc/.zarr cube (headers only)")] = None,
    layout: LayoutOption = None,
    start: Annotated[str | None, typer.Option("--start", help="first date, YYYY-MM-DD")] = None,
    end: Annotated[str | None, typer.Option("--end", help="last date, YYYY-MM-DD")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="worker processes the scan would start (default: the in-process threads)")] = None,
    memory_limit: Annotated[str | None, typer.Option("--memory-limit", help="memory one task may use, e.g. 4GB "
                                                     "(default: half the machine's over the workers)")] = None,
    buffer: Annotated[float | None, typer.Option(
        "--buffer", help="monitoring buffer around each licence, metres")] = None,
    config: ConfigOption = None,
    top: Annotated[int, typer.Option("--top", min=1, help="licences shown, longest first")] = 20,
    json_file: Annotated[Path | None, typer.Option("--json", help="write the whole plan (every unit) as JSON")] = None,
) -> None:
    """Plan a scan without fetching anything: work units and tiles per licence, memory and time
    per unit, totals (core-hours, wall time on the workers) and warnings for licences that take
    over an hour or do not fit the memory limit even in tiles."""
    from gmsense.batch.forecast import forecast, requests_line
    from gmsense.batch.planner import default_memory_limit
    from gmsense.batch.scan import check_dates
    from gmsense.cli import _scan_options
    from gmsense.config import load_settings
    from gmsense.geo.sites import read_sites

    check_dates(start, end, ("--start", "--end"))
    options = _scan_options(workers, None, memory_limit, sites_file=sites)  # a bad --memory-limit exits 2 here
    settings = load_settings(config, {"sites.buffer_m": buffer, "local.layout": layout})
    licences = read_sites(sites, repair_invalid=settings.sites.repair_invalid)
    imagery_source = _source(source, settings, imagery)
    concurrent = workers or min(4, os.cpu_count() or 1)  # as the scan: threads in this process without --workers
    result = forecast(licences, settings, options.memory_limit or default_memory_limit(concurrent), concurrent,
                      start=start, end=end, source=imagery_source, slots=workers or 1)
    out.print(plan_table(result, top))
    out.print(totals_line(result), highlight=False, soft_wrap=True)
    if (line := requests_line(result)) is not None:
        out.print(line, highlight=False, soft_wrap=True)
    for note in result.warnings:
        err.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(result.as_dict(), indent=1))
        out.print(f"wrote {json_file}", highlight=False, soft_wrap=True)
