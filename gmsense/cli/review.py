"""Commands of the regulators' side: ``review serve``, ``users ...`` and ``labels export``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gmsense.cli._common import ConfigOption, DbOption, err, out, user_errors
from gmsense.errors import InputError

review_app = typer.Typer(help="The regulators' review web app.", no_args_is_help=True)
users_app = typer.Typer(help="Users of the review app, their roles (viewer, reviewer, admin, assessor) and scopes.",
                        no_args_is_help=True)
SCOPE_HELP = ("what the user sees: province | city:CODE[,CODE] | county:CODE[,CODE] (a code, or the name as the "
              "register holds it: county:尚志市, county:Shangzhi) | licence:ID[,ID] (assessors); admins: province")
labels_app = typer.Typer(help="Reviewers' decisions as training labels.", no_args_is_help=True)
notify_app = typer.Typer(help="Digests of new and overdue work, by e-mail and a signed webhook.", no_args_is_help=True)


def _store(db: str | None, *, create: bool = True):
    """The store; commands that only read pass ``create=False``: a missing store is then an error
    (exit 2) naming where it was looked for, never a new empty one."""
    from gmsense.store import Store

    return Store(db, create=create)


@review_app.command("serve")
@user_errors
def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(
        help="address to listen on; 0.0.0.0 exposes the app to the network")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="picture cache; default: beside a SQLite "
                                                   "store, else ~/.cache/gmsense/review")] = None,
    secure_cookies: Annotated[bool, typer.Option(
        "--secure-cookies", help="mark cookies Secure (behind HTTPS)")] = False,
    max_body_bytes: Annotated[int, typer.Option(
        "--max-body-bytes", min=1024, help="larger request bodies are refused (413)")] = 1_000_000,
    warm: Annotated[int, typer.Option(
        "--warm", min=0, help="render the pictures of the first N flags of the queue at start (0: none)")] = 20,
    config: ConfigOption = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="flag rules and escalation chains YAML "
                                               "(default configs/rules.yaml)")] = None,
) -> None:
    """Serve the review app (queue, flag pages with before/after images, decisions, dashboard, restoration)."""
    import uvicorn

    from gmsense.config import load_settings
    from gmsense.review.app import create_app
    from gmsense.review.auth import list_users
    from gmsense.review.signing import SigningKeyError, signing_key

    store = _store(db)
    if not list_users(store):
        err.print("[yellow]warning:[/] no users yet; add one with `gmsense users add NAME --role admin`",
                  highlight=False)
    try:
        signing_key()
    except SigningKeyError as exc:
        err.print(f"[yellow]warning:[/] assessors cannot add assessments until this is fixed: {exc}",
                  highlight=False, soft_wrap=True)
    if cache_dir is None:
        database = store.engine.url.database if store.engine.dialect.name == "sqlite" else None
        cache_dir = (Path(database).resolve().parent / ".gmsense-review-cache" if database and database != ":memory:"
                     else Path.home() / ".cache" / "gmsense" / "review")
    app = create_app(store, cache_dir=cache_dir, secure_cookies=secure_cookies,
                     max_body_bytes=max_body_bytes, warm_pictures=warm,
                     settings=load_settings(config, rules_path=rules))
    out.print(f"review app on http://{host}:{port}/ (store {store._safe_url()}); Ctrl-C stops it", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("password", hide_input=True)
    second = typer.prompt("password again", hide_input=True)
    if first != second:
        raise InputError("the two passwords differ")
    return first


@users_app.command("add")
@user_errors
def users_add(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[str, typer.Option(help="viewer | reviewer | admin | assessor")] = "viewer",
    scope: Annotated[str | None, typer.Option(help=SCOPE_HELP)] = None,
    lang: Annotated[str | None, typer.Option(help="interface language: en | zh (default: the browser's)")] = None,
    email: Annotated[str | None, typer.Option(help="where the user's digest goes (gmsense notify digest)")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from the first line "
                                                 "of stdin instead of a prompt")] = False,
    db: DbOption = None,
) -> None:
    """Add a user. The password is asked for (or read from stdin), never taken as an argument."""
    from gmsense.review.auth import add_user, check_email, check_scope
    from gmsense.store.scope import PROVINCE, parse_scope

    if scope is None and role != "admin":
        raise InputError("give the user a scope with --scope: province, city:CODE, county:CODE (or the name, "
                         "county:尚志市) or, for an assessor, licence:ID[,ID]")
    parsed = parse_scope(scope) if scope is not None else PROVINCE
    check_scope(role, parsed)  # before the password is asked for
    if email:
        check_email(email)
    store = _store(db)
    user = add_user(store, name, _read_password(password_stdin), role, lang, scope=parsed, email=email)
    out.print(f"added {user.username} ({user.role}, {parsed.describe()})", highlight=False)


@users_app.command("scope")
@user_errors
def users_scope(name: Annotated[str, typer.Argument(help="user name")],
                scope: Annotated[str, typer.Argument(help=SCOPE_HELP)], db: DbOption = None) -> None:
    """Change what a user sees (ends their sessions)."""
    from gmsense.review.auth import set_scope
    from gmsense.store.scope import parse_scope

    parsed = parse_scope(scope)
    set_scope(_store(db), name, parsed)
    out.print(f"{name} now sees {parsed.describe()}", highlight=False)


@users_app.command("email")
@user_errors
def users_email(name: Annotated[str, typer.Argument(help="user name")],
                address: Annotated[str, typer.Argument(help="e-mail address for digests; '' for none")],
                db: DbOption = None) -> None:
    """Set where a user's digest goes (gmsense notify digest)."""
    from gmsense.review.auth import set_email

    user = set_email(_store(db), name, address or None)
    out.print(f"digests of {user.username} go to {user.email or 'nowhere'}", highlight=False)


@users_app.command("list")
@user_errors
def users_list(db: DbOption = None) -> None:
    """List users, their roles and whether they are active."""
    from gmsense.review.auth import list_users, user_scope

    table = Table(title="users")
    store = _store(db, create=False)
    users = list_users(store)
    emails = any(u.email for u in users)  # the column only when someone has an address (narrow terminals)
    for column in ("user", "role", "scope", "language", *(("e-mail",) if emails else ()), "active", "created (UTC)"):
        table.add_column(column)
    for u in users:
        email = (u.email or "-",) if emails else ()
        table.add_row(u.username, u.role, str(user_scope(store, u)), u.lang or "-", *email,
                      "yes" if u.active else "no", f"{u.created_at:%Y-%m-%d %H:%M}")
    out.print(table)


@users_app.command("disable")
@user_errors
def users_disable(name: Annotated[str, typer.Argument()], db: DbOption = None) -> None:
    """Disable a user and end their sessions (their decisions stay in the audit log)."""
    from gmsense.review.auth import set_active

    set_active(_store(db), name, False)
    out.print(f"disabled {name}", highlight=False)


@users_app.command("enable")
@user_errors
def users_enable(name: Annotated[str, typer.Argument()], db: DbOption = None) -> None:
    """Enable a disabled user again."""
    from gmsense.review.auth import set_active

    set_active(_store(db), name, True)
    out.print(f"enabled {name}", highlight=False)


@users_app.command("passwd")
@user_errors
def users_passwd(
    name: Annotated[str, typer.Argument()],
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    db: DbOption = None,
) -> None:
    """Set a user's password (asked for, or read from stdin); ends their sessions."""
    from gmsense.review.auth import set_password

    set_password(_store(db), name, _read_password(password_stdin))
    out.print(f"password of {name} changed", highlight=False)


@users_app.command("unlock")
@user_errors
def users_unlock(
    name: Annotated[str, typer.Argument(help="user name (any case)")],
    address: Annotated[str | None, typer.Option(
        "--address", help="also clear the failed logins from this client address (it is locked "
                          "out too)")] = None,
    db: DbOption = None,
) -> None:
    """Let a user locked out by failed logins log in again now (clears their failed logins)."""
    from gmsense.review.auth import get_user, unlock

    store = _store(db)
    user = get_user(store, name)
    cleared = unlock(store, user.username, address)
    where = f" and from {address}" if address else ""
    out.print(f"cleared {cleared} failed logins of {user.username}{where}", highlight=False)


@labels_app.command("export")
@user_errors
def labels_export(
    out_file: Annotated[Path, typer.Option("--out", help="GeoPackage, GeoJSON or CSV (by suffix)")],
    db: DbOption = None,
) -> None:
    """Write reviewers' latest decision per patch as labels (disturbance_class, date, decision...)."""
    from gmsense.classify.labels import write_labels

    path, n = write_labels(_store(db, create=False), out_file)
    out.print(f"{n} labels -> {path}", highlight=False)


@notify_app.command("digest")
@user_errors
def notify_digest(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the digests; send and record nothing")] = False,
    user: Annotated[list[str] | None, typer.Option("--user", help="only this user (repeatable)")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="flag rules and escalation chains YAML "
                                               "(default configs/rules.yaml)")] = None,
) -> None:
    """Per user, the new flags since their last digest, the stages awaiting them and the overdue stages
    in their scope: by e-mail (notify settings; TLS verified; SMTP login from the environment) and the
    optional signed webhook (retried). Exit 3 if the SMTP server refused some recipients, 1 if a
    channel delivered nothing (what the other delivered is recorded all the same)."""
    from gmsense.config import load_settings
    from gmsense.errors import EXIT_PARTIAL
    from gmsense.review.notify import NotifyError, send

    settings = load_settings(config, rules_path=rules)
    try:
        outcome = send(_store(db, create=False), settings, dry_run=dry_run, usernames=user or None)
    except NotifyError as exc:
        if exc.outcome is None:
            raise
        _report_digests(exc.outcome, settings, dry_run)
        raise
    _report_digests(outcome, settings, dry_run)
    if outcome.failed:
        raise typer.Exit(EXIT_PARTIAL)


def _report_digests(outcome: Any, settings: Any, dry_run: bool) -> None:
    """One line per user (what was sent by which channel, or why not); the whole digests for a dry run."""
    for digest in outcome.digests:
        name = digest.user.username
        counts = (f"{digest.new_total} new, {digest.awaiting.total} awaiting, {digest.overdue.total} overdue "
                  f"({digest.scope})")
        channels = outcome.channels.get(name, [])
        if dry_run and not digest.empty:
            out.print(f"--- {name} <{digest.user.email or 'no e-mail'}>: {digest.subject()}", highlight=False,
                      markup=False, soft_wrap=True)
            out.print(digest.text(settings.notify.app_url), highlight=False, markup=False, soft_wrap=True)
        elif name in outcome.failed:
            also = f" (sent by {' and '.join(channels)})" if channels else ""
            err.print(f"[red]{name}: not e-mailed[/]{also} ({counts}): {outcome.failed[name]}", highlight=False)
        elif name in outcome.skipped:
            out.print(f"{name}: not sent, {outcome.skipped[name]} ({counts})", highlight=False)
        elif not dry_run:
            out.print(f"{name}: sent by {' and '.join(channels) or 'nothing'} ({counts})", highlight=False)
    if outcome.delivery_id:
        out.print(f"webhook delivery {outcome.delivery_id}", highlight=False)
