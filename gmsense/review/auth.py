"""Users, roles, passwords, sessions and login rate limiting for the review app.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile).
A session is a random 256-bit token in an HttpOnly cookie; the store keeps only its SHA-256, so a
leaked database does not log anyone in. Each session carries its own CSRF token, which every form
and every state-changing API call must echo.

User names are case-insensitive: new names are stored in lower case and every look-up compares
in lower case, so ``admin1`` and ``ADMIN1`` are one user (and share one login rate limit).

The login rate limit is enforced atomically: an attempt first reserves a row in
``login_attempts`` (counted as a failure until the password proves right) in a transaction that
counts the recent failures and inserts the row under a lock (a process-wide lock, plus the SQLite
write lock or a PostgreSQL advisory lock across processes). A refused attempt never reaches
argon2, and at most ARGON2_CONCURRENCY password checks run at once, so a flood of parallel logins
can neither check more than MAX_FAILED_LOGINS passwords nor exhaust memory.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gmsense.errors import InputError
from gmsense.outputs.i18n import LANGUAGES
from gmsense.store import LoginAttemptRow, SessionRow, Store, UserRow, UserScopeRow
from gmsense.store.scope import PROVINCE, Scope, parse_scope

ROLES = ("viewer", "reviewer", "admin", "assessor")
#: The rank of each role: a higher role may do everything a lower one may. An assessor (third-party
#: assessment) reads only the licences of their scope, and is the one role that adds signed assessments
#: to them (gmsense.review.assessments.may_assess).
RANK = {"assessor": 0, "viewer": 0, "reviewer": 1, "admin": 2}
#: What each role may do (the lowest role that may).
PERMISSIONS = {"view": "viewer", "decide": "reviewer", "manage_users": "admin"}
SESSION_HOURS = 12
MIN_PASSWORD = 10
#: Login rate limit: at most this many failed attempts per user name, and per client address,
#: within LOGIN_WINDOW; further attempts are refused until the window has passed.
MAX_FAILED_LOGINS = 5
LOGIN_WINDOW = timedelta(minutes=15)
#: At most this many argon2 computations (64 MiB each) run at once in this process.
ARGON2_CONCURRENCY = 2
#: The PostgreSQL advisory lock that serialises login reservations across app processes.
_LOGIN_ADVISORY_LOCK = 0x676D_6C6F  # "gmlo"
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{2,80}$")
#: An e-mail address for digests: one address, no spaces, line breaks or list separators.
_EMAIL = re.compile(r"^[^@\s,;<>\"']{1,64}@[^@\s,;<>\"']{1,189}$")
_hasher = PasswordHasher()
_argon2_slots = threading.BoundedSemaphore(ARGON2_CONCURRENCY)
_reservation_lock = threading.Lock()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def can(user: UserRow | None, action: str) -> bool:
    """Whether ``user`` (active) may do ``action`` (a key of PERMISSIONS)."""
    if user is None or not user.active:
        return False
    return RANK.get(user.role, -1) >= RANK[PERMISSIONS[action]]


def check_scope(role: str, scope: Scope) -> None:
    """Assessors, and only they, have a licence scope; admins (who manage every user) the province."""
    if (role == "assessor") != (scope.kind == "licence"):
        raise InputError("an assessor's scope is a list of licences (licence:ID,ID), and only an assessor's is"
                         if role == "assessor" else
                         f"a {role}'s scope is the province, cities or counties, not licences (those are assessors')")
    if role == "admin" and not scope.everything:
        raise InputError("an admin manages every user, so an admin's scope is the province")


def user_scope(store: Store, user: UserRow) -> Scope:
    """The scope ``user`` sees (province for users of stores older than scopes)."""
    if user.scope_kind == "province":
        return PROVINCE
    with store.session() as s:
        codes = tuple(s.scalars(select(UserScopeRow.code).where(UserScopeRow.user_id == user.id)
                                .order_by(UserScopeRow.code)))
    return Scope(user.scope_kind, codes)


def _write_scope(s: Session, user: UserRow, scope: Scope) -> None:
    user.scope_kind = scope.kind
    s.execute(delete(UserScopeRow).where(UserScopeRow.user_id == user.id))
    for code in scope.codes:
        s.add(UserScopeRow(user_id=user.id, code=code))


def set_scope(store: Store, username: str, scope: Scope | str) -> UserRow:
    """Give a user a new scope (checked against their role); ends their sessions."""
    scope = parse_scope(scope) if isinstance(scope, str) else scope
    with store.session() as s, s.begin():
        user = s.scalar(select(UserRow).where(_named(username)))
        if user is None:
            raise InputError(f"no user {username!r}; `gmsense users list` shows them")
        check_scope(user.role, scope)
        _write_scope(s, user, scope)
        s.execute(delete(SessionRow).where(SessionRow.user_id == user.id))
    return user


def normalise_username(username: str | None) -> str:
    """The canonical (lower-case, trimmed) form of a user name."""
    return (username or "").strip().lower()


def _named(username: str) -> ColumnElement[bool]:
    """Matches the user called ``username`` whatever the case (older stores may hold mixed
    case)."""
    return func.lower(UserRow.username) == normalise_username(username)


def check_password_rules(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
    if password.lower() == username.lower():
        raise InputError("the password must not be the user name")


def check_email(email: str) -> str:
    email = (email or "").strip()
    if not _EMAIL.match(email):
        raise InputError(f"{email!r} is not one e-mail address (name@host)")
    return email


def set_email(store: Store, username: str, email: str | None) -> UserRow:
    """Where a user's digest goes (None or "": nowhere)."""
    email = check_email(email) if email else None
    with store.session() as s, s.begin():
        user = s.scalar(select(UserRow).where(_named(username)))
        if user is None:
            raise InputError(f"no user {username!r}; `gmsense users list` shows them")
        user.email = email
    return user


def add_user(store: Store, username: str, password: str, role: str,
             lang: str | None = None, scope: Scope | str = PROVINCE, email: str | None = None) -> UserRow:
    """Add a user; the name is stored in lower case and must be new whatever its case. ``scope``
    (a Scope or its text, gmsense.store.scope.parse_scope) is what they see; ``email`` where their
    digest goes (gmsense.review.notify)."""
    email = check_email(email) if email else None
    username = normalise_username(username)
    if not _USERNAME.match(username):
        raise InputError("a user name has 2-80 letters, digits or . _ @ -")
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    if lang is not None and lang not in LANGUAGES:
        raise InputError(f"unknown language {lang!r}; choose one of: {', '.join(LANGUAGES)}")
    scope = parse_scope(scope) if isinstance(scope, str) else scope
    check_scope(role, scope)
    check_password_rules(username, password)
    password_hash = _hash(password)
    exists = InputError(f"user {username!r} exists already (user names ignore case)")
    try:
        with store.session() as s, s.begin():
            if s.scalar(select(UserRow).where(_named(username))) is not None:
                raise exists
            user = UserRow(username=username, password_hash=password_hash, role=role, lang=lang,
                           active=True, email=email)
            s.add(user)
            s.flush()
            _write_scope(s, user, scope)
    except IntegrityError:  # added at the same moment by someone else: the unique constraint holds
        raise exists from None
    return user


def list_users(store: Store) -> list[UserRow]:
    with store.session() as s:
        return list(s.scalars(select(UserRow).order_by(UserRow.username)))


def get_user(store: Store, username: str) -> UserRow:
    with store.session() as s:
        user = s.scalar(select(UserRow).where(_named(username)))
    if user is None:
        raise InputError(f"no user {username!r}; `gmsense users list` shows them")
    return user


def set_active(store: Store, username: str, active: bool) -> UserRow:
    """Enable or disable a user; disabling also ends all their sessions."""
    with store.session() as s, s.begin():
        user = s.scalar(select(UserRow).where(_named(username)))
        if user is None:
            raise InputError(f"no user {username!r}; `gmsense users list` shows them")
        user.active = active
        if not active:
            s.execute(delete(SessionRow).where(SessionRow.user_id == user.id))
    return user


def set_password(store: Store, username: str, password: str) -> None:
    check_password_rules(username, password)
    password_hash = _hash(password)
    with store.session() as s, s.begin():
        user = s.scalar(select(UserRow).where(_named(username)))
        if user is None:
            raise InputError(f"no user {username!r}")
        user.password_hash = password_hash
        s.execute(delete(SessionRow).where(SessionRow.user_id == user.id))


def set_language(store: Store, user_id: int, lang: str) -> None:
    if lang not in LANGUAGES:
        raise InputError(f"unknown language {lang!r}")
    with store.session() as s, s.begin():
        user = s.get(UserRow, user_id)
        if user is not None:
            user.lang = lang


class LoginRefusedError(Exception):
    """Wrong credentials, a disabled user, or too many attempts (``throttled``)."""

    def __init__(self, message: str, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled


def login(store: Store, username: str, password: str, client: str) -> tuple[str, SessionRow]:
    """Check credentials and open a session; returns the cookie token and the session row.

    Every attempt that gets as far as a password check is recorded. After MAX_FAILED_LOGINS
    failures (attempts still being checked count as failures) for the user name or from the
    client address within LOGIN_WINDOW, attempts are refused without checking the password.
    """
    username = normalise_username(username)[:80]
    client = (client or "unknown")[:64]
    attempt_id = _reserve_attempt(store, username, client)
    with store.session() as s:
        user = s.scalar(select(UserRow).where(_named(username)))
    ok = _password_matches(user, password or "") and user is not None and user.active
    if not ok:
        raise LoginRefusedError("wrong user name or password, or the user is disabled")
    return _open_session(store, attempt_id, user.id, password)


def _reserve_attempt(store: Store, username: str, client: str) -> int:
    """Atomically count the recent failures of ``username`` or ``client`` and, below the limit,
    record this attempt as a failure (until proved right); returns its row id.

    Raises a throttled LoginRefusedError (recording nothing) at the limit. The count and the
    insert cannot interleave with another attempt's: in this process a lock serialises them; across
    processes the insert comes first and holds SQLite's write lock until the commit, and on
    PostgreSQL a transaction-scoped advisory lock is taken first.
    """
    since = _now() - LOGIN_WINDOW
    with _reservation_lock, store.session() as s, s.begin():
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOGIN_ADVISORY_LOCK})
        attempt = LoginAttemptRow(username=username, client=client, success=False, at=_now())
        s.add(attempt)
        s.flush()
        if _recent_failures(s, username, client, since, besides=attempt.id) >= MAX_FAILED_LOGINS:
            # Leaving the transaction by this exception rolls the reserved row back.
            raise LoginRefusedError("too many failed logins; wait 15 minutes", throttled=True)
        return attempt.id


def _recent_failures(s: Session, username: str, client: str, since: datetime, besides: int) -> int:
    """Failed (or still unchecked) attempts for ``username`` or from ``client`` since ``since``."""
    return s.scalar(select(func.count()).select_from(LoginAttemptRow).where(
        LoginAttemptRow.at >= since, LoginAttemptRow.success.is_(False),
        LoginAttemptRow.id != besides,
        (LoginAttemptRow.username == username) | (LoginAttemptRow.client == client))) or 0


def _hash(password: str) -> str:
    """An argon2id hash, computed in one of the ARGON2_CONCURRENCY slots."""
    with _argon2_slots:
        return _hasher.hash(password)


def _password_matches(user: UserRow | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s; an unknown user costs one hash all the same, so the
    answer takes as long whether or not the user exists."""
    with _argon2_slots:
        if user is None:
            _hasher.hash(password)
            return False
        try:
            return _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def _open_session(store: Store, attempt_id: int, user_id: int,
                  password: str) -> tuple[str, SessionRow]:
    """Mark the reserved attempt a success and open a session (rehashing an outdated hash)."""
    token = secrets.token_urlsafe(32)
    with store.session() as s, s.begin():
        s.get(LoginAttemptRow, attempt_id).success = True
        session = SessionRow(token_hash=_digest(token), user_id=user_id,
                             csrf_token=secrets.token_urlsafe(32),
                             expires_at=_now() + timedelta(hours=SESSION_HOURS))
        s.add(session)
        user = s.get(UserRow, user_id)
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hash(password)
    return token, session


def unlock(store: Store, username: str, address: str | None = None) -> int:
    """Clear the failed logins of ``username`` (any case), and those from ``address`` if given,
    so they may log in again at once; returns how many records were removed."""
    condition = LoginAttemptRow.username == normalise_username(username)
    if address:
        condition = condition | (LoginAttemptRow.client == address.strip()[:64])
    with store.session() as s, s.begin():
        failed = LoginAttemptRow.success.is_(False)
        result = s.execute(delete(LoginAttemptRow).where(failed, condition))
    return result.rowcount or 0


def session_user(store: Store, token: str | None) -> tuple[UserRow, SessionRow] | None:
    """The active user and session of a cookie token, or None (unknown, expired, disabled)."""
    if not token:
        return None
    with store.session() as s:
        session = s.scalar(select(SessionRow).where(SessionRow.token_hash == _digest(token)))
        if session is None or session.expires_at < _now():
            return None
        user = s.get(UserRow, session.user_id)
    if user is None or not user.active:
        return None
    return user, session


def logout(store: Store, token: str | None) -> None:
    if token:
        with store.session() as s, s.begin():
            s.execute(delete(SessionRow).where(SessionRow.token_hash == _digest(token)))


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and secrets.compare_digest(expected.encode(), (given or "").encode())
