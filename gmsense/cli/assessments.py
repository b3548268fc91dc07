"""``gmsense assessments``: third-party assessments in the store (gmsense.review.assessments), and
checking that none was changed since it was signed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from gmsense.cli._common import DbOption, err, out, user_errors
from gmsense.errors import EXIT_FAILED

assessments_app = typer.Typer(help="Third-party assessors' signed assessments of licences and flags.",
                              no_args_is_help=True)


@assessments_app.command("list")
@user_errors
def assessments_list(
    licence: Annotated[str | None, typer.Option("--licence", help="only those of this licence (and its flags)")] = None,
    db: DbOption = None,
) -> None:
    """List assessments, oldest first: number, time (UTC), assessor, target, verdict, files, digest."""
    from gmsense.errors import InputError
    from gmsense.review.assessments import assessments
    from gmsense.store import SiteRow, Store

    store = Store(db, create=False)
    if licence is not None:
        with store.session() as s:
            if s.get(SiteRow, licence) is None:
                raise InputError(f"no licence {licence!r} in the store {store.location}")
    found = assessments(store, site_id=licence)
    table = Table(title=f"assessments{' of ' + licence if licence else ''}")
    for column in ("#", "id", "recorded (UTC)", "assessor", "licence", "flag", "verdict", "files", "digest"):
        table.add_column(column, justify="right" if column in ("#", "id", "files") else "left")
    for a in found:
        r = a.row
        table.add_row(str(r.seq), str(r.id), f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.username, r.site_id,
                      str(r.flag_id) if r.flag_id is not None else "-", r.verdict, str(len(a.attachments)),
                      r.digest[:16])
    out.print(table)
    out.print(f"{len(found)} assessment{'s' if len(found) != 1 else ''}", highlight=False)


@assessments_app.command("verify")
@user_errors
def assessments_verify(db: DbOption = None) -> None:
    """Recompute every attachment's SHA-256, every assessment's digest and its signature (the key from
    $GMSENSE_ASSESSMENT_KEY), and look for deleted ones; exit 1 naming each that fails."""
    from gmsense.review.assessments import verify
    from gmsense.review.signing import signing_key
    from gmsense.store import Store

    key = signing_key()  # a missing key is a clear error before the store is read
    result = verify(Store(db, create=False), key)
    for problem in result.problems:
        which = f"assessment {problem.assessment_id} (no. {problem.seq})" if problem.assessment_id else \
            f"no. {problem.seq}"
        err.print(f"[red]FAILED[/] {which}: {problem.what}", highlight=False, soft_wrap=True)
    summary = (f"{result.assessments} assessments and {result.attachments} attachments checked with key "
               f"{key.key_id}")
    if result.problems:
        err.print(f"{summary}: {len(result.failed)} failed", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    out.print(f"{summary}: all intact", highlight=False)
