"""Digests: per user, the new and overdue work in their scope, by e-mail (SMTP) and an optional
signed webhook (``gmsense notify digest``).

A user's digest lists, within their scope (gmsense.store.scope, in SQL):
- the **new flags** stored since their last digest (their first: of the last ``first_digest_days``);
- the **stages awaiting them**: pending escalation stages at their level that their role may act on
  (reviewers and admins; gmsense.review.escalation);
- the **overdue stages**: every pending stage in their scope past its deadline.
Each list gives its whole count and at most ``max_items`` flags. Active users with a role that
reads the bureau's work (viewer, reviewer, admin) get one; assessors (third parties) none; an empty
digest is not sent.

E-mail: one message per user with an address (``users.email``), through the configured SMTP server
(``notify`` settings: host, port, ``smtp_security`` none / starttls / tls with the server's
certificate verified, the from address); the login comes from the environment variables the
settings name (never from a file), and is refused over an unencrypted connection to anything but
this machine. Webhook (``notify.webhook_url``): one POST per run of every digest as JSON, signed
``X-Gmsense-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>``, the secret from the
environment variable ``notify.webhook_secret_env``. A digest delivered is recorded (``digests``,
append-only) so the next starts where it ended; ``dry_run`` builds and shows them, sends and records
nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from sqlalchemy import func, select

from gmsense.config import Settings
from gmsense.errors import GmsenseError, InputError
from gmsense.outputs.i18n import LANGUAGES, t
from gmsense.review import escalation
from gmsense.review.auth import can, user_scope
from gmsense.review.service import QUEUE_ORDER
from gmsense.store import DigestRow, FlagRow, Store, UserRow
from gmsense.store.scope import Scope, flag_clause

SIGNATURE_HEADER = "X-Gmsense-Signature"
EVENT_HEADER = "X-Gmsense-Event"
#: Roles that get a digest (assessors are outside the bureau).
DIGEST_ROLES = ("viewer", "reviewer", "admin")


class NotifyError(GmsenseError):
    """The SMTP server or the webhook could not be reached, refused, or is not configured."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def signature(secret: str, body: bytes) -> str:
    """The webhook signature header value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


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


def build(store: Store, settings: Settings, now: datetime | None = None,
          usernames: list[str] | None = None) -> list[Digest]:
    """The digest of every active user of a digest role (or of ``usernames``), empty ones included."""
    now = now or _now()
    limit = settings.notify.max_items
    with store.session() as s:
        q = select(UserRow).where(UserRow.active.is_(True), UserRow.role.in_(DIGEST_ROLES)).order_by(UserRow.username)
        if usernames:
            q = q.where(func.lower(UserRow.username).in_([n.strip().lower() for n in usernames]))
        users = list(s.scalars(q))
        last = dict(s.execute(select(DigestRow.user_id, func.max(DigestRow.sent_at)).group_by(DigestRow.user_id)).all())
    if usernames and len(users) != len({n.strip().lower() for n in usernames}):
        found = {u.username for u in users}
        missing = [n for n in usernames if n.strip().lower() not in found]
        raise InputError(f"no active user of a digest role ({', '.join(DIGEST_ROLES)}) named {', '.join(missing)}")
    digests = []
    for user in users:
        scope = user_scope(store, user)
        since = last.get(user.id) or now - timedelta(days=settings.notify.first_digest_days)
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
        overdue = escalation.pending_stages(store, scope, rules=settings.rules, now=now, overdue_only=True,
                                            limit=limit)
        digests.append(Digest(user, scope, since, now, total, new, awaiting, overdue))
    return digests


@dataclass
class Outcome:
    digests: list[Digest]
    emailed: list[str] = field(default_factory=list)
    webhook: bool = False
    skipped: dict[str, str] = field(default_factory=dict)  # user -> why nothing was sent
    failed: dict[str, str] = field(default_factory=dict)  # user -> the SMTP server's refusal


def _is_local(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback
                   for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (OSError, ValueError):
        return False


def _smtp(settings: Settings, env: Mapping[str, str]) -> smtplib.SMTP:
    cfg = settings.notify
    context = ssl.create_default_context()
    try:
        if cfg.smtp_security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout_s,
                                                  context=context)
        else:
            smtp = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout_s)
            if cfg.smtp_security == "starttls":
                smtp.starttls(context=context)
        username, password = env.get(cfg.username_env), env.get(cfg.password_env)
        if username:
            if cfg.smtp_security == "none" and not _is_local(cfg.smtp_host):
                smtp.close()
                raise NotifyError(f"refusing to send the SMTP password unencrypted to {cfg.smtp_host}: set "
                                  "notify.smtp_security to starttls or tls")
            smtp.login(username, password or "")
        return smtp
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        raise NotifyError(f"cannot use the SMTP server {cfg.smtp_host}:{cfg.smtp_port} "
                          f"({cfg.smtp_security}): {exc}") from None


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


def _post_webhook(settings: Settings, body: bytes, env: Mapping[str, str]) -> None:
    cfg = settings.notify
    secret = env.get(cfg.webhook_secret_env)
    if not secret:
        raise NotifyError(f"notify.webhook_url is set but the secret is not: set the environment variable "
                          f"{cfg.webhook_secret_env}")
    if not cfg.webhook_url.startswith(("https://", "http://")):
        raise InputError(f"notify.webhook_url must be an http(s) URL, not {cfg.webhook_url!r}")
    request = urllib.request.Request(cfg.webhook_url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", EVENT_HEADER: "digest",
        SIGNATURE_HEADER: signature(secret, body), "User-Agent": "gmsense-notify"})
    try:
        with urllib.request.urlopen(request, timeout=cfg.webhook_timeout_s) as response:  # http(s) only, checked above
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise NotifyError(f"the webhook {cfg.webhook_url} did not take the digests: {exc}") from None


def send(store: Store, settings: Settings, *, now: datetime | None = None, dry_run: bool = False,
         usernames: list[str] | None = None, env: Mapping[str, str] | None = None) -> Outcome:
    """Build the digests and deliver the non-empty ones: the webhook (if configured) first, then one
    e-mail per user with an address; record each delivered digest. ``dry_run``: build only."""
    now, env = now or _now(), os.environ if env is None else env
    digests = build(store, settings, now, usernames)
    outcome = Outcome(digests)
    due = [d for d in digests if not d.empty]
    for d in digests:
        if d.empty:
            outcome.skipped[d.user.username] = "nothing new"
        elif not d.user.email and not settings.notify.webhook_url:
            outcome.skipped[d.user.username] = "no e-mail address (gmsense users email NAME ADDRESS)"
    if dry_run or not due:
        return outcome
    if settings.notify.webhook_url:
        _post_webhook(settings, webhook_body(due, now), env)
        outcome.webhook = True
        for d in due:
            d.channels.append("webhook")
    mailed = [d for d in due if d.user.email]
    if mailed:
        smtp = _smtp(settings, env)
        try:
            for d in mailed:
                try:
                    smtp.send_message(_message(d, settings))
                except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
                    outcome.failed[d.user.username] = str(exc)
                    continue
                d.channels.append("email")
                outcome.emailed.append(d.user.username)
        finally:
            try:
                smtp.quit()
            except smtplib.SMTPException:  # pragma: no cover - the server hung up first
                smtp.close()
    with store.session() as s, s.begin():
        for d in due:
            if d.channels:
                s.add(DigestRow(user_id=d.user.id, sent_at=now, since=d.since, new_flags=d.new_total,
                                awaiting=d.awaiting.total, overdue=d.overdue.total, channels="+".join(d.channels)))
    return outcome
