"""What the review app does with the store, without HTTP: the queue, a flag's evidence, decisions
and their audit log, and the labels researchers retrain from. Pure functions over a Store, shared
by the web app, the JSON API, the CLI and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select

from gmsense.errors import InputError
from gmsense.records import PATCH_CLASSES
from gmsense.store import FlagRow, PatchRow, ReviewRow, SiteRow, Store, UserRow

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


class NotFoundError(LookupError):
    """An id that is not in the store (the app answers 404)."""


@dataclass(frozen=True)
class QueueFilter:
    """Filters of the queue; empty strings mean "any". ``status`` defaults to the open work
    (open and field visit). Dates are ISO ``YYYY-MM-DD`` on the flag's creation day."""

    status: str = "pending"
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

    def __post_init__(self) -> None:
        if self.status not in ("pending", "all", *STATUSES):
            raise InputError(f"unknown status {self.status!r}; choose pending, all or one of {', '.join(STATUSES)}")
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


def _site_matches(attrs: dict[str, Any], flt: QueueFilter) -> bool:
    return all(not getattr(flt, k) or str(attrs.get(k) or "") == getattr(flt, k) for k in _ATTR_FILTERS)


def _flag_query(flt: QueueFilter, site_ids: list[str] | None) -> Select[Any]:
    q = select(FlagRow)
    if flt.status == "pending":
        q = q.where(FlagRow.status.in_(("open", "field_visit")))
    elif flt.status != "all":
        q = q.where(FlagRow.status == flt.status)
    if flt.rule:
        q = q.where(FlagRow.rule == flt.rule)
    if flt.severity:
        q = q.where(FlagRow.severity == flt.severity)
    if flt.site_id:
        q = q.where(FlagRow.site_id == flt.site_id)
    if flt.date_from:
        q = q.where(FlagRow.created_at >= datetime.combine(date.fromisoformat(flt.date_from), time.min))
    if flt.date_to:
        day_after = date.fromisoformat(flt.date_to) + timedelta(days=1)
        q = q.where(FlagRow.created_at < datetime.combine(day_after, time.min))
    if site_ids is not None:
        q = q.where(FlagRow.site_id.in_(site_ids))
    return q


def queue(store: Store, flt: QueueFilter | None = None, page: int = 1, page_size: int = PAGE_SIZE) -> QueuePage:
    """Flags matching ``flt``, most severe first, then oldest first; one page of them, with the
    total and the counts per status of the flags matching the other filters."""
    flt = flt or QueueFilter()
    page = max(1, page)
    with store.session() as s:
        sites = {r.site_id: r for r in s.scalars(select(SiteRow))}
        site_ids = ([sid for sid, r in sites.items() if _site_matches(r.attrs or {}, flt)]
                    if any(getattr(flt, k) for k in _ATTR_FILTERS) else None)
        flags = list(s.scalars(_flag_query(flt, site_ids)))
        flags.sort(key=lambda f: (SEVERITY_RANK.get(f.severity, 9), f.created_at, f.id))
        total = len(flags)
        chosen = flags[(page - 1) * page_size: page * page_size]
        patches = {p.patch_id: p for p in s.scalars(
            select(PatchRow).where(PatchRow.patch_id.in_([f.patch_id for f in chosen if f.patch_id])))}
        others = _flag_query(QueueFilter(**{**flt.__dict__, "status": "all"}), site_ids).subquery()
        counts = dict(s.execute(select(others.c.status, func.count()).group_by(others.c.status)).all())
    items = [flag_summary(f, sites.get(f.site_id), patches.get(f.patch_id or "")) for f in chosen]
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
        "mineral_class": attrs.get("mineral_class") or "", "licence_type": attrs.get("licence_type") or "",
        "disturbance_class": patch.disturbance_class if patch else None,
        "area_m2": patch.area_m2 if patch else None,
        "first_detected": patch.first_detected if patch else None,
    }


def filter_choices(store: Store) -> dict[str, list[str]]:
    """Values present in the store for each queue filter (for the filter form)."""
    with store.session() as s:
        rules = sorted(s.scalars(select(FlagRow.rule).distinct()))
        attrs = [r.attrs or {} for r in s.scalars(select(SiteRow))]
    out = {"rule": rules, "severity": list(SEVERITY_RANK), "status": ["pending", "all", *STATUSES]}
    for key in _ATTR_FILTERS:
        out[key] = sorted({str(a[key]) for a in attrs if a.get(key)})
    return out


def get_flag(store: Store, flag_id: int) -> tuple[FlagRow, SiteRow, PatchRow | None]:
    with store.session() as s:
        flag = s.get(FlagRow, flag_id)
        if flag is None:
            raise NotFoundError(f"no flag {flag_id}")
        site = s.get(SiteRow, flag.site_id)
        patch = s.get(PatchRow, flag.patch_id) if flag.patch_id else None
    if site is None:  # pragma: no cover - foreign key
        raise NotFoundError(f"flag {flag_id} names unknown licence {flag.site_id}")
    return flag, site, patch


def get_site(store: Store, site_id: str) -> tuple[SiteRow, list[PatchRow], list[FlagRow]]:
    with store.session() as s:
        site = s.get(SiteRow, site_id)
        if site is None:
            raise NotFoundError(f"no licence {site_id!r}")
        patches = list(s.scalars(select(PatchRow).where(PatchRow.site_id == site_id).order_by(PatchRow.patch_id)))
        flags = list(s.scalars(select(FlagRow).where(FlagRow.site_id == site_id).order_by(FlagRow.id)))
    return site, patches, flags


def history(store: Store, flag_id: int | None = None) -> list[ReviewRow]:
    """The audit log (of one flag, or all), oldest first."""
    with store.session() as s:
        q = select(ReviewRow).order_by(ReviewRow.id)
        if flag_id is not None:
            q = q.where(ReviewRow.flag_id == flag_id)
        return list(s.scalars(q))


def decide(store: Store, flag_id: int, user: UserRow, decision: str, reason: str, comment: str,
           corrected_class: str | None = None) -> ReviewRow:
    """Record a decision: one new audit-log row and the flag's new status, in one transaction.

    The user must be an active reviewer or admin. ``reason`` is a code of REASONS[decision];
    ``comment`` (required, at most MAX_COMMENT characters) is the reviewer's own words.
    ``corrected_class`` (optional) is the disturbance class the reviewer saw, for retraining.
    """
    from gmsense.review.auth import can

    if not can(user, "decide"):
        raise PermissionError(f"user {user.username!r} ({user.role}) may not decide; reviewers and admins may")
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
        flag = s.get(FlagRow, flag_id, with_for_update=True)
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
