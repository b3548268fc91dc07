"""What every command module shares: consoles, common options, and the user-error wrapper."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from gmsense.errors import GmsenseError

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[str | None, typer.Option(
    "--db", help="store URL or SQLite path; default $GMSENSE_DB, else ./gmsense.db")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="settings YAML overriding configs/default.yaml")]
LayoutOption = Annotated[str | None, typer.Option(
    "--layout", help="for --source local: auto (default: detected) | folder | theia | safe | landsat | stac | cube")]


def user_errors(func: F) -> F:
    """Turn GmsenseError into one line on stderr and its exit code (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default", UserWarning)
                # rasterio warns about a missing geotransform when rasterising in dask worker threads,
                # although every call passes an explicit transform: noise for a user.
                warnings.filterwarnings("ignore", message="Dataset has no geotransform")
                warnings.showwarning = _show_warning
                return func(*args, **kwargs)
        except GmsenseError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def warn_unknown_divisions(records: list[tuple[str, dict[str, Any]]], *, located: bool = False) -> None:
    """A warning naming the rows (id, attributes) whose province/city/county name no division of the
    shipped table (gmsense.geo.divisions): only province-wide users will see them, unless ``located``
    (the store holds county boundaries: their divisions then come from their geometry)."""
    from gmsense.geo.divisions import candidates, divisions_of

    fate = ("their divisions come from their geometry (the county boundaries)" if located
            else "only province-wide users see them")
    unknown: dict[tuple[str, str], list[str]] = {}
    for ident, attrs in records:
        codes = divisions_of(attrs)
        for level in ("county", "city"):
            value = attrs.get(level)
            if value not in (None, "") and codes[f"{level}_code"] is None:
                unknown.setdefault((level, str(value)), []).append(ident)
    for (level, value), ids in sorted(unknown.items()):
        near = "; ".join(d.label() for d in candidates(level, value, 3))
        err.print(f"[yellow]warning:[/] {level} {value!r} ({len(ids)}: {', '.join(ids[:5])}"
                  f"{', ...' if len(ids) > 5 else ''}) is not a division gmsense knows, so "
                  f"{fate}{'; closest: ' + near if near else ''}", highlight=False, soft_wrap=True)
