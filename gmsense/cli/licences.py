"""``gmsense licences``: the licence register in the store, with its history (gmsense.geo.licences)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gmsense.cli._common import ConfigOption, DbOption, out, user_errors, warn_unknown_divisions

licences_app = typer.Typer(help="The licence register in the store: import licence files, keep their history, "
                                "list, show and compare versions (scan them with 'gmsense scan --all-active').",
                           no_args_is_help=True)


def _plural(n: int, singular: str, plural_form: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural_form or singular + 's')}"


def _ids(ids: list[str], limit: int = 20) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"


def _value(value: Any) -> str:
    return "-" if value is None else str(value)


@licences_app.command("import")
@user_errors
def licences_import(
    file: Annotated[Path, typer.Argument(help="licence areas: GeoJSON, GeoPackage or Shapefile, any CRS "
                                         "(the same contract as --sites)")],
    db: DbOption = None,
    layer: Annotated[str | None, typer.Option("--layer", help="GeoPackage layer (default: 'sites' or the only one)")]
    = None,
    retire_missing: Annotated[bool, typer.Option(
        "--retire-missing", help="licences of the store that this file lacks get a last version with status "
                                 "'ended' (without it they are kept as they are)")] = False,
    config: ConfigOption = None,
) -> None:
    """Import licences into the store's register. A licence whose boundary or any attribute changed gets a new
    version (the older ones are kept); an identical one adds nothing; licences missing from the file are never
    deleted."""
    from gmsense.config import load_settings
    from gmsense.errors import InputError
    from gmsense.geo.sites import read_sites
    from gmsense.store import Store

    if not file.exists():
        raise InputError(f"licence file {file} does not exist")
    sites = read_sites(file, repair_invalid=load_settings(config).sites.repair_invalid, layer=layer)
    if not sites:
        raise InputError(f"{file} holds no licences; nothing was imported"
                         + (" (and none was retired: --retire-missing needs the full register)"
                            if retire_missing else ""))
    store = Store(db)
    located = store.has_boundaries()
    warn_unknown_divisions([(site.site_id, site.attrs) for site in sites], located=located)
    outcome = store.import_licences(sites, source_file=str(file.resolve()), retire_missing=retire_missing)
    out.print(f"imported {_plural(len(sites), 'licence')} from {file} into {store.location}: "
              f"{len(outcome['new'])} new, {len(outcome['changed'])} changed (a new version each), "
              f"{len(outcome['unchanged'])} unchanged", highlight=False, soft_wrap=True)
    if outcome["changed"]:
        out.print(f"new versions: {_ids(outcome['changed'])} (see 'gmsense licences diff ID')",
                  highlight=False, soft_wrap=True)
    if located:
        unlocated = f"; {len(outcome['unlocated'])} in no boundary, without a division" if outcome["unlocated"] else ""
        relocated = (f"; the divisions of {_plural(len(outcome['relocated']), 'unchanged licence')} updated"
                     if outcome["relocated"] else "")
        out.print(f"divisions from the county boundaries (no division attributes): "
                  f"{_plural(len(outcome['located']), 'licence')}{unlocated}{relocated}", highlight=False,
                  soft_wrap=True)
    missing = [m for m in outcome["missing"] if m not in outcome["retired"]]
    if outcome["retired"]:
        out.print(f"retired {_plural(len(outcome['retired']), 'licence')} absent from this file (a last version with "
                  f"status 'ended'): {_ids(outcome['retired'])}", highlight=False, soft_wrap=True)
    if missing:
        already = " (already ended or revoked)" if retire_missing else ""
        them = "it" if len(missing) == 1 else "them"
        hint = "" if retire_missing else f"; pass --retire-missing to mark {them} ended"
        out.print(f"{_plural(len(missing), 'licence')} of the store {'is' if len(missing) == 1 else 'are'} not in "
                  f"this file and {'was' if len(missing) == 1 else 'were'} kept unchanged{already}: {_ids(missing)}"
                  f"{hint}", highlight=False, soft_wrap=True)


@licences_app.command("list")
@user_errors
def licences_list(db: DbOption = None) -> None:
    """Every licence of the register: versions, when its latest version came, its status and dates."""
    from gmsense.store import Store

    store = Store(db, create=False)  # reads only
    counts = store.licence_version_counts()
    table = Table(title=f"licences in {store.location}")
    for col in ("licence", "versions", "latest valid from (UTC)", "status", "licence start", "licence end"):
        table.add_column(col, justify="right" if col == "versions" else "left")
    rows = store.latest_licence_versions()
    for row in rows:
        attrs = row.attrs or {}
        table.add_row(row.licence_id, str(counts.get(row.licence_id, 0)), _when(row.valid_from),
                      _value(attrs.get("status")), _value(attrs.get("licence_start")), _value(attrs.get("licence_end")))
    out.print(table)
    if not rows:
        out.print("the register holds no licences: 'gmsense licences import FILE' adds them", highlight=False)


def _history(store: Any, licence_id: str) -> list[Any]:
    from gmsense.errors import InputError

    history = store.licence_history(licence_id)
    if not history:
        raise InputError(f"there is no licence {licence_id!r} in the register of {store.location}; see "
                         "'gmsense licences list'")
    return history


@licences_app.command("show")
@user_errors
def licences_show(
    licence_id: Annotated[str, typer.Argument(help="the licence's site_id")],
    db: DbOption = None,
) -> None:
    """A licence: the attributes of its latest version, and its version history."""
    from gmsense.geo.licences import attribute_changes, diff_versions
    from gmsense.store import Store

    store = Store(db, create=False)
    history = _history(store, licence_id)
    latest = history[-1]
    out.print(f"licence {licence_id}: version {latest.version} of {len(history)}, valid from "
              f"{_when(latest.valid_from)} UTC, area {latest.area_m2 / 10_000:.4f} ha ({latest.local_crs})",
              highlight=False, soft_wrap=True)
    attrs = Table(title="attributes (latest version)")
    attrs.add_column("attribute")
    attrs.add_column("value")
    for key, value in sorted((latest.attrs or {}).items()):
        attrs.add_row(key, _value(value))
    out.print(attrs)
    table = Table(title="versions")
    for col in ("version", "valid from (UTC)", "valid to (UTC)", "change", "area (m2)", "what changed", "file"):
        table.add_column(col, justify="right" if col in ("version", "area (m2)") else "left")
    previous = None
    for row in history:
        what = "-"
        if previous is not None:
            diff = diff_versions(previous, row)
            parts = [*attribute_changes(previous.attrs or {}, row.attrs or {})]
            if diff.boundary_changed:
                parts.insert(0, f"boundary ({diff.symmetric_difference_m2:.1f} m2 differ)")
            what = ", ".join(parts) or "-"
        table.add_row(str(row.version), _when(row.valid_from), _when(row.valid_to), row.change,
                      f"{row.area_m2:.1f}", what, row.source_file or "-")
        previous = row
    out.print(table)


@licences_app.command("diff")
@user_errors
def licences_diff(
    licence_id: Annotated[str, typer.Argument(help="the licence's site_id")],
    from_version: Annotated[int | None, typer.Option("--from", help="older version (default: the one before --to)")]
    = None,
    to_version: Annotated[int | None, typer.Option("--to", help="newer version (default: the latest)")] = None,
    db: DbOption = None,
) -> None:
    """What changed between two versions of a licence: attributes, and the boundary (areas and the ground gained
    and lost, in m2)."""
    from gmsense.errors import InputError
    from gmsense.geo.licences import diff_versions
    from gmsense.store import Store

    store = Store(db, create=False)
    history = _history(store, licence_id)
    by_version = {row.version: row for row in history}
    to_version = history[-1].version if to_version is None else to_version
    from_version = to_version - 1 if from_version is None else from_version
    known = ", ".join(str(v) for v in by_version)
    for flag, version in (("--to", to_version), ("--from", from_version)):
        if version not in by_version:
            if flag == "--from" and len(history) == 1:
                raise InputError(f"licence {licence_id} has one version only: there is nothing to compare")
            raise InputError(f"licence {licence_id} has no version {version} ({flag}); its versions are {known}")
    diff = diff_versions(by_version[from_version], by_version[to_version])
    out.print(f"licence {licence_id}: version {from_version} ({_when(by_version[from_version].valid_from)}) -> "
              f"version {to_version} ({_when(by_version[to_version].valid_from)})", highlight=False, soft_wrap=True)
    if diff.attributes:
        table = Table(title="attributes")
        for col in ("attribute", f"version {from_version}", f"version {to_version}"):
            table.add_column(col)
        for key, (old, new) in diff.attributes.items():
            table.add_row(key, _value(old), _value(new))
        out.print(table)
    else:
        out.print("attributes: unchanged", highlight=False)
    boundary = "changed" if diff.boundary_changed else "unchanged"
    out.print(f"boundary: {boundary}; area {diff.area_from_m2:.1f} m2 -> {diff.area_to_m2:.1f} m2 "
              f"(difference {diff.area_change_m2:+.1f} m2); symmetric difference {diff.symmetric_difference_m2:.1f} m2 "
              f"({diff.added_m2:.1f} m2 added, {diff.removed_m2:.1f} m2 removed)", highlight=False, soft_wrap=True)
