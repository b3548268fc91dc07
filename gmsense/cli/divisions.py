"""``gmsense divisions``: county boundaries, so polygons without division attributes get their
divisions from their geometry (gmsense.geo.county_boundaries)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gmsense.cli._common import ConfigOption, DbOption, out, user_errors

divisions_app = typer.Typer(help="County boundaries: licences and register polygons whose files name no province, "
                                 "city or county get them from their geometry (the county holding the largest "
                                 "share of their area).", no_args_is_help=True)


@divisions_app.command("import")
@user_errors
def divisions_import(
    file: Annotated[Path, typer.Argument(help="county boundary polygons: GeoJSON, GeoPackage or Shapefile, any CRS")],
    field_name: Annotated[str | None, typer.Option(
        "--field", help="the column naming each boundary's county (a code, Chinese name or pinyin of the shipped "
                        "division table); default: county_code, code, adcode, county or name")] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="GeoPackage layer (default: 'counties' or the only "
                                              "one)")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Load county boundaries into the store (a county already there is replaced). Licences and register polygons
    imported from then on without division attributes get the county holding the largest share of their area."""
    from gmsense.config import load_settings
    from gmsense.geo.county_boundaries import read_boundaries
    from gmsense.geo.divisions import describe
    from gmsense.store import Store

    boundaries = read_boundaries(file, field_name=field_name, layer=layer,
                                 repair_invalid=load_settings(config).sites.repair_invalid)
    store = Store(db)
    outcome = store.import_boundaries(boundaries, source_file=str(file.resolve()))
    merged = sum(b.n_features for b in boundaries)
    features = f" from {merged} features" if merged != len(boundaries) else ""
    cities = sorted({describe(r.city_code) for r in store.boundary_rows() if r.city_code})
    out.print(f"imported {len(boundaries)} county boundar{'y' if len(boundaries) == 1 else 'ies'}{features} from "
              f"{file} into {store.location}: {len(outcome['new'])} new, {len(outcome['replaced'])} replaced; the "
              f"store holds {len(store.boundary_rows())} (cities: {'; '.join(cities)})", highlight=False,
              soft_wrap=True)
    out.print("licences and register polygons imported from now on without province/city/county get them from "
              "their geometry; import those already stored again to assign them (gmsense licences import, "
              "gmsense register import)", highlight=False, soft_wrap=True)


@divisions_app.command("list")
@user_errors
def divisions_list(db: DbOption = None) -> None:
    """The county boundaries in the store: county, city, area, features merged, file, when."""
    from gmsense.geo.divisions import describe
    from gmsense.store import Store

    store = Store(db, create=False)
    rows = store.boundary_rows()
    table = Table(title=f"county boundaries in {store.location}")
    for col in ("county", "city", "area (km2)", "features", "file", "imported (UTC)"):
        table.add_column(col, justify="right" if col in ("area (km2)", "features") else "left")
    for row in rows:
        table.add_row(describe(row.county_code), describe(row.city_code), f"{row.area_m2 / 1e6:,.1f}",
                      str(row.n_features), row.source_file or "-", f"{row.imported_at:%Y-%m-%d %H:%M}")
    out.print(table)
    if not rows:
        out.print("the store holds no county boundaries: 'gmsense divisions import FILE' loads them", highlight=False)
