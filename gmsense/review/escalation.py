"""Escalation: the chain of stages a flag travels up the levels (county -> city -> province).

The chain of a flag comes from its severity (``escalation`` in configs/rules.yaml,
:class:`gmsense.config.StageSettings`): e.g. a critical flag is confirmed by the county (5 days),
reviewed by the city (10 days) and signed off by the province (15 days). A stage at a level the flag
has no division code for (its licence names no county, say) is left out of its chain; if that leaves
none, the province takes the first stage's place. The first stage opens when the flag is stored;
each later one when the stage before it is signed; its deadline counts from that moment.

Every action is a row of ``escalation_events`` (append-only, numbered per flag): **sign** a
stage, or **return** it to the previous level with a reason (that stage opens again, with a new
deadline; the first stage cannot be returned: dismiss the flag instead). The state of a flag's
chain is the replay of its events; the stage pending after each event is also written on the event
(``next_stage``, ``next_level``, ``next_role``, ``next_due_at``), so the pending and overdue stages
of a whole province are one SQL query. A flag's chain is fixed by its first event (a later change
of the configuration applies to flags not yet on their chain).

Rules (each refused without writing anything):
- only the pending stage is acted on, once: signing a signed stage, or a stage not yet reached, is a
  :class:`ConflictError` (409); two people acting at the same moment cannot both be recorded (the
  unique ``(flag_id, seq)``);
- a stage is acted on by a user whose scope is of the stage's level (a county-scope user at the
  county stage, a city-scope user at the city stage, a province-wide user at the province stage)
  and whose role is the stage's or higher; others in whose scope the flag is get PermissionError
  (403); a flag outside the user's scope is a NotFoundError (404), as a missing one;
- separation of duties: a user who acted on one stage of a flag (or confirmed the flag by a decision,
  which belongs to the first stage) acts on no other stage of it;
- a dismissed flag's chain is closed.

The reviewer's decision and the first stage: a **confirm** decision by a user who may act on the
first stage (its level and role) signs that stage in the same transaction; a confirmation by anyone
else (a province reviewer confirming a county's flag) leaves the first stage pending for its level.
Signing the first stage of a flag not yet confirmed records the confirm decision too (reason
``violation``, the stage's comment).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gmsense.config import STAGE_LEVELS, RulesSettings, load_settings
from gmsense.errors import InputError
from gmsense.review import NotFoundError
from gmsense.store import EscalationEventRow, FlagRow, ReviewRow, SiteRow, Store, UserRow
from gmsense.store.scope import PROVINCE, Scope, flag_clause
from gmsense.store.sql import unindexed

ACTIONS = ("sign", "return")
MAX_TEXT = 2000
#: Roles in rank order for stages (gmsense.review.auth.RANK).
_RANK = {"assessor": 0, "viewer": 0, "reviewer": 1, "admin": 2}
_CODE = {"county": FlagRow.county_code, "city": FlagRow.city_code}


class ConflictError(Exception):
    """The stage is not the one pending (signed already, not reached, or the flag moved on): 409."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@cache
def shipped_rules() -> RulesSettings:
    """configs/rules.yaml, for callers that pass no rules."""
    return load_settings().rules


def configured_chain(rules: RulesSettings, severity: str) -> list[dict[str, Any]]:
    return [stage.model_dump() for stage in rules.escalation.get(severity, [])]


def _has_code(flag: FlagRow, level: str) -> bool:
    return level == "province" or getattr(flag, f"{level}_code") is not None


def effective_chain(configured: list[dict[str, Any]], flag: FlagRow) -> list[dict[str, Any]]:
    """The configured chain without the stages at levels the flag has no division for (the
    province stage always applies); if none is left, the province takes the first stage's place."""
    kept = [dict(stage) for stage in configured if _has_code(flag, stage["level"])]
    if configured and not kept:
        kept = [{**configured[0], "level": "province"}]
    return kept


@dataclass
class Stage:
    index: int
    level: str
    role: str
    action: str
    days: int
    state: str = "waiting"  # waiting | pending | signed | returned | closed
    opened_at: datetime | None = None
    due_at: datetime | None = None
    overdue: bool = False
    signed_by: str | None = None
    signed_at: datetime | None = None
    returned_by: str | None = None
    returned_at: datetime | None = None
    reason: str = ""
    comment: str = ""

    def as_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["number"] = self.index + 1
        for key in ("opened_at", "due_at", "signed_at", "returned_at"):
            out[key] = out[key].isoformat(timespec="seconds") if out[key] else None
        return out


@dataclass
class Chain:
    flag_id: int
    severity: str
    stages: list[Stage]
    current: int | None  # the pending stage, None when complete (or no chain)
    active: bool  # False for a dismissed flag
    events: list[EscalationEventRow] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.stages) and self.current is None

    @property
    def pending(self) -> Stage | None:
        return self.stages[self.current] if self.active and self.current is not None else None

    def as_json(self) -> dict[str, Any]:
        pending = self.pending
        return {"flag_id": self.flag_id, "severity": self.severity, "active": self.active,
                "complete": self.complete, "current": self.current if self.active else None,
                "overdue": bool(pending and pending.overdue),
                "stages": [s.as_json() for s in self.stages], "events": [event_json(e) for e in self.events]}


def event_json(e: EscalationEventRow) -> dict[str, Any]:
    return {"id": e.id, "flag_id": e.flag_id, "seq": e.seq, "stage": e.stage, "level": e.level, "action": e.action,
            "username": e.username, "at": e.at.isoformat(timespec="seconds"), "reason": e.reason,
            "comment": e.comment, "next_stage": e.next_stage, "next_level": e.next_level,
            "next_due_at": e.next_due_at.isoformat(timespec="seconds") if e.next_due_at else None}


def _replay(flag: FlagRow, events: list[EscalationEventRow], rules: RulesSettings, now: datetime) -> Chain:
    spec = events[-1].chain if events else effective_chain(configured_chain(rules, flag.severity), flag)
    stages = [Stage(index=i, level=s["level"], role=s["role"], action=s["action"], days=int(s["days"]))
              for i, s in enumerate(spec)]
    active = flag.status != "dismissed"
    if not stages:
        return Chain(flag.id, flag.severity, [], None, active, events)
    current: int | None = 0
    stages[0].opened_at = flag.created_at
    stages[0].due_at = flag.created_at + timedelta(days=stages[0].days)
    for e in events:
        stage = stages[e.stage]
        if e.action == "sign":
            stage.state, stage.signed_by, stage.signed_at, stage.comment = "signed", e.username, e.at, e.comment
        else:
            stage.state, stage.returned_by, stage.returned_at = "returned", e.username, e.at
            stage.reason, stage.comment = e.reason, e.comment
        current = e.next_stage
        if current is not None:
            stages[current].opened_at, stages[current].due_at = e.at, e.next_due_at
    for stage in stages:
        if current is not None and stage.index == current:
            stage.state = "pending" if active else "closed"
            stage.overdue = active and stage.due_at is not None and now > stage.due_at
        elif current is not None and stage.index > current and stage.state == "signed":
            stage.state = "waiting"  # signed before a return from further up: signed again later
        elif stage.state == "waiting" and not active:
            stage.state = "closed"
    return Chain(flag.id, flag.severity, stages, current, active, events)


def _events(s: Session, flag_id: int) -> list[EscalationEventRow]:
    return list(s.scalars(select(EscalationEventRow).where(EscalationEventRow.flag_id == flag_id)
                          .order_by(EscalationEventRow.seq)))


def get_chain(store: Store, flag_id: int, scope: Scope = PROVINCE, rules: RulesSettings | None = None,
              now: datetime | None = None) -> Chain:
    """The chain of a flag in ``scope`` (NotFoundError outside it, as for a missing one)."""
    with store.session() as s:
        flag = s.scalar(select(FlagRow).where(FlagRow.id == flag_id, flag_clause(scope)))
        if flag is None:
            raise NotFoundError(f"no flag {flag_id}")
        return _replay(flag, _events(s, flag_id), rules or shipped_rules(), now or _now())


def may_act(user: UserRow | None, stage: Stage | None) -> bool:
    """Whether ``user``'s role and scope level fit ``stage`` (separation of duties aside)."""
    if user is None or stage is None or not user.active:
        return False
    return user.scope_kind == stage.level and _RANK.get(user.role, -1) >= _RANK.get(stage.role, 9)


def _other_stage_of(s: Session, flag: FlagRow, user: UserRow, stage: int,
                    events: list[EscalationEventRow]) -> int | None:
    """The stage of this flag ``user`` already acted on, if it is not ``stage`` (a confirm decision
    belongs to the first stage)."""
    for e in events:
        if e.user_id == user.id and e.stage != stage:
            return e.stage
    if stage != 0 and s.scalar(select(func.count()).select_from(ReviewRow).where(
            ReviewRow.flag_id == flag.id, ReviewRow.user_id == user.id, ReviewRow.decision == "confirmed")):
        return 0
    return None


def _check_actor(s: Session, flag: FlagRow, user: UserRow, chain: Chain, stage: Stage) -> None:
    if not may_act(user, stage):
        raise PermissionError(f"stage {stage.index + 1} ({stage.action}) of flag {flag.id} is for a {stage.role} "
                              f"of the {stage.level}; {user.username!r} is a {user.role} of the {user.scope_kind}")
    other = _other_stage_of(s, flag, user, stage.index, chain.events)
    if other is not None:
        raise PermissionError(f"separation of duties: {user.username!r} acted on stage {other + 1} "
                              f"({chain.stages[other].action}) of flag {flag.id}, so someone else acts on "
                              f"stage {stage.index + 1} ({stage.action})")


def _write_event(s: Session, flag: FlagRow, user: UserRow, chain: Chain, stage: Stage, action: str, reason: str,
                 comment: str, now: datetime) -> EscalationEventRow:
    last = stage.index + 1 == len(chain.stages)
    nxt = stage.index - 1 if action == "return" else None if last else stage.index + 1
    target = chain.stages[nxt] if nxt is not None else None
    row = EscalationEventRow(
        flag_id=flag.id, seq=len(chain.events) + 1, stage=stage.index, level=stage.level, action=action,
        user_id=user.id, username=user.username, at=now, reason=reason, comment=comment,
        chain=[{"level": st.level, "role": st.role, "action": st.action, "days": st.days} for st in chain.stages],
        next_stage=nxt, next_level=target.level if target else None, next_role=target.role if target else None,
        next_due_at=now + timedelta(days=target.days) if target else None)
    s.add(row)
    return row


def act(store: Store, flag_id: int, user: UserRow, stage_index: int, action: str, *, reason: str = "",
        comment: str = "", rules: RulesSettings | None = None, now: datetime | None = None) -> EscalationEventRow:
    """Sign or return (``action``) stage ``stage_index`` (0-based) of a flag's chain as ``user``.

    Errors (nothing written): NotFoundError (the flag is missing or outside the user's scope),
    PermissionError (the user may not act on this stage: role, level, separation of duties),
    ConflictError (it is not the pending stage: signed already, not reached, chain closed or
    complete), InputError (a return without a reason, a return of the first stage, text too long).
    """
    from gmsense.review.auth import can, user_scope
    rules, now = rules or shipped_rules(), now or _now()
    if action not in ACTIONS:
        raise InputError(f"unknown stage action {action!r}; choose sign or return")
    reason, comment = (reason or "").strip(), (comment or "").strip()
    if len(reason) > MAX_TEXT or len(comment) > MAX_TEXT:
        raise InputError(f"the reason and the comment have at most {MAX_TEXT} characters")
    if not can(user, "decide"):
        raise PermissionError(f"user {user.username!r} ({user.role}) may not act on stages; reviewers and admins may")
    scope = user_scope(store, user)
    try:
        with store.session() as s, s.begin():
            flag = s.scalar(select(FlagRow).where(FlagRow.id == flag_id, flag_clause(scope)).with_for_update())
            if flag is None:
                raise NotFoundError(f"no flag {flag_id}")
            chain = _replay(flag, _events(s, flag_id), rules, now)
            if not chain.stages:
                raise ConflictError(f"flag {flag_id} ({flag.severity}) has no escalation chain")
            if not chain.active:
                raise ConflictError(f"flag {flag_id} is dismissed: its chain is closed")
            if chain.current is None:
                raise ConflictError(f"every stage of flag {flag_id} is signed")
            if not 0 <= stage_index < len(chain.stages):
                raise ConflictError(f"flag {flag_id} has no stage {stage_index + 1}")
            stage = chain.stages[stage_index]
            if stage_index != chain.current:
                raise ConflictError(f"stage {stage_index + 1} ({stage.action}) of flag {flag_id} is {stage.state}, "
                                    f"not pending; the pending stage is {chain.current + 1}")
            _check_actor(s, flag, user, chain, stage)
            if action == "return":
                if stage_index == 0:
                    raise InputError("the first stage has no level before it to return to: dismiss the flag instead")
                if not reason:
                    raise InputError("a returned stage needs a reason (what the level before must do)")
            elif stage_index == 0 and flag.status != "confirmed":
                _confirm(s, flag, user, comment)
            row = _write_event(s, flag, user, chain, stage, action, reason, comment, now)
            s.flush()
    except IntegrityError:
        raise ConflictError(f"someone acted on flag {flag_id} at the same moment: reload and try again") from None
    return row


def _confirm(s: Session, flag: FlagRow, user: UserRow, comment: str) -> None:
    """The first stage signed on a flag not yet confirmed: the confirm decision with it."""
    if not comment:
        raise InputError("confirming the flag at the first stage needs a comment saying why (what the images show)")
    if flag.rule == "uncertain_label":
        raise InputError("this patch's class was uncertain: confirm it with the decision form, which asks for the "
                         "class, so the decision can train the next model")
    s.add(ReviewRow(flag_id=flag.id, user_id=user.id, username=user.username, decision="confirmed",
                    reason="violation", comment=comment, previous_status=flag.status))
    s.flush()  # the review row first: the database refuses a status change without one
    flag.status = "confirmed"


def on_confirm(s: Session, flag: FlagRow, user: UserRow, comment: str, rules: RulesSettings | None = None,
               now: datetime | None = None) -> EscalationEventRow | None:
    """Called by gmsense.review.service.decide in its transaction after a confirm decision: signs the
    first stage if it is pending and ``user`` may act on it; otherwise nothing."""
    chain = _replay(flag, _events(s, flag.id), rules or shipped_rules(), now or _now())
    stage = chain.pending
    if stage is None or stage.index != 0 or not may_act(user, stage):
        return None
    if _other_stage_of(s, flag, user, 0, chain.events) is not None:
        return None
    return _write_event(s, flag, user, chain, stage, "sign", "", comment, now or _now())


def duties_conflict(store: Store, chain: Chain, user: UserRow) -> int | None:
    """The other stage of the chain's flag ``user`` acted on (separation of duties), if any, for the
    pending stage; None when they are free to act on it."""
    stage = chain.pending
    if stage is None:
        return None
    with store.session() as s:
        flag = s.get(FlagRow, chain.flag_id)
        return _other_stage_of(s, flag, user, stage.index, chain.events)


# --- pending and overdue stages, in SQL ---------------------------------------------------------------

def _has(level: str) -> ColumnElement[bool]:
    return true() if level == "province" else unindexed(_CODE[level]).is_not(None)


def first_stage_cases(rules: RulesSettings) -> list[tuple[ColumnElement[bool], str, str, int]]:
    """For flags not yet on their chain (no event): (condition, level, role, days) of their first
    stage, per severity, as :func:`effective_chain` picks it. (Columns SQLite reads by a scan: an OR of
    these through eight index searches was six times slower, gmsense.store.sql.)"""
    cases = []
    for severity, chain in rules.escalation.items():
        if not chain:
            continue
        missing: list[ColumnElement[bool]] = []
        for stage in chain:
            cases.append((and_(unindexed(FlagRow.severity) == severity, _has(stage.level), *missing),
                          stage.level, stage.role, stage.days))
            if stage.level == "province":
                break
            missing.append(~_has(stage.level))
        else:
            cases.append((and_(unindexed(FlagRow.severity) == severity, *missing), "province", chain[0].role,
                          chain[0].days))
    return cases


@dataclass
class PendingList:
    total: int
    items: list[dict[str, Any]]


def _roles_up_to(role: str) -> list[str]:
    return [r for r, rank in _RANK.items() if rank <= _RANK.get(role, -1)]


def pending_stages(store: Store, scope: Scope = PROVINCE, *, rules: RulesSettings | None = None,
                   now: datetime | None = None, level: str | None = None, role: str | None = None,
                   overdue_only: bool = False, limit: int = 50) -> PendingList:
    """Pending stages of flags in ``scope`` (not dismissed), in SQL: only those at ``level`` whose
    role ``role`` may act on, and/or only the overdue ones (past their deadline at ``now``); the
    total and the first ``limit``, the longest overdue (earliest deadline) first."""
    rules, now = rules or shipped_rules(), now or _now()
    if level is not None and level not in STAGE_LEVELS:
        raise InputError(f"unknown level {level!r}; choose one of {', '.join(STAGE_LEVELS)}")
    roles = _roles_up_to(role) if role is not None else None
    base = [flag_clause(scope), FlagRow.status != "dismissed"]
    # Flags on their chain: the latest event says what is pending.
    on_chain = [EscalationEventRow.next_stage.is_not(None)]
    if level is not None:
        on_chain.append(EscalationEventRow.next_level == level)
    if roles is not None:
        on_chain.append(EscalationEventRow.next_role.in_(roles))
    if overdue_only:
        on_chain.append(EscalationEventRow.next_due_at < now)
    # Narrow rows (the event's id, its deadline and the flag's id) counted by a window and sorted; the
    # flags and chains of the first ``limit`` are read after. (The latest event by a GROUP BY joined
    # back: on PostgreSQL 20 ms against 70 ms for NOT EXISTS a later one, which made it scan every flag.)
    latest = (select(EscalationEventRow.flag_id, func.max(EscalationEventRow.seq).label("seq"))
              .group_by(EscalationEventRow.flag_id).subquery())
    q1 = (select(EscalationEventRow.id, EscalationEventRow.next_due_at, FlagRow.id, func.count().over())
          .join(latest, and_(latest.c.flag_id == EscalationEventRow.flag_id, latest.c.seq == EscalationEventRow.seq))
          .join(FlagRow, FlagRow.id == EscalationEventRow.flag_id).where(*base, *on_chain))
    # Flags not yet on their chain: the first stage, pending since the flag was stored.
    wanted = [cond & (unindexed(FlagRow.created_at) < now - timedelta(days=days) if overdue_only else true())
              for cond, lvl, rl, days in first_stage_cases(rules)
              if (level is None or lvl == level) and (roles is None or rl in roles)]
    fresh = [*base, ~exists().where(EscalationEventRow.flag_id == FlagRow.id), or_(*wanted) if wanted else false()]
    q2 = select(FlagRow).where(*fresh)
    with store.session() as s:
        # The flags on their chain counted by the query that lists their first ``limit`` (one pass
        # over the chains, not two); at least one row is read to carry the count.
        listed = s.execute(q1.order_by(EscalationEventRow.next_due_at, FlagRow.id).limit(max(limit, 1))).all()
        total = int(listed[0][-1]) if listed else 0
        total += int(s.scalar(select(func.count()).select_from(FlagRow).where(*fresh)) or 0)
        listed = listed[:limit]
        events = {e.id: e for e in s.scalars(select(EscalationEventRow).where(
            EscalationEventRow.id.in_([event_id for event_id, *_ in listed])))} if listed else {}
        flags = {f.id: f for f in s.scalars(select(FlagRow).where(
            FlagRow.id.in_([flag_id for _, _, flag_id, _ in listed])))} if listed else {}
        rows = [(flags[flag_id], events[event_id].next_stage, due, events[event_id].chain[events[event_id].next_stage])
                for event_id, due, flag_id, _ in listed]
        # Flags not yet on their chain, oldest first (the first stage's days differ per severity,
        # so the earliest deadlines are among the oldest ``limit`` flags of each first stage's days).
        for flag in s.scalars(q2.order_by(FlagRow.created_at, FlagRow.id).limit(limit)):
            first = effective_chain(configured_chain(rules, flag.severity), flag)[0]
            rows.append((flag, 0, flag.created_at + timedelta(days=first["days"]), first))
        rows.sort(key=lambda r: (r[2], r[0].id))
        rows = rows[:limit]
        sites = {site.site_id: site for site in s.scalars(select(SiteRow).where(
            SiteRow.site_id.in_({r[0].site_id for r in rows})))}
    items = []
    for flag, stage_index, due, spec in rows:
        site = sites.get(flag.site_id)
        items.append({"flag_id": flag.id, "site_id": flag.site_id, "rule": flag.rule, "severity": flag.severity,
                      "status": flag.status, "county_code": flag.county_code, "city_code": flag.city_code,
                      "site_name": ((site.attrs or {}).get("name") or "") if site else "",
                      "stage": stage_index, "level": spec["level"], "action": spec["action"], "role": spec["role"],
                      "due_at": due.isoformat(timespec="seconds") if due else None,
                      "overdue": bool(due and now > due),
                      "days_overdue": max(0, (now - due).days) if due and now > due else 0})
    return PendingList(total, items)


def history(store: Store, scope: Scope = PROVINCE, flag_id: int | None = None) -> list[EscalationEventRow]:
    """The stage log (of one flag, or all) of the flags in ``scope``, oldest first."""
    q = select(EscalationEventRow).order_by(EscalationEventRow.id)
    if not scope.everything:
        q = q.where(EscalationEventRow.flag_id.in_(select(FlagRow.id).where(flag_clause(scope))))
    if flag_id is not None:
        q = q.where(EscalationEventRow.flag_id == flag_id)
    with store.session() as s:
        return list(s.scalars(q))
