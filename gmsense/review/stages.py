"""Where each flag stands on its escalation chain (gmsense.review.escalation), for the queue and the exports.

- In SQL, as conditions on ``flags`` (:func:`stage_condition`, :func:`overdue_condition`): the flags
  whose pending stage is at a level, whose chain is complete, or whose pending stage is past its
  deadline. A flag on its chain is judged by its latest stage action (the highest ``seq``: what it
  left pending, the level and the deadline, ``escalation_events.next_*``); a flag with no action yet
  by its first stage, as :func:`gmsense.review.escalation.first_stage_cases` picks it from the
  severity and the divisions the flag has, its deadline counted from the flag's creation. A dismissed
  flag's chain is closed: nothing of it is pending or overdue.
- For rows already read (:func:`current_stages`): one query for the latest action of each of the
  flags, then the same rules in Python; the answer agrees with the SQL conditions and with the flag
  page's chain (:func:`gmsense.review.escalation.get_chain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, or_, select
from sqlalchemy.orm import Session, aliased

from gmsense.config import STAGE_LEVELS, RulesSettings
from gmsense.errors import InputError
from gmsense.review.escalation import configured_chain, effective_chain, first_stage_cases
from gmsense.store import EscalationEventRow, FlagRow
from gmsense.store.sql import unindexed

#: Values of the queue's ``stage`` filter: pending at a level, or every stage signed.
STAGE_FILTERS = (*STAGE_LEVELS, "complete")
#: States of a flag's chain: a stage pending, every stage signed, closed (dismissed), no chain (its severity has none).
STATES = ("pending", "complete", "closed", "none")


def _latest_action(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """The flag's latest stage action (no later one of the same flag) meets ``conditions``."""
    later = aliased(EscalationEventRow)
    newest = ~exists().where(later.flag_id == EscalationEventRow.flag_id, later.seq > EscalationEventRow.seq)
    return exists().where(EscalationEventRow.flag_id == FlagRow.id, newest, *conditions)


def _no_action() -> ColumnElement[bool]:
    return ~exists().where(EscalationEventRow.flag_id == FlagRow.id)


def stage_condition(stage: str, rules: RulesSettings) -> ColumnElement[bool]:
    """Flags whose pending stage is at ``stage`` (county, city, province), or whose chain is
    ``complete``."""
    if stage not in STAGE_FILTERS:
        raise InputError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGE_FILTERS)}")
    if stage == "complete":
        return _latest_action(EscalationEventRow.next_stage.is_(None))
    first = [condition for condition, level, _, _ in first_stage_cases(rules) if level == stage]
    return and_(FlagRow.status != "dismissed",
                or_(_latest_action(EscalationEventRow.next_level == stage),
                    and_(_no_action(), or_(*first) if first else false())))


def overdue_condition(rules: RulesSettings, now: datetime) -> ColumnElement[bool]:
    """Flags whose pending stage was due before ``now``."""
    first = [and_(condition, unindexed(FlagRow.created_at) < now - timedelta(days=days))
             for condition, _, _, days in first_stage_cases(rules)]
    return and_(FlagRow.status != "dismissed",
                or_(_latest_action(EscalationEventRow.next_due_at < now),
                    and_(_no_action(), or_(*first) if first else false())))


@dataclass(frozen=True)
class CurrentStage:
    """A flag's place on its chain: ``state`` (one of STATES); for a pending stage its ``number``
    (1 = the first) of ``stages``, ``level``, ``action``, ``role``, deadline ``due_at`` and whether
    it is ``overdue``."""

    state: str
    stages: int = 0
    number: int | None = None
    level: str | None = None
    action: str | None = None
    role: str | None = None
    due_at: datetime | None = None
    overdue: bool = False

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "due_at": self.due_at.isoformat(timespec="seconds") if self.due_at else None}


def current_stages(s: Session, flags: list[FlagRow], rules: RulesSettings, now: datetime) -> dict[int, CurrentStage]:
    """The current stage of each of ``flags`` (rows read in the session ``s``), by flag id."""
    if not flags:
        return {}
    later = aliased(EscalationEventRow)
    latest = {e.flag_id: e for e in s.scalars(select(EscalationEventRow).where(
        EscalationEventRow.flag_id.in_([f.id for f in flags]),
        ~exists().where(later.flag_id == EscalationEventRow.flag_id, later.seq > EscalationEventRow.seq)))}
    configured: dict[str, list[dict[str, Any]]] = {}
    out = {}
    for flag in flags:
        event = latest.get(flag.id)
        if event is not None:
            chain, number, due = event.chain, event.next_stage, event.next_due_at
        else:
            if flag.severity not in configured:
                configured[flag.severity] = configured_chain(rules, flag.severity)
            chain = effective_chain(configured[flag.severity], flag)
            number = 0 if chain else None
            due = flag.created_at + timedelta(days=chain[0]["days"]) if chain else None
        if not chain:
            out[flag.id] = CurrentStage("none")
        elif event is not None and number is None:
            out[flag.id] = CurrentStage("complete", len(chain))
        elif flag.status == "dismissed":
            out[flag.id] = CurrentStage("closed", len(chain))
        else:
            stage = chain[number]
            out[flag.id] = CurrentStage("pending", len(chain), number + 1, stage["level"], stage["action"],
                                        stage["role"], due, due is not None and now > due)
    return out
