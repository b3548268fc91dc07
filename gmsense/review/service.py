"""What the review app does with the store, without HTTP: the queue, a flag's evidence, decisions
and their audit log, and the labels researchers retrain from. Pure functions over a Store, shared
by the web app, the JSON API, the CLI and the tests.

Every read takes the user's :class:`~gmsense.store.scope.Scope` and adds its condition to the SQL
query (filtering, ordering, counting and paging happen in the database); a row outside the scope
is answered exactly as a missing one (:class:`NotFoundError`). ``decide`` reads the deciding user's
own scope from the store.

The queue's order (most severe first, then oldest, then by id) is read from the index
``ix_flags_queue_order`` (severity, created_at, id; revision 0013), one severity after the other: the
counts per status and severity of the matching flags (one GROUP BY) say which severities a page
falls in and at what offset, so no query sorts the matching flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.orm import Session

from gmsense.config import RulesSettings
from gmsense.errors import InputError
from gmsense.records import PATCH_CLASSES
from gmsense.review import NotFoundError, stages
from gmsense.store import FlagRow, PatchRow, ReviewRow, SiteRow, Store, UserRow
from gmsense.store.scope import PROVINCE, Scope, flag_clause, review_clause, site_clause

#: Decisions a reviewer can take, and the flag status each leaves.
DECISIONS = {"confirm": "confirmed", "dismiss": "dismissed", "field_visit": "field_visit"}
#: Reason codes; a dismissal must give one of DISMISS_REASONS.
DISMISS_REASONS = ("natural_change", "cloud_shadow", "approved_work", "misregistration", "other")
CONFIRM_REASONS = ("violation",)
FIELD_VISIT_REASONS = ("needs_field_visit",)
REASONS = {"confirm": CONFIRM_REASONS, "dismiss": DISMISS_REASONS, "field_visit": FIELD_VISIT_REASONS}
STATUSES = ("open", "field_visit", "confirmed", "dismissed")
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
MAX_COMMENT = 2000
PAGE_SIZE = 25


@dataclass(frozen=True)
class QueueFilter:
    """Filters of the queue; empty strings mean "any". ``status`` defaults to the open work
    (open and field visit), or to every status when a stage filter is given (the flags awaiting a
    later stage are confirmed ones). Dates are ISO ``YYYY-MM-DD`` on the flag's creation day.
    ``stage``: the flags whose escalation stage pending is at a level (county, city, province), or
    whose chain is complete; ``overdue`` (yes): the flags whose pending stage is past its deadline
    (gmsense.review.stages)."""

    status: str = ""
    rule: str = ""
    severity: str = ""
    province: str = ""
    city: str = ""
    county: str = ""
    mineral_class: str = ""
    licence_type: str = ""
    site_id: str = ""
    date_from: str = ""
    date_to: str = ""
    stage: str = ""
    overdue: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", "all" if self.stage or self.overdue else "pending")
        if self.status not in ("pending", "all", *STATUSES):
            raise InputError(f"unknown status {self.status!r}; choose pending, all or one of {', '.join(STATUSES)}")
        if self.stage and self.stage not in stages.STAGE_FILTERS:
            raise InputError(f"unknown stage {self.stage!r}; choose one of: {', '.join(stages.STAGE_FILTERS)}")
        if self.overdue not in ("", "yes"):
            raise InputError(f"overdue is 'yes' (only the flags whose stage is past its deadline) or empty, "
                             f"not {self.overdue!r}")
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value:
                try:
                    date.fromisoformat(value)
                except ValueError:
                    raise InputError(f"{name} must be a date YYYY-MM-DD, not {value!r}") from None

    def as_params(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass
class QueuePage:
    items: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    counts: dict[str, int] = field(default_factory=dict)


_ATTR_FILTERS = ("province", "city", "county", "mineral_class", "licence_type")
_DIVISION_CODES = {"province": SiteRow.province_code, "city": SiteRow.city_code, "county": SiteRow.county_code}
#: Severity as a number for ORDER BY (most severe first).
SEVERITY_ORDER = case(SEVERITY_RANK, value=FlagRow.severity, else_=9)


def _site_condition(flt: QueueFilter) -> ColumnElement[bool] | None:
    """Licences whose attributes match the filter's licence fields (a division also by its code)."""
    conditions = []
    for key in _ATTR_FILTERS:
        value = getattr(flt, key)
        if not value:
            continue
        named = SiteRow.attrs[key].as_string() == value
        conditions.append(or_(named, _DIVISION_CODES[key] == value) if key in _DIVISION_CODES else named)
    if not conditions:
        return None
    return FlagRow.site_id.in_(select(SiteRow.site_id).where(*conditions))


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def selected_statuses(flt: QueueFilter) -> tuple[str, ...] | None:
    """The statuses the filter selects (None: every status)."""
    if flt.status == "pending":
        return ("open", "field_visit")
    return None if flt.status == "all" else (flt.status,)


def flag_conditions(flt: QueueFilter, scope: Scope = PROVINCE, *, status: bool = True,
                    rules: RulesSettings | None = None, now: datetime | None = None) -> list[ColumnElement[bool]]:
    """The WHERE conditions on ``flags`` of the filter within ``scope`` (without the status
    filter when ``status`` is False: the counts per status). ``rules`` (the escalation chains;
    default configs/rules.yaml) and ``now`` (default: now, naive UTC) judge the stage filters."""
    q: list[ColumnElement[bool]] = [flag_clause(scope)]
    statuses = selected_statuses(flt)
    if status and statuses is not None:
        q.append(FlagRow.status.in_(statuses) if len(statuses) > 1 else FlagRow.status == statuses[0])
    if flt.rule:
        q.append(FlagRow.rule == flt.rule)
    if flt.severity:
        q.append(FlagRow.severity == flt.severity)
    if flt.site_id:
        q.append(FlagRow.site_id == flt.site_id)
    if flt.date_from:
        q.append(FlagRow.created_at >= datetime.combine(date.fromisoformat(flt.date_from), time.min))
    if flt.date_to:
        day_after = date.fromisoformat(flt.date_to) + timedelta(days=1)
        q.append(FlagRow.created_at < datetime.combine(day_after, time.min))
    sites = _site_condition(flt)
    if sites is not None:
        q.append(sites)
    if flt.stage or flt.overdue:
        from gmsense.review.escalation import shipped_rules

        rules = rules or shipped_rules()
        if flt.stage:
            q.append(stages.stage_condition(flt.stage, rules))
        if flt.overdue:
            q.append(stages.overdue_condition(rules, now or _utc_now()))
    return q


#: The queue's order: most severe first, then oldest, then by id (a total order, so pages never overlap).
QUEUE_ORDER = (SEVERITY_ORDER, FlagRow.created_at, FlagRow.id)


def _severity_segments() -> list[tuple[str | None, ColumnElement[bool]]]:
    """The queue's severities in their order, then every other severity (ranked last together)."""
    ranked = sorted(SEVERITY_RANK, key=SEVERITY_RANK.__getitem__)
    return [*((severity, FlagRow.severity == severity) for severity in ranked),
            (None, FlagRow.severity.not_in(ranked))]


def _page_ids(s: Session, where: list[ColumnElement[bool]], per_severity: dict[str, int], offset: int,
              limit: int) -> list[int]:
    """Ids of the flags at ``offset`` .. ``offset + limit`` of the queue's order among those meeting
    ``where``, given how many of them each severity has: each severity's part is read from the index
    (severity, created_at, id) with its own offset, never sorted. Should a count be stale (a change
    between the two statements), the page is filled from the next severity."""
    ids: list[int] = []
    for severity, condition in _severity_segments():
        n = per_severity.get(severity, 0) if severity is not None else sum(
            v for k, v in per_severity.items() if k not in SEVERITY_RANK)
        if offset >= n:
            offset -= n
            continue
        ids += s.scalars(select(FlagRow.id).where(*where, condition).order_by(FlagRow.created_at, FlagRow.id)
                         .offset(offset).limit(limit - len(ids)))
        offset = 0
        if len(ids) >= limit:
            break
    return ids


def queue(store: Store, flt: QueueFilter | None = None, page: int = 1, page_size: int = PAGE_SIZE,
          scope: Scope = PROVINCE, *, rules: RulesSettings | None = None, now: datetime | None = None) -> QueuePage:
    """Flags matching ``flt`` within ``scope``, most severe first, then oldest first; one page of
    them, with the total and the counts per status of the flags matching the other filters, and
    each flag's escalation stage (``stage``: gmsense.review.stages.CurrentStage as JSON). One
    COUNT ... GROUP BY status, severity gives the counts, the total and where the page starts; the
    page's ids come from the queue-order index, then their rows (licence and patch joined) by id.
    ``rules`` and ``now``: as :func:`flag_conditions`."""
    from gmsense.review.escalation import shipped_rules

    flt = flt or QueueFilter()
    page = max(1, page)
    rules, now = rules or shipped_rules(), now or _utc_now()
    statuses = selected_statuses(flt)
    with store.session() as s:
        grouped = s.execute(select(FlagRow.status, FlagRow.severity, func.count())
                            .where(*flag_conditions(flt, scope, status=False, rules=rules, now=now))
                            .group_by(FlagRow.status, FlagRow.severity)).all()
        counts: dict[str, int] = {}
        per_severity: dict[str, int] = {}
        for status, severity, n in grouped:
            counts[status] = counts.get(status, 0) + int(n)
            if statuses is None or status in statuses:
                per_severity[severity] = per_severity.get(severity, 0) + int(n)
        total = sum(per_severity.values())
        ids = _page_ids(s, flag_conditions(flt, scope, rules=rules, now=now), per_severity,
                        (page - 1) * page_size, page_size)
        rows = s.execute(select(FlagRow, SiteRow, PatchRow)
                         .join(SiteRow, SiteRow.site_id == FlagRow.site_id)
                         .outerjoin(PatchRow, PatchRow.patch_id == FlagRow.patch_id)
                         .where(FlagRow.id.in_(ids))).all() if ids else []
        current = stages.current_stages(s, [f for f, _, _ in rows], rules, now)
    position = {flag_id: k for k, flag_id in enumerate(ids)}
    rows.sort(key=lambda row: position[row[0].id])
    items = [{**flag_summary(f, site, patch), "stage": current[f.id].as_json()} for f, site, patch in rows]
    return QueuePage(items, total, page, max(1, -(-total // page_size)),
                     {k: int(counts.get(k, 0)) for k in STATUSES})


def flag_summary(f: FlagRow, site: SiteRow | None, patch: PatchRow | None) -> dict[str, Any]:
    attrs = (site.attrs or {}) if site else {}
    return {
        "id": f.id, "site_id": f.site_id, "patch_id": f.patch_id, "rule": f.rule, "severity": f.severity,
        "status": f.status, "message": f.message, "created_at": f.created_at.isoformat(timespec="seconds"),
        "created_scan_id": f.created_scan_id, "updated_scan_id": f.updated_scan_id,
        "site_name": attrs.get("name") or "", "province": attrs.get("province") or "",
        "city": attrs.get("city") or "", "county": attrs.get("county") or "",
        "province_code": f.province_code, "city_code": f.city_code, "county_code": f.county_code,
        "mineral_class": attrs.get("mineral_class") or "", "licence_type": attrs.get("licence_type") or "",
        "disturbance_class": patch.disturbance_class if patch else None,
        "area_m2": patch.area_m2 if patch else None,
        "first_detected": patch.first_detected if patch else None,
    }


def has_licences(store: Store, scope: Scope = PROVINCE) -> bool:
    """Whether any licence is in ``scope``."""
    with store.session() as s:
        return s.scalar(select(SiteRow.site_id).where(site_clause(scope)).limit(1)) is not None


def filter_choices(store: Store, scope: Scope = PROVINCE) -> dict[str, list[str]]:
    """Values present within ``scope`` for each queue filter (for the filter form)."""
    with store.session() as s:
        rules = sorted(s.scalars(select(FlagRow.rule).where(flag_clause(scope)).distinct()))
        out = {"rule": rules, "severity": list(SEVERITY_RANK), "status": ["pending", "all", *STATUSES]}
        for key in _ATTR_FILTERS:
            column = SiteRow.attrs[key].as_string()
            values = s.scalars(select(column).where(site_clause(scope), column.is_not(None)).distinct())
            out[key] = sorted({str(v) for v in values if v})
    return out


def get_flag(store: Store, flag_id: int, scope: Scope = PROVINCE) -> tuple[FlagRow, SiteRow, PatchRow | None]:
    """A flag in ``scope``, its licence and its patch; NotFoundError for a missing one and one
    outside the scope alike (same message)."""
    with store.session() as s:
        flag = s.scalar(select(FlagRow).where(FlagRow.id == flag_id, flag_clause(scope)))
        if flag is None:
            raise NotFoundError(f"no flag {flag_id}")
        site = s.get(SiteRow, flag.site_id)
        patch = s.get(PatchRow, flag.patch_id) if flag.patch_id else None
    if site is None:  # pragma: no cover - foreign key
        raise NotFoundError(f"flag {flag_id} names unknown licence {flag.site_id}")
    return flag, site, patch


def get_site(store: Store, site_id: str, scope: Scope = PROVINCE) -> tuple[SiteRow, list[PatchRow], list[FlagRow]]:
    """A licence in ``scope`` with its patches and flags; NotFoundError for a missing one and one
    outside the scope alike."""
    with store.session() as s:
        site = s.scalar(select(SiteRow).where(SiteRow.site_id == site_id, site_clause(scope)))
        if site is None:
            raise NotFoundError(f"no licence {site_id!r}")
        patches = list(s.scalars(select(PatchRow).where(PatchRow.site_id == site_id).order_by(PatchRow.patch_id)))
        flags = list(s.scalars(select(FlagRow).where(FlagRow.site_id == site_id, flag_clause(scope))
                               .order_by(FlagRow.id)))
    return site, patches, flags


def history(store: Store, flag_id: int | None = None, scope: Scope = PROVINCE) -> list[ReviewRow]:
    """The audit log (of one flag, or all) of the flags in ``scope``, oldest first."""
    with store.session() as s:
        q = select(ReviewRow).where(review_clause(scope)).order_by(ReviewRow.id)
        if flag_id is not None:
            q = q.where(ReviewRow.flag_id == flag_id)
        return list(s.scalars(q))


def decide(store: Store, flag_id: int, user: UserRow, decision: str, reason: str, comment: str,
           corrected_class: str | None = None, *, rules: RulesSettings | None = None,
           now: datetime | None = None) -> ReviewRow:
    """Record a decision: one new audit-log row and the flag's new status, in one transaction.

    The user must be an active reviewer or admin, and the flag in their scope (else NotFoundError,
    as for a missing flag). ``reason`` is a code of REASONS[decision];
    ``comment`` (required, at most MAX_COMMENT characters) is the reviewer's own words.
    ``corrected_class`` (optional) is the disturbance class the reviewer saw, for retraining.
    A confirmation by a user who may act on the first stage of the flag's escalation chain signs
    that stage in the same transaction (gmsense.review.escalation; ``rules`` hold the chains,
    configs/rules.yaml by default; ``now`` is the time recorded on the stage).
    """
    from gmsense.review import escalation
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
    if corrected_class and corrected_class not in PATCH_CLASSES:
        raise InputError(f"unknown class {corrected_class!r}; choose one of: {', '.join(PATCH_CLASSES)}")
    with store.session() as s, s.begin():
        flag = s.scalar(select(FlagRow).where(FlagRow.id == flag_id, flag_clause(scope)).with_for_update())
        if flag is None:
            raise NotFoundError(f"no flag {flag_id}")
        if (flag.rule == "uncertain_label" and not corrected_class
                and (decision == "confirm" or reason == "approved_work")):
            raise InputError("this patch's class was uncertain: say what it is (a corrected class: "
                             f"{', '.join(PATCH_CLASSES)}), so the decision can train the next model")
        row = ReviewRow(flag_id=flag_id, user_id=user.id, username=user.username, decision=DECISIONS[decision],
                        reason=reason, comment=comment, corrected_class=corrected_class or None,
                        previous_status=flag.status)
        s.add(row)
        s.flush()  # the review row first: the database refuses a status change without one
        flag.status = DECISIONS[decision]
        if decision == "confirm":
            escalation.on_confirm(s, flag, user, comment, rules, now)
    return row


def labels(store: Store) -> list[dict[str, Any]]:
    """Reviewers' latest decision on each patch, as a training label (one per patch, from its
    most recent decision; field visits give none):

    - confirmed: the reviewer's ``corrected_class``, else the detected class (an ``uncertain``
      patch needs the reviewer's class: the review app asks for it);
    - dismissed as approved work: real human-made work, so the same as confirmed;
    - dismissed as natural change, cloud/shadow or misregistration: ``natural`` (not damage);
    - dismissed for another reason: the ``corrected_class`` if the reviewer gave one, else none.

    Each label carries the patch's stored ``metrics`` (its classifier features).
    """
    with store.session() as s:
        latest: dict[int, ReviewRow] = {}
        for r in s.scalars(select(ReviewRow).order_by(ReviewRow.id)):
            latest[r.flag_id] = r
        flags = {f.id: f for f in s.scalars(select(FlagRow).where(FlagRow.id.in_(list(latest))))}
        patch_ids = [f.patch_id for f in flags.values() if f.patch_id]
        patches = {p.patch_id: p for p in s.scalars(select(PatchRow).where(PatchRow.patch_id.in_(patch_ids)))}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for flag_id, review in sorted(latest.items(), key=lambda kv: -kv[1].id):
        flag = flags[flag_id]
        patch = patches.get(flag.patch_id or "")
        if patch is None or review.decision == "field_visit" or patch.patch_id in seen:
            continue
        seen.add(patch.patch_id)
        klass = _label_class(review, patch.disturbance_class)
        if klass is None:
            continue
        out.append({"patch_id": patch.patch_id, "site_id": patch.site_id, "disturbance_class": klass,
                    "detected_class": patch.disturbance_class, "date": patch.first_detected,
                    "flag_id": flag_id, "rule": flag.rule, "decision": review.decision, "reason": review.reason,
                    "comment": review.comment, "reviewer": review.username,
                    "decided_at": review.at.isoformat(timespec="seconds"), "review_id": review.id,
                    "geometry_wkt": patch.geometry_wkt, "metrics": patch.metrics or {}})
    return sorted(out, key=lambda r: r["patch_id"])


NOT_DAMAGE_REASONS = ("natural_change", "cloud_shadow", "misregistration")


def _label_class(review: ReviewRow, detected: str) -> str | None:
    if review.decision == "confirmed" or review.reason == "approved_work":
        klass = review.corrected_class or detected
        return klass if klass in PATCH_CLASSES else None  # "uncertain" is not a class to learn
    if review.reason in NOT_DAMAGE_REASONS:
        return "natural"
    return review.corrected_class
