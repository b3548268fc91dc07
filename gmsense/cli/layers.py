"""``gmsense layers``: protected land and zoning layers in the store, versioned (gmsense.geo.layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gmsense.cli._common import ConfigOption, DbOption, out, user_errors

layers_app = typer.Typer(help="Protected land and zoning (ecological red line, nature reserves, basic farmland, "
                              "public-welfare forest, water source protection, others by name): layers the rules "
                              "check every scan's disturbances and the register's polygons against.",
                         no_args_is_help=True)

RulesOption = Annotated[Path | None, typer.Option("--rules", help="flag rules YAML replacing configs/rules.yaml "
                                                  "(severities of the register's overlaps)")]


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"


def _recheck_register(store: Any, config: Path | None, rules: Path | None) -> str:
    """The register's polygons checked again against the current layers; a sentence saying so."""
    from gmsense.config import load_settings
    from gmsense.restoration.protected import check_register_layers

    if not store.register_rows():
        return ""
    n = check_register_layers(store, load_settings(config, rules_path=rules).rules)
    return f"; register polygons checked again: {n} overlap{'s' if n != 1 else ''} with protected land"


@layers_app.command("add")
@user_errors
def layers_add(
    name: Annotated[str, typer.Argument(help="the layer's name, e.g. hlj_red_line (letters, digits, _ . -)")],
    file: Annotated[Path, typer.Argument(help="polygons: GeoPackage, Shapefile or GeoJSON, any CRS")],
    kind: Annotated[str, typer.Option("--kind", help="ecological_red_line | nature_reserve | basic_farmland | "
                                      "public_welfare_forest | water_source_protection | another kind by name "
                                      "(Chinese names such as 永久基本农田 are understood)")],
    db: DbOption = None,
    layer: Annotated[str | None, typer.Option("--layer", help="GeoPackage layer (default: the only one, or the one "
                                              "named NAME)")] = None,
    config: ConfigOption = None,
    rules: RulesOption = None,
) -> None:
    """Add a layer, or a new version of it: a file whose polygons, properties or kind differ from the layer's
    current version becomes its next version (earlier ones are kept: flags name the version they were checked
    against); an identical file adds nothing. Scans check the current versions; the register is checked at once."""
    from gmsense.config import load_settings
    from gmsense.geo.layers import read_layer
    from gmsense.store import Store

    protected = read_layer(file, name, kind, repair_invalid=load_settings(config).sites.repair_invalid, layer=layer)
    store = Store(db)
    row, change = store.add_layer(protected, source_file=str(file.resolve()))
    what = {"new": "added as version 1", "changed": f"changed: version {row.version}",
            "re-added": f"added again: version {row.version}",
            "unchanged": f"unchanged (version {row.version}): nothing added"}[change]
    register = _recheck_register(store, config, rules) if change != "unchanged" else ""
    out.print(f"layer {row.name} ({row.kind}) {what}; {row.n_features} polygon{'s' if row.n_features != 1 else ''}, "
              f"{row.area_m2 / 10_000:.2f} ha, into {store.location}{register}", highlight=False, soft_wrap=True)
    if change in ("changed", "re-added"):
        out.print("licences this layer touches are scanned again in full by the next scan (their flags are checked "
                  "against the new version)", highlight=False, soft_wrap=True)


@layers_app.command("list")
@user_errors
def layers_list(db: DbOption = None) -> None:
    """The current layers: kind, version, polygons, area, when the version came, and the flags that name it."""
    from sqlalchemy import func, select

    from gmsense.store import FlagRow, Store

    store = Store(db, create=False)
    counts = store.layer_version_counts()
    with store.session() as s:
        flags = dict(s.execute(select(FlagRow.layer_name, func.count()).where(FlagRow.layer_name.is_not(None))
                               .group_by(FlagRow.layer_name)).all())
    rows = store.current_layers()
    table = Table(title=f"protected-land layers in {store.location}")
    for col in ("layer", "kind", "version", "versions", "polygons", "area (ha)", "valid from (UTC)", "flags"):
        table.add_column(col, justify="right" if col in ("version", "versions", "polygons", "area (ha)", "flags")
                         else "left")
    for row in rows:
        table.add_row(row.name, row.kind, str(row.version), str(counts.get(row.name, 0)), str(row.n_features),
                      f"{row.area_m2 / 10_000:.2f}", _when(row.valid_from), str(flags.get(row.name, 0)))
    out.print(table)
    if not rows:
        out.print("the store holds no layers: 'gmsense layers add NAME FILE --kind KIND' adds one", highlight=False)


@layers_app.command("show")
@user_errors
def layers_show(
    name: Annotated[str, typer.Argument(help="the layer's name")],
    db: DbOption = None,
) -> None:
    """A layer: every version (kind, polygons, area, when, file) and the flags checked against each."""
    from sqlalchemy import func, select

    from gmsense.errors import InputError
    from gmsense.store import FlagRow, RegisterLayerFlagRow, Store

    store = Store(db, create=False)
    history = store.layer_history(name)
    if not history:
        raise InputError(f"there is no layer {name!r} in {store.location}; see 'gmsense layers list'")
    latest = history[-1]
    state = "current" if latest.valid_to is None else f"removed {_when(latest.valid_to)} UTC"
    out.print(f"layer {name}: {latest.kind}, version {latest.version} of {len(history)} ({state})",
              highlight=False, soft_wrap=True)
    with store.session() as s:
        flags = dict(s.execute(select(FlagRow.layer_version, func.count()).where(FlagRow.layer_name == name)
                               .group_by(FlagRow.layer_version)).all())
        overlap = dict(s.execute(select(FlagRow.layer_version, func.sum(FlagRow.overlap_m2))
                                 .where(FlagRow.layer_name == name).group_by(FlagRow.layer_version)).all())
        register = dict(s.execute(select(RegisterLayerFlagRow.layer_version, func.count())
                                  .where(RegisterLayerFlagRow.layer_name == name)
                                  .group_by(RegisterLayerFlagRow.layer_version)).all())
    table = Table(title="versions")
    for col in ("version", "kind", "polygons", "area (ha)", "valid from (UTC)", "valid to (UTC)", "change",
                "flags", "overlap (m2)", "register overlaps", "file"):
        table.add_column(col, justify="right" if col in ("version", "polygons", "area (ha)", "flags", "overlap (m2)",
                                                          "register overlaps") else "left")
    for row in history:
        table.add_row(str(row.version), row.kind, str(row.n_features), f"{row.area_m2 / 10_000:.2f}",
                      _when(row.valid_from), _when(row.valid_to), row.change, str(flags.get(row.version, 0)),
                      f"{overlap.get(row.version) or 0:.1f}", str(register.get(row.version, 0)), row.source_file or "-")
    out.print(table)


@layers_app.command("remove")
@user_errors
def layers_remove(
    name: Annotated[str, typer.Argument(help="the layer's name")],
    db: DbOption = None,
    config: ConfigOption = None,
    rules: RulesOption = None,
) -> None:
    """Stop checking a layer: its current version ends (every version is kept, with the flags that name it)."""
    from gmsense.errors import InputError
    from gmsense.store import Store

    store = Store(db, create=False)
    row = store.remove_layer(name)
    if row is None:
        raise InputError(f"there is no current layer {name!r} in {store.location}; see 'gmsense layers list'")
    register = _recheck_register(store, config, rules)
    out.print(f"layer {name} removed (version {row.version} ended; its versions and flags are kept){register}",
              highlight=False, soft_wrap=True)
