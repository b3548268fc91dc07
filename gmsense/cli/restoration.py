"""``gmsense register``, ``gmsense zones`` and ``gmsense restoration``: mine land and its restoration."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from gmsense.cli._common import ConfigOption, DbOption, err, out, user_errors, warn_unknown_divisions

register_app = typer.Typer(help="The register of abandoned / legacy mine land and reclamation areas.",
                           no_args_is_help=True)
zones_app = typer.Typer(help="Green-mine demonstration zones.", no_args_is_help=True)
restoration_app = typer.Typer(help="Restoration status per register polygon and year, and its accounting.",
                              no_args_is_help=True)

LayerOption = Annotated[str | None, typer.Option("--layer", help="GeoPackage layer (default: the only one)")]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@register_app.command("import")
@user_errors
def register_import(
    file: Annotated[Path, typer.Argument(help="register polygons: GeoPackage, Shapefile or GeoJSON, any CRS")],
    db: DbOption = None,
    layer: LayerOption = None,
    config: ConfigOption = None,
) -> None:
    """Import register polygons (register_id, kind, mineral_class, responsible_party, province, city, county;
    optional planned_measure, restoration_deadline, demonstration_zone). An id already stored is replaced."""
    from gmsense.config import load_settings
    from gmsense.geo.register import read_register
    from gmsense.store import Store

    polygons = read_register(file, repair_invalid=load_settings(config).sites.repair_invalid, layer=layer)
    warn_unknown_divisions([(p.register_id, p.attrs) for p in polygons])
    store = Store(db)
    counts = store.upsert_register(polygons)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(Counter(p.kind for p in polygons).items()))
    area_ha = sum(p.area_m2 for p in polygons) / 10_000
    out.print(f"imported {_plural(len(polygons), 'register polygon')} ({kinds}; {area_ha:.2f} ha): "
              f"{counts['new']} new, {counts['replaced']} replaced", highlight=False, soft_wrap=True)
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
    file: Annotated[Path, typer.Argument(help="zone polygons (zone_id, name, optional target_rate), any CRS")],
    db: DbOption = None,
    layer: LayerOption = None,
) -> None:
    """Import demonstration zones; a zone_id already stored is replaced."""
    from gmsense.geo.register import read_zones
    from gmsense.store import Store

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
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Status of every register polygon in the store per year, from the imagery; stored (replacing earlier rows)."""
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
    if summary["failed"]:
        raise typer.Exit(EXIT_PARTIAL)


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
