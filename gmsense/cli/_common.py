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
ScopeOption = Annotated[str | None, typer.Option(
    "--scope", help="only what this scope sees, as the review app filters it: province (default) | city:CODE[,CODE] | "
                    "county:CODE[,CODE] (a code or the name: county:尚志市, county:Shangzhi) | licence:ID[,ID]")]
AsUserOption = Annotated[str | None, typer.Option(
    "--as-user", help="only what this review-app user sees (their scope; gmsense users list)")]


def check_scope_options(scope: str | None, as_user: str | None) -> Any:
    """The Scope ``--scope`` names (parsed before any work), or None for ``--as-user`` (read from the
    store by :func:`cli_scope`) or neither (the province); both at once is an InputError."""
    from gmsense.errors import InputError
    from gmsense.store.scope import PROVINCE, parse_scope

    if scope is not None and as_user is not None:
        raise InputError("give --scope or --as-user, not both")
    if scope is not None:
        return parse_scope(scope)
    return None if as_user is not None else PROVINCE


def cli_scope(store: Any, scope: str | None, as_user: str | None) -> Any:
    """What a command reading ``store`` may show: the scope ``--scope`` names, the scope of the user
    ``--as-user`` names (an unknown or disabled user is an InputError), else the province."""
    from gmsense.errors import InputError
    from gmsense.review.auth import get_user, user_scope

    given = check_scope_options(scope, as_user)
    if given is not None:
        return given
    user = get_user(store, as_user)
    if not user.active:
        raise InputError(f"user {user.username!r} is disabled: their scope is not used")
    return user_scope(store, user)


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
