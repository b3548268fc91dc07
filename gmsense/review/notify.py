"""Digests: per user, the new and overdue work in their scope, by e-mail (SMTP) and an optional
signed webhook (``gmsense notify digest``).

A user's digest lists, within their scope (gmsense.store.scope, in SQL):
- the **new flags** stored since their last digest on that channel (their first: of the last
  ``first_digest_days``);
- the **stages awaiting them**: pending escalation stages at their level that their role may act on
  (reviewers and admins; gmsense.review.escalation);
- the **overdue stages**: every pending stage in their scope past its deadline.
Each list gives its whole count and at most ``max_items`` flags. Active users with a role that
reads the bureau's work (viewer, reviewer, admin) get one; assessors (third parties) none; an empty
digest is not sent.

E-mail: one message per user with an address (``users.email``), through the configured SMTP server
(``notify`` settings). ``smtp_security`` is ``tls`` (TLS from the first byte, port 465),
``starttls`` (the connection is upgraded before anything else is said; a server that does not offer
STARTTLS is an error, never a fallback to plain text) or ``none`` (a local relay, no login). The
server's certificate and host name are always verified, against the system's trust store or, for a
private CA, the CA certificate ``smtp_ca_file``; a failed verification is an error and nothing is
sent. The login comes from the environment variables the settings name (never from a file) and is
refused over an unencrypted connection. Webhook (``notify.webhook_url``): one POST per run of every
digest as JSON, signed with a timestamp and a delivery id and retried with back-off
(gmsense.review.webhook), the secret from the environment variable ``notify.webhook_secret_env``.

**Recording.** Each channel keeps its own account: a digest is recorded (``digests``, append-only,
one row per user and channel) only once that channel delivered it, right after it did, so a
failure of one channel neither loses the digest for it (the next run includes the same flags
again) nor sends it twice by another. Delivery is at least once: a crash between the server's
acceptance and the record would send that one digest again. ``dry_run`` builds and shows the
digests, sends and records nothing.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from gmsense.config import Settings
from gmsense.errors import GmsenseError, InputError
from gmsense.outputs.i18n import LANGUAGES, t
from gmsense.review import escalation
from gmsense.review.auth import can, user_scope
from gmsense.review.service import QUEUE_ORDER
from gmsense.review.webhook import WebhookError, deliver
from gmsense.store import DigestRow, FlagRow, Store, UserRow
from gmsense.store.scope import Scope, flag_clause

#: Roles that get a digest (assessors are outside the bureau).
DIGEST_ROLES = ("viewer", "reviewer", "admin")


class NotifyError(GmsenseError):
    """The SMTP server or the webhook could not be reached or refused the digests; ``outcome``
    (when the run got that far) holds what was delivered and recorded all the same."""

    def __init__(self, message: str, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Digest:
    user: UserRow
    scope: Scope
    since: datetime
    now: datetime
    new_total: int
    new_flags: list[dict[str, Any]]
    awaiting: escalation.PendingList
    overdue: escalation.PendingList
    channels: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.new_total or self.awaiting.total or self.overdue.total)

    @property
    def lang(self) -> str:
        return self.user.lang if self.user.lang in LANGUAGES else "en"

    def subject(self) -> str:
        return t("digest.subject", self.lang, new=self.new_total, awaiting=self.awaiting.total,
                 overdue=self.overdue.total, scope=str(self.scope))

    def text(self, app_url: str) -> str:
        lang, base = self.lang, app_url.rstrip("/")
        lines = [t("digest.hello", lang, scope=self.scope.describe(), since=f"{self.since:%Y-%m-%d %H:%M}",
                   now=f"{self.now:%Y-%m-%d %H:%M}"), ""]

        def section(title: str, total: int, rows: list[str]) -> None:
            lines.append(f"{t(title, lang)} ({total})")
            lines.extend(rows or [f"  {t('digest.none', lang)}"])
            if total > len(rows):
                lines.append("  " + t("digest.more", lang, n=total - len(rows)))
            lines.append("")

        section("digest.new_flags", self.new_total, [
            f"  #{f['id']} {t('severity.' + f['severity'], lang)} {f['rule']} {f['site_id']} "
            f"({f['created_at'][:10]}) {base}/flags/{f['id']}" for f in self.new_flags])

        def stage_rows(items: list[dict[str, Any]], key: str) -> list[str]:
            return [f"  #{i['flag_id']} {t('severity.' + i['severity'], lang)} {i['site_id']}: " + t(
                key, lang, stage=i["stage"] + 1, action=_label("stage_action", i["action"], lang),
                level=_label("level", i["level"], lang), due=(i["due_at"] or "")[:16].replace("T", " "),
                days=i["days_overdue"]) + f" {base}/flags/{i['flag_id']}" for i in items]

        section("digest.awaiting", self.awaiting.total, stage_rows(self.awaiting.items, "digest.stage_line"))
        section("digest.overdue", self.overdue.total, stage_rows(self.overdue.items, "digest.overdue_line"))
        return "\n".join(lines).rstrip() + "\n"

    def as_json(self) -> dict[str, Any]:
        return {"username": self.user.username, "scope": {"kind": self.scope.kind, "codes": list(self.scope.codes)},
                "since": self.since.isoformat(timespec="seconds"), "until": self.now.isoformat(timespec="seconds"),
                "new_flags": {"total": self.new_total, "items": self.new_flags},
                "awaiting": {"total": self.awaiting.total, "items": self.awaiting.items},
                "overdue": {"total": self.overdue.total, "items": self.overdue.items}}


def _label(prefix: str, key: str, lang: str) -> str:
    from gmsense.outputs.i18n import catalog

    return t(f"{prefix}.{key}", lang) if f"{prefix}.{key}" in catalog("en") else key


def _users(store: Store, usernames: list[str] | None) -> list[UserRow]:
    with store.session() as s:
        q = select(UserRow).where(UserRow.active.is_(True), UserRow.role.in_(DIGEST_ROLES)).order_by(UserRow.username)
        if usernames:
            q = q.where(func.lower(UserRow.username).in_([n.strip().lower() for n in usernames]))
        users = list(s.scalars(q))
    if usernames and len(users) != len({n.strip().lower() for n in usernames}):
        found = {u.username for u in users}
        missing = [n for n in usernames if n.strip().lower() not in found]
        raise InputError(f"no active user of a digest role ({', '.join(DIGEST_ROLES)}) named {', '.join(missing)}")
    return users


def last_sent(store: Store, channel: str) -> dict[int, datetime]:
    """Per user id, when a digest was last delivered by ``channel`` (email or webhook)."""
    with store.session() as s:
        return dict(s.execute(select(DigestRow.user_id, func.max(DigestRow.sent_at))
                              .where(DigestRow.channels.contains(channel)).group_by(DigestRow.user_id)).all())


def _digest(store: Store, settings: Settings, user: UserRow, since: datetime, now: datetime) -> Digest:
    limit = settings.notify.max_items
    scope = user_scope(store, user)
    where = [flag_clause(scope), FlagRow.created_at >= since, FlagRow.created_at < now]
    with store.session() as s:
        total = int(s.scalar(select(func.count()).select_from(FlagRow).where(*where)) or 0)
        rows = list(s.scalars(select(FlagRow).where(*where).order_by(*QUEUE_ORDER).limit(limit)))
    new = [{"id": f.id, "site_id": f.site_id, "rule": f.rule, "severity": f.severity, "status": f.status,
            "created_at": f.created_at.isoformat(timespec="seconds")} for f in rows]
    if can(user, "decide"):
        awaiting = escalation.pending_stages(store, scope, rules=settings.rules, now=now, level=user.scope_kind,
                                             role=user.role, limit=limit)
    else:
        awaiting = escalation.PendingList(0, [])
    overdue = escalation.pending_stages(store, scope, rules=settings.rules, now=now, overdue_only=True, limit=limit)
    return Digest(user, scope, since, now, total, new, awaiting, overdue)


class _Builder:
    """Digests by user and start, so a user whose channels start at the same moment is built once."""

    def __init__(self, store: Store, settings: Settings, now: datetime) -> None:
        self.store, self.settings, self.now = store, settings, now
        self._built: dict[tuple[int, datetime], Digest] = {}

    def for_channel(self, users: list[UserRow], channel: str) -> dict[int, Digest]:
        last = last_sent(self.store, channel)
        first = self.now - timedelta(days=self.settings.notify.first_digest_days)
        out = {}
        for user in users:
            key = (user.id, last.get(user.id) or first)
            if key not in self._built:
                self._built[key] = _digest(self.store, self.settings, user, key[1], self.now)
            out[user.id] = self._built[key]
        return out


def build(store: Store, settings: Settings, now: datetime | None = None,
          usernames: list[str] | None = None, channel: str = "email") -> list[Digest]:
    """The digest of every active user of a digest role (or of ``usernames``), empty ones included,
    each from the user's last digest delivered by ``channel`` (email or webhook)."""
    users = _users(store, usernames)
    by_user = _Builder(store, settings, now or _now()).for_channel(users, channel)
    return [by_user[u.id] for u in users]


@dataclass
class Outcome:
    digests: list[Digest]  # per user, the digest shown: the e-mail's (the webhook's for users without an address)
    emailed: list[str] = field(default_factory=list)
    webhook: bool = False
    delivery_id: str | None = None  # the webhook delivery's X-Gmsense-Delivery
    channels: dict[str, list[str]] = field(default_factory=dict)  # user -> channels that delivered their digest
    skipped: dict[str, str] = field(default_factory=dict)  # user -> why nothing was sent
    failed: dict[str, str] = field(default_factory=dict)  # user -> why the SMTP server did not take their digest
    errors: dict[str, str] = field(default_factory=dict)  # channel -> why it delivered nothing


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and host name: against
    ``smtp_ca_file`` when set (a private CA), else the system's trust store; TLS 1.2 at least."""
    ca_file = settings.notify.smtp_ca_file
    if ca_file:
        path = Path(ca_file).expanduser()
        if not path.is_file():
            raise InputError(f"notify.smtp_ca_file {path} does not exist (the PEM certificate of the CA that signed "
                             "the SMTP server's certificate)")
        try:
            context = ssl.create_default_context(cafile=str(path))
        except ssl.SSLError as exc:
            raise InputError(f"notify.smtp_ca_file {path} is not a PEM CA certificate: {exc}") from None
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def smtp_login(settings: Settings, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The SMTP login from the environment variables the settings name (None: no login). Refused
    (InputError) half set, or with ``smtp_security`` none: a password never travels unencrypted."""
    cfg = settings.notify
    username, password = env.get(cfg.username_env) or "", env.get(cfg.password_env) or ""
    if not username and not password:
        return None
    if not username or not password:
        given, lacking = (cfg.username_env, cfg.password_env) if username else (cfg.password_env, cfg.username_env)
        raise InputError(f"{given} is set but {lacking} is not: set both for an SMTP login, or neither")
    if cfg.smtp_security == "none":
        raise InputError(f"refusing to send the SMTP login unencrypted to {cfg.smtp_host}: set notify.smtp_security "
                         f"to starttls or tls, or unset {cfg.username_env} and {cfg.password_env} for a relay "
                         "without login")
    return username, password


def _connect(settings: Settings, login: tuple[str, str] | None, context: ssl.SSLContext | None) -> smtplib.SMTP:
    cfg = settings.notify
    where = f"{cfg.smtp_host}:{cfg.smtp_port} ({cfg.smtp_security})"
    smtp: smtplib.SMTP | None = None
    try:
        if cfg.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout_s)
            if cfg.smtp_security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise NotifyError(f"the SMTP server {where} does not offer STARTTLS: refusing to go on "
                                      "unencrypted (nothing was sent)")
                smtp.starttls(context=context)
                smtp.ehlo()
        if login:
            smtp.login(*login)
        return smtp
    except NotifyError:
        _close(smtp)
        raise
    except ssl.SSLCertVerificationError as exc:
        _close(smtp)
        raise NotifyError(f"the certificate of the SMTP server {where} failed verification "
                          f"({exc.verify_message or exc}): nothing was sent; for a server whose certificate a "
                          "private CA signed, set notify.smtp_ca_file to that CA's certificate (PEM)") from None
    except smtplib.SMTPAuthenticationError as exc:
        _close(smtp)
        raise NotifyError(f"the SMTP server {where} refused the login of {login[0] if login else '?'}: "
                          f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}") from None
    except (OSError, smtplib.SMTPException) as exc:  # ssl.SSLError is an OSError
        _close(smtp)
        raise NotifyError(f"cannot use the SMTP server {where}: {exc}") from None


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        smtp.close()


def _message(digest: Digest, settings: Settings) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = digest.subject()
    msg["From"] = settings.notify.from_address
    msg["To"] = digest.user.email
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=settings.notify.from_address.rpartition("@")[2] or None)
    msg.set_content(digest.text(settings.notify.app_url))
    return msg


def webhook_body(digests: list[Digest], now: datetime) -> bytes:
    payload = {"event": "digest", "generated_at": now.isoformat(timespec="seconds"),
               "digests": [d.as_json() for d in digests]}
    return json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _webhook_secret(settings: Settings, env: Mapping[str, str]) -> str:
    cfg = settings.notify
    if not (cfg.webhook_url or "").startswith(("https://", "http://")):
        raise InputError(f"notify.webhook_url must be an http(s) URL, not {cfg.webhook_url!r}")
    secret = env.get(cfg.webhook_secret_env)
    if not secret:
        raise NotifyError(f"notify.webhook_url is set but the secret is not: set the environment variable "
                          f"{cfg.webhook_secret_env}")
    return secret


def _record(store: Store, digests: list[Digest], channel: str) -> None:
    """The digests ``channel`` delivered: one row each, in one transaction."""
    with store.session() as s, s.begin():
        for d in digests:
            s.add(DigestRow(user_id=d.user.id, sent_at=d.now, since=d.since, new_flags=d.new_total,
                            awaiting=d.awaiting.total, overdue=d.overdue.total, channels=channel))


def _send_mail(store: Store, settings: Settings, smtp: smtplib.SMTP, due: list[Digest], outcome: Outcome) -> None:
    """Each digest by e-mail, recorded as soon as the server took it; a refusal fails that user only,
    a broken connection the user and everyone after (they stay unrecorded: the next run sends them)."""
    for index, d in enumerate(due):
        name = d.user.username
        try:
            smtp.send_message(_message(d, settings))
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            outcome.failed[name] = str(exc)
            continue
        except (OSError, smtplib.SMTPException) as exc:
            for rest in due[index:]:
                outcome.failed[rest.user.username] = f"the connection to the SMTP server broke off ({exc})"
            return
        _record(store, [d], "email")
        outcome.emailed.append(name)
        outcome.channels.setdefault(name, []).append("email")


def send(store: Store, settings: Settings, *, now: datetime | None = None, dry_run: bool = False,
         usernames: list[str] | None = None, env: Mapping[str, str] | None = None) -> Outcome:
    """Build the digests and deliver the non-empty ones: the webhook (if configured) first, then one
    e-mail per user with an address; each channel records what it delivered (see the module
    docstring). ``dry_run``: build only.

    Settings and credentials are checked before anything is sent (InputError, NotifyError). A
    channel that delivered nothing at all (the webhook after its retries, an SMTP server that could
    not be reached, failed verification or refused the login) raises NotifyError once the other
    channel has run, with the outcome attached; recipients the server refused are in ``failed``."""
    now, env = now or _now(), os.environ if env is None else env
    cfg = settings.notify
    users = _users(store, usernames)
    builder = _Builder(store, settings, now)
    mail = builder.for_channel(users, "email")
    hook = builder.for_channel(users, "webhook") if cfg.webhook_url else {}
    outcome = Outcome([mail[u.id] if u.email or not hook else hook[u.id] for u in users])
    for u in users:
        if not u.email and not hook:
            outcome.skipped[u.username] = "no e-mail address (gmsense users email NAME ADDRESS)"
        elif (not u.email or mail[u.id].empty) and (u.id not in hook or hook[u.id].empty):
            outcome.skipped[u.username] = "nothing new"
    hook_due = [hook[u.id] for u in users if u.id in hook and not hook[u.id].empty]
    mail_due = [mail[u.id] for u in users if u.email and not mail[u.id].empty]
    if dry_run or not (hook_due or mail_due):
        return outcome
    secret = _webhook_secret(settings, env) if hook_due else ""
    login = smtp_login(settings, env) if mail_due else None
    context = _tls_context(settings) if mail_due and cfg.smtp_security != "none" else None
    if hook_due:
        try:
            delivery = deliver(cfg.webhook_url or "", webhook_body(hook_due, now), secret,
                               timeout_s=cfg.webhook_timeout_s, retries=cfg.webhook_retries,
                               base_delay_s=cfg.webhook_retry_base_delay_s,
                               max_delay_s=cfg.webhook_retry_max_delay_s)
        except WebhookError as exc:
            outcome.errors["webhook"] = str(exc)
        else:
            _record(store, hook_due, "webhook")
            outcome.webhook, outcome.delivery_id = True, delivery.delivery_id
            for d in hook_due:
                outcome.channels.setdefault(d.user.username, []).append("webhook")
    if mail_due:
        try:
            smtp = _connect(settings, login, context)
        except NotifyError as exc:
            outcome.errors["email"] = str(exc)
        else:
            try:
                _send_mail(store, settings, smtp, mail_due, outcome)
            finally:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):  # the server hung up first
                    smtp.close()
    if outcome.errors:
        raise NotifyError("; ".join(outcome.errors.values()), outcome)
    return outcome
