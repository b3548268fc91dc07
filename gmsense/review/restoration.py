"""The review app's restoration page without HTTP (issue 19): the accounting figures of
``gmsense restoration report`` (computed by the same functions, gmsense.outputs.restoration_report)
and the queue of register polygons whose status changed in the latest analysed year, with the
reviewers' decisions on them and their append-only log.

A change of a polygon in the latest year (the newest year of any stored status row) is, in this
order, the first that applies:

- ``restored``: restored that year, and its last status before was another (the report's
  newly restored area);
- ``reverted``: a restored polygon fell back that year (its ``reverted`` event);
- ``deadline_passed``: its ``restoration_deadline`` is on or before the end of that year and
  its latest status is not ``restored``.

A reviewer confirms or rejects a change with a reason code and a comment; each decision is a new
row of ``restoration_decisions`` (append-only, like ``reviews``). A decided change leaves the
queue; a later run that finds a new change (a new latest year) queues it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import select

from gmsense.config import Settings
from gmsense.errors import InputError
from gmsense.outputs.restoration_report import account_tables, status_table, with_changes
from gmsense.review.service import NotFoundError
from gmsense.store import RegisterRow, RestorationDecisionRow, RestorationStatusRow, Store, UserRow
from gmsense.store.scope import PROVINCE, Scope, register_clause

CHANGES = ("restored", "reverted", "deadline_passed")
#: Decisions a reviewer can take on a change, and the change's status each leaves.
DECISIONS = {"confirm": "confirmed", "reject": "rejected"}
REASONS = {"confirm": ("change_seen",),
           "reject": ("cloud_shadow", "reference_unsuitable", "register_error", "deadline_extended", "other")}
STATUSES = ("pending", "confirmed", "rejected")
MAX_COMMENT = 2000
FILTERS = ("province", "city", "county")


@dataclass(frozen=True)
class RestorationFilter:
    """The places shown (empty: any), as the flag queue filters them."""

    province: str = ""
    city: str = ""
    county: str = ""

    def as_params(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def keep(self, table: pd.DataFrame) -> pd.DataFrame:
        for key in FILTERS:
            if getattr(self, key):
                table = table[table[key].fillna("").astype(str) == getattr(self, key)]
        return table


def _table(store: Store, scope: Scope = PROVINCE) -> pd.DataFrame:
    return with_changes(status_table(store, scope))


def overview(store: Store, settings: Settings, flt: RestorationFilter | None = None,
             scope: Scope = PROVINCE) -> dict[str, Any]:
    """What the restoration page shows: ``year`` (the latest analysed, None without status rows),
    ``tables`` (the report's accounting of the polygons ``flt`` keeps: ``total`` and per level),
    ``latest`` (each table's rows of that year, as dicts), ``trend`` (the total per year),
    ``queue`` (the pending changes) and ``choices`` (the filter values present)."""
    flt = flt or RestorationFilter()
    full = _table(store, scope)
    choices = {k: sorted({str(v) for v in full[k].dropna() if str(v)}) for k in FILTERS}
    table = flt.keep(full)
    if full.empty:
        return {"year": None, "tables": {}, "latest": {}, "trend": [], "queue": [], "choices": choices}
    year = int(full["year"].max())
    tables = account_tables(store, table, settings) if not table.empty else {}
    latest = {name: frame[frame["year"] == year].to_dict("records") for name, frame in tables.items()}
    trend = tables["total"].to_dict("records") if tables else []
    return {"year": year, "tables": tables, "latest": latest, "trend": trend,
            "queue": queue(store, flt, table=full, scope=scope), "choices": choices}


def _change(rows: pd.DataFrame, year: int) -> str | None:
    """The change of one polygon (its rows of the status table, with changes) in ``year``."""
    now = rows[rows["year"] == year]
    if now.empty:
        return None
    row = now.iloc[0]
    if bool(row["new_restored"]):
        return "restored"
    if "reverted" in str(row["events"] or "").split(","):
        return "reverted"
    deadline = row["restoration_deadline"]
    known = rows[(rows["year"] <= year) & rows["status"].notna()]
    if isinstance(deadline, str) and deadline and deadline <= f"{year}-12-31" and len(known) \
            and known.iloc[-1]["status"] != "restored":
        return "deadline_passed"
    return None


def _decided(store: Store, scope: Scope = PROVINCE) -> dict[tuple[str, int, str], RestorationDecisionRow]:
    """The latest decision on each (register_id, year, change) of the polygons in ``scope``."""
    with store.session() as s:
        return {(r.register_id, r.year, r.change): r
                for r in s.scalars(select(RestorationDecisionRow).where(_decision_clause(scope))
                                   .order_by(RestorationDecisionRow.id))}


def _decision_clause(scope: Scope) -> Any:
    return RestorationDecisionRow.register_id.in_(select(RegisterRow.register_id).where(register_clause(scope)))


def changes(store: Store, table: pd.DataFrame | None = None, scope: Scope = PROVINCE) -> list[dict[str, Any]]:
    """Every polygon's change (of those in ``scope``) in the latest analysed year, decided or not,
    by register id; each a dict with the polygon's attributes, its latest status and ratio, and
    ``decision_status``. ``table``: the status table of that scope, if already read."""
    table = _table(store, scope) if table is None else table
    if table.empty:
        return []
    year = int(table["year"].max())
    decided = _decided(store, scope)
    out = []
    for register_id, rows in table.groupby("register_id", sort=True):
        change = _change(rows, year)
        if change is None:
            continue
        row = rows[rows["year"] == year].iloc[0]
        last = decided.get((str(register_id), year, change))
        out.append({"register_id": str(register_id), "year": year, "change": change,
                    "status": None if pd.isna(row["status"]) else row["status"],
                    "ratio": None if pd.isna(row["ratio"]) else float(row["ratio"]),
                    "restored_share": None if pd.isna(row["restored_share"]) else float(row["restored_share"]),
                    "area_m2": float(row["area_m2"]), "kind": row["kind"],
                    **{k: None if pd.isna(row[k]) else row[k] for k in ("province", "city", "county", "zone",
                                                                         "restoration_deadline")},
                    "decision_status": last.decision if last else "pending"})
    return out


def queue(store: Store, flt: RestorationFilter | None = None, table: pd.DataFrame | None = None,
          scope: Scope = PROVINCE) -> list[dict[str, Any]]:
    """The changes waiting for a decision, of the polygons ``flt`` keeps within ``scope``."""
    flt = flt or RestorationFilter()
    return [c for c in changes(store, table, scope) if c["decision_status"] == "pending"
            and all(not getattr(flt, k) or str(c[k] or "") == getattr(flt, k) for k in FILTERS)]


def get_polygon(store: Store, register_id: str, scope: Scope = PROVINCE
                ) -> tuple[RegisterRow, list[RestorationStatusRow], dict[str, Any] | None]:
    """A register polygon in ``scope``, its status rows (by year) and its change in the latest
    year (or None); NotFoundError for a missing one and one outside the scope alike."""
    with store.session() as s:
        polygon = s.scalar(select(RegisterRow).where(RegisterRow.register_id == register_id,
                                                     register_clause(scope)))
        if polygon is None:
            raise NotFoundError(f"no register polygon {register_id!r}")
        rows = list(s.scalars(select(RestorationStatusRow).where(RestorationStatusRow.register_id == register_id)
                              .order_by(RestorationStatusRow.year)))
    change = next((c for c in changes(store, scope=scope) if c["register_id"] == register_id), None)
    return polygon, rows, change


def history(store: Store, register_id: str | None = None, scope: Scope = PROVINCE) -> list[RestorationDecisionRow]:
    """The restoration decision log (of one polygon, or all) of the polygons in ``scope``, oldest first."""
    with store.session() as s:
        q = select(RestorationDecisionRow).where(_decision_clause(scope)).order_by(RestorationDecisionRow.id)
        if register_id is not None:
            q = q.where(RestorationDecisionRow.register_id == register_id)
        return list(s.scalars(q))


def decide(store: Store, register_id: str, user: UserRow, decision: str, reason: str, comment: str,
           year: int | None = None, change: str | None = None) -> RestorationDecisionRow:
    """Record a decision on the polygon's change in the latest year: one new row of the log.

    The user must be an active reviewer or admin; ``reason`` a code of REASONS[decision];
    ``comment`` (required, at most MAX_COMMENT characters) the reviewer's own words. ``year`` and
    ``change``, when given (the page the reviewer saw), must still be the polygon's change: a run
    since then may have changed it.
    """
    from gmsense.review.auth import can, user_scope

    if not can(user, "decide"):
        raise PermissionError(f"user {user.username!r} ({user.role}) may not decide; reviewers and admins may")
    scope = user_scope(store, user)
    if decision not in DECISIONS:
        raise InputError(f"unknown decision {decision!r}; choose one of: {', '.join(DECISIONS)}")
    if reason not in REASONS[decision]:
        raise InputError(f"a {decision} decision needs a reason, one of: {', '.join(REASONS[decision])}")
    comment = (comment or "").strip()
    if not comment:
        raise InputError("a decision needs a comment saying why (what the images show)")
    if len(comment) > MAX_COMMENT:
        raise InputError(f"the comment is longer than {MAX_COMMENT} characters")
    _, _, current = get_polygon(store, register_id, scope)
    if current is None:
        raise InputError(f"register polygon {register_id} has no status change to decide in the latest year")
    if (year is not None and year != current["year"]) or (change and change != current["change"]):
        raise InputError(f"register polygon {register_id}'s change is now {current['change']} in {current['year']}: "
                         "reload the page and decide again")
    with store.session() as s, s.begin():
        s.get(RegisterRow, register_id, with_for_update=True)  # one decision on a polygon at a time
        last = s.scalars(select(RestorationDecisionRow).where(
            RestorationDecisionRow.register_id == register_id, RestorationDecisionRow.year == current["year"],
            RestorationDecisionRow.change == current["change"]).order_by(RestorationDecisionRow.id.desc())).first()
        row = RestorationDecisionRow(register_id=register_id, year=current["year"], change=current["change"],
                                     user_id=user.id, username=user.username, decision=DECISIONS[decision],
                                     reason=reason, comment=comment,
                                     previous_status=last.decision if last else "pending")
        s.add(row)
    return row
