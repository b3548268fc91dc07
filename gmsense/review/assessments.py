"""Third-party assessments (issue 20, item 5): an assessor's signed assessment of a licence or of a
flag, with attached files; pure functions over a Store, shared by the web app, the JSON API, the
CLI and the tests.

Only an active **assessor** adds one, and only to a licence or flag of their scope (else
NotFoundError, as for a missing one). An assessment holds the verdict (:data:`VERDICTS`), the text
(at most MAX_TEXT characters) and up to MAX_FILES attachments checked by gmsense.review.uploads. It
is written in one transaction, numbered (``seq``, from 1 without gaps), with the division codes of
its licence (so every read filters by scope in SQL, gmsense.store.scope.assessment_clause), the
SHA-256 digest of its canonical serialisation and the HMAC-SHA256 signature of the deployment's key
(gmsense.review.signing). The tables are append-only (revision 0012's triggers); they are the log
of assessments, shown on the audit page. :func:`verify` recomputes every hash and signature.
"""

from __future__ import annotations

import hashlib
import random
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy import text as sql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, undefer

from gmsense.errors import InputError, StoreError
from gmsense.review import NotFoundError
from gmsense.review.signing import AttachmentFacts, SigningKey, canonical, digest, signing_key
from gmsense.review.uploads import MAX_FILES, Attachment, UploadError
from gmsense.store import AssessmentAttachmentRow, AssessmentRow, FlagRow, SiteRow, Store, UserRow
from gmsense.store.scope import PROVINCE, Scope, assessment_clause, flag_clause, site_clause

VERDICTS = ("compliant", "non_compliant", "needs_follow_up")
TARGETS = ("licence", "flag")
#: The longest assessment text, characters.
MAX_TEXT = 20_000
#: The role that adds assessments (third parties); every role reads those in its scope.
ASSESSOR_ROLE = "assessor"
#: Two assessments written at the same moment may draw the same number (SQLite, several processes);
#: the later one tries again, after a short random pause.
_NUMBERING_ATTEMPTS = 10
#: The PostgreSQL advisory lock that numbers assessments one at a time across app processes.
_NUMBERING_LOCK = 0x676D_6173  # "gmas"
_CODES = ("province_code", "city_code", "county_code")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def may_assess(user: UserRow | None) -> bool:
    """Whether ``user`` may add assessments: an active assessor."""
    return user is not None and bool(user.active) and user.role == ASSESSOR_ROLE


@dataclass
class Assessment:
    """An assessment and its attachments (without their bytes)."""

    row: AssessmentRow
    attachments: list[AssessmentAttachmentRow] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        r = self.row
        return {"id": r.id, "seq": r.seq, "target": {"kind": r.target_kind, "licence": r.site_id, "flag": r.flag_id},
                "author": r.username, "created_at": r.created_at.isoformat(timespec="seconds"),
                "verdict": r.verdict, "text": r.text, "digest": r.digest, "signature": r.signature,
                "key_id": r.key_id,
                "attachments": [{"position": a.position, "filename": a.filename, "media_type": a.media_type,
                                 "size": a.size_bytes, "sha256": a.sha256,
                                 "url": f"/api/assessments/{r.id}/attachments/{a.position}"} for a in self.attachments]}


def _check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise InputError("an assessment needs a text: what was assessed, how, and what was found")
    if len(text) > MAX_TEXT:
        raise InputError(f"the assessment text is longer than {MAX_TEXT} characters; attach the full report as a file")
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text):
        raise InputError("the assessment text holds control characters; paste it as plain text")
    return text


def _target(s: Session, kind: str, ident: str | int, scope: Scope) -> tuple[str, int | None, dict[str, Any]]:
    """(licence, flag or None, division codes) of a target in ``scope``; NotFoundError otherwise."""
    if kind == "licence":
        site = s.scalar(select(SiteRow).where(SiteRow.site_id == str(ident), site_clause(scope)))
        if site is None:
            raise NotFoundError(f"no licence {ident!r}")
        return site.site_id, None, {k: getattr(site, k) for k in _CODES}
    if kind == "flag":
        flag = s.scalar(select(FlagRow).where(FlagRow.id == int(ident), flag_clause(scope)))
        if flag is None:
            raise NotFoundError(f"no flag {ident}")
        return flag.site_id, flag.id, {k: getattr(flag, k) for k in _CODES}
    raise InputError(f"an assessment is of a licence or a flag, not {kind!r}")


def check_target(store: Store, kind: str, ident: str | int, scope: Scope = PROVINCE) -> tuple[str, int | None]:
    """(licence, flag or None) of the licence or flag ``ident`` in ``scope``; NotFoundError for one
    outside it and a missing one alike."""
    with store.session() as s:
        site_id, flag_id, _ = _target(s, kind, ident, scope)
    return site_id, flag_id


def add(store: Store, user: UserRow, target_kind: str, target_id: str | int, verdict: str, text: str,
        attachments: Sequence[Attachment] = (), *, key: SigningKey | None = None,
        now: datetime | None = None) -> Assessment:
    """Record ``user``'s assessment of the licence or flag ``target_id`` (``target_kind`` licence or
    flag), signed with ``key`` (default: the deployment's, gmsense.review.signing.signing_key).

    PermissionError unless ``user`` is an active assessor; NotFoundError for a target outside their
    scope (or missing); InputError for an unknown verdict, a missing or too long text, too many files,
    or no signing key; every check comes before anything is written. ``now``: the time recorded (UTC).
    """
    from gmsense.review.auth import user_scope

    if not may_assess(user):
        raise PermissionError(f"user {user.username!r} ({user.role}) may not add assessments; third-party "
                              f"assessors may")
    if verdict not in VERDICTS:
        raise InputError(f"unknown verdict {verdict!r}; choose one of: {', '.join(VERDICTS)}")
    text = _check_text(text)
    if len(attachments) > MAX_FILES:
        raise UploadError(f"at most {MAX_FILES} files per assessment; {len(attachments)} were attached")
    key = key or signing_key()
    scope = user_scope(store, user)
    with store.session() as s:
        site_id, flag_id, codes = _target(s, target_kind, target_id, scope)
    created_at = (now or _now()).replace(microsecond=0)
    facts = [AttachmentFacts(k, a.filename, a.media_type, a.size, a.sha256) for k, a in enumerate(attachments, 1)]
    for attempt in range(_NUMBERING_ATTEMPTS):
        try:
            return _insert(store, user, target_kind, site_id, flag_id, codes, created_at, verdict, text,
                           attachments, facts, key)
        except IntegrityError:  # another assessment took this number at the same moment
            if attempt == _NUMBERING_ATTEMPTS - 1:
                raise StoreError("the assessment could not be numbered: too many were recorded at the same moment; "
                                 "send it again") from None
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
    raise AssertionError("unreachable")  # pragma: no cover


def _insert(store: Store, user: UserRow, target_kind: str, site_id: str, flag_id: int | None, codes: dict[str, Any],
            created_at: datetime, verdict: str, text: str, attachments: Sequence[Attachment],
            facts: list[AttachmentFacts], key: SigningKey) -> Assessment:
    with store.session() as s, s.begin():
        if s.get_bind().dialect.name == "postgresql":
            s.execute(sql("SELECT pg_advisory_xact_lock(:key)"), {"key": _NUMBERING_LOCK})
        seq = int(s.scalar(select(func.max(AssessmentRow.seq))) or 0) + 1
        body = canonical(seq=seq, user_id=user.id, username=user.username, target_kind=target_kind,
                         site_id=site_id, flag_id=flag_id, created_at=created_at, verdict=verdict, text=text,
                         attachments=facts)
        row = AssessmentRow(seq=seq, target_kind=target_kind, site_id=site_id, flag_id=flag_id, user_id=user.id,
                            username=user.username, created_at=created_at, verdict=verdict, text=text,
                            digest=digest(body), signature=key.sign(body), key_id=key.key_id, **codes)
        s.add(row)
        s.flush()
        files = [AssessmentAttachmentRow(assessment_id=row.id, position=f.position, filename=f.filename,
                                         media_type=f.media_type, size_bytes=f.size, sha256=f.sha256,
                                         content=a.content) for f, a in zip(facts, attachments, strict=True)]
        s.add_all(files)
    return Assessment(row, files)


def _with_attachments(s: Session, rows: list[AssessmentRow]) -> list[Assessment]:
    found: dict[int, list[AssessmentAttachmentRow]] = {r.id: [] for r in rows}
    if rows:
        for a in s.scalars(select(AssessmentAttachmentRow).where(AssessmentAttachmentRow.assessment_id.in_(found))
                           .order_by(AssessmentAttachmentRow.assessment_id, AssessmentAttachmentRow.position)):
            found[a.assessment_id].append(a)
    return [Assessment(r, found[r.id]) for r in rows]


def assessments(store: Store, scope: Scope = PROVINCE, *, site_id: str | None = None, flag_id: int | None = None,
                licence_only: bool = False) -> list[Assessment]:
    """The assessments in ``scope``, oldest first: of one licence (``site_id``: of it and of its flags;
    with ``licence_only``, of the licence itself), of one flag, or all."""
    where: list[ColumnElement[bool]] = [assessment_clause(scope)]
    if site_id is not None:
        where.append(AssessmentRow.site_id == site_id)
    if licence_only:
        where.append(AssessmentRow.target_kind == "licence")
    if flag_id is not None:
        where.append(AssessmentRow.flag_id == flag_id)
    with store.session() as s:
        rows = list(s.scalars(select(AssessmentRow).where(*where).order_by(AssessmentRow.seq)))
        return _with_attachments(s, rows)


def get(store: Store, assessment_id: int, scope: Scope = PROVINCE) -> Assessment:
    """One assessment in ``scope``; NotFoundError for a missing one and one outside the scope alike."""
    with store.session() as s:
        row = s.scalar(select(AssessmentRow).where(AssessmentRow.id == assessment_id, assessment_clause(scope)))
        if row is None:
            raise NotFoundError(f"no assessment {assessment_id}")
        return _with_attachments(s, [row])[0]


def attachment(store: Store, assessment_id: int, position: int,
               scope: Scope = PROVINCE) -> tuple[AssessmentAttachmentRow, bytes]:
    """An attachment of an assessment in ``scope`` and its bytes; NotFoundError otherwise."""
    with store.session() as s:
        found = s.execute(select(AssessmentAttachmentRow, AssessmentAttachmentRow.content)
                          .join(AssessmentRow, AssessmentRow.id == AssessmentAttachmentRow.assessment_id)
                          .where(AssessmentRow.id == assessment_id, AssessmentAttachmentRow.position == position,
                                 assessment_clause(scope))).first()
    if found is None:
        raise NotFoundError(f"no attachment {position} of assessment {assessment_id}")
    return found[0], bytes(found[1])


# --- verification -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """Why an assessment (``seq``; ``assessment_id`` None for a missing number) fails verification."""

    seq: int
    assessment_id: int | None
    what: str


@dataclass
class Verification:
    """What :func:`verify` found: how many assessments and attachments it checked, and the problems."""

    assessments: int = 0
    attachments: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def failed(self) -> list[int]:
        """The numbers (``seq``) of the assessments that failed, or are missing."""
        return sorted({p.seq for p in self.problems})


def verify(store: Store, key: SigningKey | None = None) -> Verification:
    """Recompute every attachment's size and SHA-256, every assessment's digest and its signature
    with ``key`` (default: the deployment's), and look for missing numbers (a deleted row; the last
    one's deletion cannot be told from the rows alone). Attachments are read one assessment at a time."""
    key = key or signing_key()
    result = Verification()
    with store.session() as s:
        rows = list(s.scalars(select(AssessmentRow).order_by(AssessmentRow.seq)))
        for row in rows:
            files = list(s.scalars(select(AssessmentAttachmentRow).options(undefer(AssessmentAttachmentRow.content))
                                   .where(AssessmentAttachmentRow.assessment_id == row.id)
                                   .order_by(AssessmentAttachmentRow.position)))
            result.assessments += 1
            result.attachments += len(files)
            result.problems += [Problem(row.seq, row.id, what) for what in _check(row, files, key)]
            for f in files:
                s.expunge(f)  # let the bytes go
    seqs = {r.seq for r in rows}
    result.problems += [Problem(n, None, f"assessment number {n} is missing: its row was deleted")
                        for n in range(1, max(seqs, default=0) + 1) if n not in seqs]
    result.problems.sort(key=lambda p: p.seq)
    return result


def _check(row: AssessmentRow, files: list[AssessmentAttachmentRow], key: SigningKey) -> list[str]:
    problems = []
    for f in files:
        content = bytes(f.content or b"")
        if len(content) != f.size_bytes or hashlib.sha256(content).hexdigest() != f.sha256:
            problems.append(f"attachment {f.position} ({f.filename}): its bytes are not those recorded "
                            f"(size {len(content)} for {f.size_bytes}, or another SHA-256)")
    if [f.position for f in files] != list(range(1, len(files) + 1)):
        problems.append(f"its attachments are numbered {[f.position for f in files]}, not 1 to {len(files)}")
    facts = [AttachmentFacts(f.position, f.filename, f.media_type, f.size_bytes, f.sha256) for f in files]
    body = canonical(seq=row.seq, user_id=row.user_id, username=row.username, target_kind=row.target_kind,
                     site_id=row.site_id, flag_id=row.flag_id, created_at=row.created_at, verdict=row.verdict,
                     text=row.text, attachments=facts)
    if digest(body) != row.digest:
        problems.append("its author, target, time, verdict, text or list of attachments is not what was signed "
                        "(the digest differs)")
    if row.key_id != key.key_id:
        problems.append(f"it was signed with another key (id {row.key_id}; the key set now is {key.key_id}): "
                        f"verify it with that key")
    elif not key.matches(body, row.signature):
        problems.append("its signature does not match: the row was changed (and its digest recomputed) after it "
                        "was signed, or it was not written by this deployment")
    return problems
