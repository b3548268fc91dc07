"""``gmsense register``, ``gmsense zones`` and ``gmsense restoration``: mine land and its restoration."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from gmsense.cli._common import (
    ConfigOption,
    DbOption,
    LayoutOption,
    err,
    out,
    user_errors,
    warn_unknown_divisions,
)

register_app = typer.Typer(help="The register of abandoned / legacy mine land and reclamation areas.",
                           no_args_is_help=True)
zones_app = typer.Typer(help="Green-mine demonstration zones.", no_args_is_help=True)
restoration_app = typer.Typer(help="Restoration status per register polygon and year, and its accounting.",
                              no_args_is_help=True)

LayerOption = Annotated[str | None, typer.Option("--layer", help="GeoPackage layer (default: the only one)")]
TableCrsOption = Annotated[str | None, typer.Option(
    "--crs", help="corner table: EPSG:4490, 4513-4533 or 4534-4554; inferred if possible")]
AttributesOption = Annotated[Path | None, typer.Option(
    "--attributes", help="corner table: a second table (CSV or XLSX) of attributes per id")]
ArchiveOption = Annotated[Path | None, typer.Option("--imagery", help=(
    "--source local: the archive (Landsat C2 L2 products, Sentinel-2 SAFE/THEIA, STAC, dated GeoTIFFs, a cube)"))]
CollectionOption = Annotated[str, typer.Option("--collection", help=(
    "--source earthengine: landsat-archive (TM + ETM+ + OLI, from 1984) | landsat (OLI) | sentinel-2"))]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _check_table_options(file: Path, crs: str | None, attributes: Path | None, layer: str | None) -> bool:
    """Whether ``file`` is a corner-point table; refuses the options that do not fit its kind."""
    from gmsense.errors import InputError
    from gmsense.geo.register_table import TABLE_SUFFIXES, is_corner_table

    table = is_corner_table(file)
    if table and layer is not None:
        raise InputError(f"--layer is for GeoPackages; {file} is a corner-point table")
    if not table and (crs is not None or attributes is not None):
        raise InputError(f"--crs and --attributes are for corner-point tables ({', '.join(TABLE_SUFFIXES)}); "
                         f"{file} is read as a vector file, whose CRS it carries")
    return table


@register_app.command("import")
@user_errors
def register_import(
    file: Annotated[Path, typer.Argument(help="register polygons: GeoPackage, Shapefile or GeoJSON, any CRS; or a "
                                         "CGCS2000 corner-point table, CSV or XLSX")],
    db: DbOption = None,
    layer: LayerOption = None,
    crs: TableCrsOption = None,
    attributes: AttributesOption = None,
    config: ConfigOption = None,
) -> None:
    """Import register polygons (register_id, kind, mineral_class, responsible_party, province, city, county;
    optional planned_measure, restoration_deadline, demonstration_zone). An id already stored is replaced.
    A corner-point table (.csv, .xlsx: X northing, Y easting) may use Chinese headers and values."""
    from gmsense.config import load_settings
    from gmsense.geo.register import read_register
    from gmsense.geo.register_table import read_register_table
    from gmsense.store import NoStoreError, Store

    table = _check_table_options(file, crs, attributes, layer)

    try:  # the store's county boundaries make the division columns optional (not creating a store to know)
        existing = Store(db, create=False)
    except NoStoreError:
        located = False
    else:
        located = existing.has_boundaries()
        existing.engine.dispose()
    repair_invalid = load_settings(config).sites.repair_invalid
    if table:
        polygons = read_register_table(file, crs=crs, attributes=attributes, repair_invalid=repair_invalid,
                                       divisions_required=not located)
    else:
        polygons = read_register(file, repair_invalid=repair_invalid, layer=layer, divisions_required=not located)
    warn_unknown_divisions([(p.register_id, p.attrs) for p in polygons], located=located)
    store = Store(db)
    counts = store.upsert_register(polygons)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(p.kind for p in polygons).items()))
    area_ha = sum(p.area_m2 for p in polygons) / 10_000
    out.print(f"imported {_plural(len(polygons), 'register polygon')} ({kinds}; {area_ha:.2f} ha): "
              f"{counts['new']} new, {counts['replaced']} replaced", highlight=False, soft_wrap=True)
    if located:
        unlocated = f"; {counts['unlocated']} in no boundary, without a division" if counts["unlocated"] else ""
        located_n = _plural(counts["located"], "polygon")
        out.print(f"divisions from the county boundaries (no division attributes): {located_n}{unlocated}",
                  highlight=False, soft_wrap=True)
    if store.current_layers():  # the register on protected land (gmsense layers add): checked again
        from gmsense.restoration.protected import check_register_layers

        n = check_register_layers(store, load_settings(config).rules)
        out.print(f"checked against the protected-land layers: {_plural(n, 'overlap')} (gmsense layers list)",
                  highlight=False, soft_wrap=True)
    if counts["reset"]:
        out.print(f"{counts['reset']} replaced with a new boundary: their restoration status was cleared "
                  "(run gmsense restoration run again)", highlight=False, soft_wrap=True)


@zones_app.command("import")
@user_errors
def zones_import(
    file: Annotated[Path, typer.Argument(help="zone polygons (zone_id, name, optional target_rate), any CRS; or a "
                                         "corner-point table, CSV or XLSX")],
    db: DbOption = None,
    layer: LayerOption = None,
    crs: TableCrsOption = None,
    attributes: AttributesOption = None,
) -> None:
    """Import demonstration zones; a zone_id already stored is replaced."""
    from gmsense.geo.register import read_zones
    from gmsense.geo.register_table import read_zones_table
    from gmsense.store import Store

    if _check_table_options(file, crs, attributes, layer):
        zones = read_zones_table(file, crs=crs, attributes=attributes)
    else:
        zones = read_zones(file, layer=layer)
    counts = Store(db).upsert_zones(zones)
    out.print(f"imported {_plural(len(zones), 'zone')}: {counts['new']} new, {counts['replaced']} replaced",
              highlight=False)


@restoration_app.command("run")
@user_errors
def restoration_run(
    imagery: Annotated[Path, typer.Option("--imagery", help="folder of annual composites YYYY.tif (or dated "
                                          "GeoTIFFs, or a .nc/.zarr cube)")],
    land_cover: Annotated[Path | None, typer.Option(
        "--land-cover", help="land-cover map (GeoTIFF of class codes, e.g. CLCD): each pixel is compared with "
                             "ring pixels of its own land cover; overrides restoration.land_cover")] = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="also write the accounting report (tables, GeoPackage, summary, PDF) into this folder "
                         "and print the rates against their targets")] = None,
    lang: Annotated[str, typer.Option("--lang", help="the report's language: en | zh (Simplified Chinese)")] = "en",
    unit: Annotated[str, typer.Option("--area-unit", help="the report's area unit: ha | mu")] = "ha",
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Status of every register polygon in the store per year, from the imagery; stored (replacing earlier rows).
    With --report, the accounting report too (as restoration report --format all) and the rates in the terminal."""
    from gmsense.config import load_settings
    from gmsense.errors import EXIT_PARTIAL, InputError
    from gmsense.restoration.run import run_restoration
    from gmsense.store import Store

    if not imagery.exists():
        raise InputError(f"imagery {imagery} does not exist; point --imagery at a folder of annual composites")
    overrides = {} if land_cover is None else {"restoration.land_cover": str(land_cover.resolve())}
    settings = load_settings(config, overrides)
    store = Store(db, create=False)
    with err.status("restoration") as status:
        summary = run_restoration(store, imagery, settings,
                                  progress=lambda rid, n, total: status.update(f"restoration: {n}/{total} ({rid})"))
    years = "-".join(map(str, summary["years"])) or "none"
    out.print(f"restoration run {summary['run_id']}: {summary['done']} of "
              f"{_plural(summary['polygons'], 'register polygon')} analysed, years {years}", highlight=False)
    references = ", ".join(f"{source} {n}" for source, n in summary["reference_sources"].items())
    if references:
        out.print(f"references: {references}", highlight=False, soft_wrap=True)
    for register_id, error in summary["failed"].items():
        err.print(f"[red]failed[/] {register_id}: {error}", highlight=False, soft_wrap=True)
    if report is not None and summary["done"]:
        from gmsense.outputs.restoration_report import write_restoration_report

        written = write_restoration_report(store, report, settings, lang, unit, "all")
        _print_rates(report)
        out.print(f"wrote {_plural(len(written), 'file')} to {report}", highlight=False, soft_wrap=True)
    if summary["failed"]:
        raise typer.Exit(EXIT_PARTIAL)


def _print_rates(folder: Path) -> None:
    """The latest year's restoration rate of the register, each province and each zone against its target,
    from the report's tables in ``folder``."""
    import pandas as pd
    from rich.table import Table

    table = Table(title="restoration rate (latest year, by area)")
    for column in ("level", "group", "year", "rate", "range", "target", ""):
        table.add_column(column)
    for name in ("total", "by_province", "by_zone"):
        frame = pd.read_csv(folder / f"{name}.csv")
        if frame.empty:
            continue
        latest = frame[frame["year"] == frame["year"].max()]
        for row in latest.itertuples():
            if pd.isna(row.restoration_rate):
                continue
            met = "met" if row.meets_target else "[red]not met[/]"
            table.add_row(str(row.level), str(row.group), str(row.year), f"{row.restoration_rate:.1%}",
                          f"{row.rate_low:.1%}-{row.rate_high:.1%}", f"{row.target_rate:.0%}", met)
    out.print(table)


@restoration_app.command("composites")
@user_errors
def restoration_composites(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write YYYY.tif into (what restoration run "
                                          "--imagery reads)")],
    start_year: Annotated[int, typer.Option("--start-year", help="first year (growing season)")],
    end_year: Annotated[int, typer.Option("--end-year", help="last year (growing season)")],
    source: Annotated[str, typer.Option("--source", help="local | earthengine")] = "local",
    imagery: ArchiveOption = None,
    register_from_db: Annotated[bool, typer.Option("--register-from-db", help="the area: the store's register "
                                                   "polygons with their reference rings")] = False,
    aoi: Annotated[Path | None, typer.Option("--aoi", help="the area: polygons of a GeoJSON, GeoPackage or "
                                             "Shapefile (any CRS)")] = None,
    season: Annotated[str | None, typer.Option("--season", help="MM-DD:MM-DD (default: the configured "
                                               "season.start_month..end_month)")] = None,
    method: Annotated[str, typer.Option("--method", help="median (per band) | medoid (the observation nearest "
                                        "the median)")] = "median",
    collection: CollectionOption = "landsat-archive",
    layout: LayoutOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Yearly growing-season composites (median or medoid of the clear observations of every sensor, TM / ETM+
    made OLI-like; clear_count band), one YYYY.tif per year; a year already written is skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gmsense.config import load_settings
    from gmsense.errors import InputError
    from gmsense.restoration.composites import METHODS, Season, build_composites

    settings = load_settings(config)
    if method not in METHODS:
        raise InputError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if not 1972 <= start_year <= end_year <= 2100:
        raise InputError(f"--start-year {start_year} .. --end-year {end_year} is not a range of years (1972-2100, "
                         "start before end)")
    if register_from_db == (aoi is not None):
        raise InputError("give the area: --register-from-db (the store's register polygons) or --aoi FILE, not both")
    chosen = Season.parse(season) if season else Season.of(settings.season)
    composite_source = _composite_source(source, imagery, collection, layout, settings)
    if aoi is not None:
        from gmsense.restoration.archive import aoi_area

        area = aoi_area(aoi)
    else:
        from gmsense.restoration.archive import register_area
        from gmsense.store import Store

        area = register_area(Store(db, create=False), settings)
    years = list(range(start_year, end_year + 1))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("composites", total=None)

        def progress(year: int, done: int, total: int) -> None:
            bar.update(task, description=f"composites: {year}", completed=done, total=total)

        run = build_composites(composite_source, area, years, chosen, method, out_dir, progress)
    written, skipped, empty = run.of("written"), run.of("skipped"), run.of("no imagery")
    out.print(f"composites {start_year}-{end_year} ({method}, season {chosen}) in {out_dir}: {len(written)} written, "
              f"{len(skipped)} already there, {len(empty)} without imagery; {run.grid.width} x {run.grid.height} px, "
              f"{run.windows} block(s) read per year", highlight=False, soft_wrap=True)
    if empty:
        err.print(f"[yellow]warning:[/] no imagery of the area in the season of {', '.join(map(str, empty))}: no "
                  "composite for those years", highlight=False, soft_wrap=True)


def _composite_source(source: str, imagery: Path | None, collection: str, layout: str | None, settings: Any) -> Any:
    """The :class:`~gmsense.restoration.composites.CompositeSource` the options name."""
    from gmsense.errors import InputError

    if source == "local":
        if imagery is None:
            raise InputError("--source local needs --imagery PATH (the archive of products or dated imagery)")
        from gmsense.restoration.archive import LocalArchive
        from gmsense.sources.local import check_imagery

        chosen = layout or settings.local.layout
        check_imagery(imagery, chosen)
        return LocalArchive(imagery, settings, chosen)
    if source == "earthengine":
        from gmsense.sources.earthengine._graph import SPECS

        if collection not in SPECS:
            raise InputError(f"unknown --collection {collection!r}; choose one of {', '.join(SPECS)}")
        from gmsense.restoration.earthengine_archive import EarthEngineArchive
        from gmsense.sources.earthengine import connect

        cfg = settings.earthengine.model_copy(update={"collection": collection})
        connect(cfg)  # credentials, project and network, before anything is written
        return EarthEngineArchive(cfg)
    raise InputError(f"unknown --source {source!r}; choose local or earthengine")


@restoration_app.command("report")
@user_errors
def restoration_report(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the tables, GeoPackage and summary into")],
    db: DbOption = None,
    config: ConfigOption = None,
    lang: Annotated[str, typer.Option("--lang", help="en | zh (Simplified Chinese)")] = "en",
    unit: Annotated[str, typer.Option("--area-unit", help="ha | mu (1 mu = 666.67 m2)")] = "ha",
    fmt: Annotated[str, typer.Option("--format", help="all | tables (CSV, GeoPackage, markdown, HTML) | pdf "
                                     "(restoration_report.pdf and the CSV tables it cites)")] = "all",
) -> None:
    """Accounting: status per polygon and year; damaged / restored area, restoration rate against the target,
    newly damaged and restored area per province, city, county, zone, mineral class and kind (CSV);
    polygons with their latest status (GeoPackage); a summary (markdown and HTML); a PDF report with charts."""
    from gmsense.config import load_settings
    from gmsense.outputs.restoration_report import write_restoration_report
    from gmsense.store import Store

    written = write_restoration_report(Store(db, create=False), out_dir, load_settings(config), lang, unit,
                                       fmt)
    out.print(f"wrote {_plural(len(written), 'file')} to {out_dir}", highlight=False, soft_wrap=True)
