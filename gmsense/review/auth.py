"""Users, roles, passwords, sessions and login rate limiting for the review app.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile).
A session is a random 256-bit token in an HttpOnly cookie; the store keeps only its SHA-256, so a
leaked database does not log anyone in. Each session carries its own CSRF token, which every form
and every state-changing API call must echo.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select

from gmsense.errors import InputError
from gmsense.i18n import LANGUAGES
from gmsense.store import LoginAttemptRow, SessionRow, Store, UserRow

ROLES = ("viewer", "reviewer", "admin")
#: What each role may do; a higher role may do everything a lower one may.
PERMISSIONS = {"view": "viewer", "decide": "reviewer", "manage_users": "admin"}
SESSION_HOURS = 12
MIN_PASSWORD = 10
#: Login rate limit: at most this many failed attempts per user name, and per client address,
#: within LOGIN_WINDOW; further attempts are refused until the window has passed.
MAX_FAILED_LOGINS = 5
LOGIN_WINDOW = timedelta(minutes=15)
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{2,80}$")
_hasher = PasswordHasher()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def can(user: UserRow | None, action: str) -> bool:
    """Whether ``user`` (active) may do ``action`` (a key of PERMISSIONS)."""
    if user is None or not user.active:
        return False
    return ROLES.index(user.role) >= ROLES.index(PERMISSIONS[action])


def check_password_rules(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InputError(f"the password must have at least {MIN_PASSWORD} characters")
    if password.lower() == username.lower():
        raise InputError("the password must not be the user name")


def add_user(store: Store, username: str, password: str, role: str, lang: str | None = None) -> UserRow:
    if not _USERNAME.match(username):
        raise InputError("a user name has 2-80 letters, digits or . _ @ -")
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    if lang is not None and lang not in LANGUAGES:
        raise InputError(f"unknown language {lang!r}; choose one of: {', '.join(LANGUAGES)}")
    check_password_rules(username, password)
    with store.session() as s, s.begin():
        if s.scalar(select(UserRow).where(UserRow.username == username)) is not None:
            raise InputError(f"user {username!r} exists already")
        user = UserRow(username=username, password_hash=_hasher.hash(password), role=role, lang=lang, active=True)
        s.add(user)
    return user


def list_users(store: Store) -> list[UserRow]:
    with store.session() as s:
        return list(s.scalars(select(UserRow).order_by(UserRow.username)))


def get_user(store: Store, username: str) -> UserRow:
    with store.session() as s:
        user = s.scalar(select(UserRow).where(UserRow.username == username))
    if user is None:
        raise InputError(f"no user {username!r}; `gmsense users list` shows them")
    return user


def set_active(store: Store, username: str, active: bool) -> UserRow:
    """Enable or disable a user; disabling also ends all their sessions."""
    with store.session() as s, s.begin():
        user = s.scalar(select(UserRow).where(UserRow.username == username))
        if user is None:
            raise InputError(f"no user {username!r}; `gmsense users list` shows them")
        user.active = active
        if not active:
            s.execute(delete(SessionRow).where(SessionRow.user_id == user.id))
    return user


def set_password(store: Store, username: str, password: str) -> None:
    check_password_rules(username, password)
    with store.session() as s, s.begin():
        user = s.scalar(select(UserRow).where(UserRow.username == username))
        if user is None:
            raise InputError(f"no user {username!r}")
        user.password_hash = _hasher.hash(password)
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

    Every attempt is recorded. After MAX_FAILED_LOGINS failures for the user name or from the
    client address within LOGIN_WINDOW, attempts are refused without checking the password.
    """
    username = (username or "").strip()[:80]
    since = _now() - LOGIN_WINDOW
    with store.session() as s, s.begin():
        failures = s.scalar(select(func.count()).select_from(LoginAttemptRow).where(
            LoginAttemptRow.at >= since, LoginAttemptRow.success.is_(False),
            (LoginAttemptRow.username == username) | (LoginAttemptRow.client == client)))
        if failures >= MAX_FAILED_LOGINS:
            raise LoginRefusedError("too many failed logins; wait 15 minutes", throttled=True)
        user = s.scalar(select(UserRow).where(UserRow.username == username))
        ok = False
        if user is not None:
            try:
                ok = _hasher.verify(user.password_hash, password or "")
            except (VerificationError, InvalidHashError):
                ok = False
        else:
            _hasher.hash(password or "")  # same time whether or not the user exists
        ok = ok and user is not None and user.active
        s.add(LoginAttemptRow(username=username, client=client[:64], success=ok))
        if not ok:
            failed = LoginRefusedError("wrong user name or password, or the user is disabled")
        else:
            token = secrets.token_urlsafe(32)
            session = SessionRow(token_hash=_digest(token), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                                 expires_at=_now() + timedelta(hours=SESSION_HOURS))
            s.add(session)
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
    if not ok:
        raise failed
    return token, session


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
