"""Digests (issue 20, item 3): per user, new flags, stages awaiting them and overdue stages in their
scope; delivered to a real SMTP server the test starts (aiosmtpd on 127.0.0.1, with a login) and a
real local HTTP server for the signed webhook; recorded so the next digest starts where it ended."""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import func, select

from gmsense.config import Settings, load_settings
from gmsense.review import auth, escalation, notify
from gmsense.store import DigestRow, FlagRow, Store
from tests.test_escalation import PASSWORD, T0, USERS, plant

#: The test server wants a login over plain SMTP (allowed to this machine only); aiosmtpd warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
NOW = T0 + timedelta(days=6)
SMTP_USER, SMTP_PASSWORD = "relay-user", "relay-secret-1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(str(tmp_path / "notify.db"))
    yield store
    store.engine.dispose()


@pytest.fixture
def flags(store: Store) -> dict[tuple[str, str], int]:
    planted = plant(store)
    for name, (role, scope) in USERS.items():
        auth.add_user(store, name, PASSWORD, role, scope=scope, email=f"{name}@bureau.example")
    auth.add_user(store, "noaddress", PASSWORD, "reviewer", scope="county:230184")
    auth.add_user(store, "third_party", PASSWORD, "assessor", scope="licence:SZ", email="tp@example.org")
    return planted


class Inbox:
    """The aiosmtpd handler: keeps every message it is given, and the logins it accepted."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content, policy=default_policy))
        return "250 OK"


def _authenticator(server: object, session: object, envelope: object, mechanism: str, data: object) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (SMTP_USER,
                                                                                                SMTP_PASSWORD)
    return AuthResult(success=ok)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1 and a free port, which wants a login (over plain SMTP: local)."""
    inbox = Inbox()
    with socket.socket() as probe:  # a free port (the controller's start-up check cannot use port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=_authenticator,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def webhook_server() -> Iterator[tuple[list[tuple[dict, bytes]], str]]:
    received: list[tuple[dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}/hooks/gmsense"
    server.shutdown()
    server.server_close()


def settings_for(port: int, webhook: str | None = None) -> Settings:
    base = load_settings()
    notify_settings = base.notify.model_copy(update={
        "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none", "from_address": "gmsense@bureau.example",
        "app_url": "https://review.bureau.example", "webhook_url": webhook})
    return base.model_copy(update={"notify": notify_settings})


ENV = {"GMSENSE_SMTP_USER": SMTP_USER, "GMSENSE_SMTP_PASSWORD": SMTP_PASSWORD, "GMSENSE_WEBHOOK_SECRET": "hook-key"}


def test_digest_content_per_user_and_scope(store: Store, flags: dict) -> None:
    digests = {d.user.username: d for d in notify.build(store, load_settings(), NOW)}
    assert "third_party" not in digests, "assessors are outside the bureau: no digest"

    def summary(name: str) -> tuple[set[int], set[int], set[int]]:
        d = digests[name]
        assert d.new_total == len(d.new_flags)
        return ({f["id"] for f in d.new_flags}, {i["flag_id"] for i in d.awaiting.items},
                {i["flag_id"] for i in d.overdue.items})

    def ids(*keys: tuple[str, str]) -> set[int]:
        return {flags[k] for k in keys}

    every = ("critical", "warning", "info")
    sz = ids(*[("SZ", s) for s in every])
    new, awaiting, overdue = summary("sz_county")
    assert (new, awaiting, overdue) == (sz, sz, ids(("SZ", "critical"), ("SZ", "warning")))
    new, awaiting, overdue = summary("harbin")
    assert new == ids(*[(site, s) for site in ("SZ", "WC", "HB") for s in every])
    assert awaiting == ids(("HB", "critical"), ("HB", "warning"))
    assert overdue == ids(*[(site, s) for site in ("SZ", "WC") for s in ("critical", "warning")])
    new, awaiting, overdue = summary("harbin_viewer")
    assert awaiting == set(), "a viewer acts on no stage"
    assert overdue == ids(*[(site, s) for site in ("SZ", "WC") for s in ("critical", "warning")])
    new, awaiting, overdue = summary("prov")
    assert len(new) == 15
    assert awaiting == ids(*[("NONE", s) for s in every], ("HB", "info"))
    assert len(overdue) == 7
    assert summary("wc_county")[0] == ids(*[("WC", s) for s in every])
    text = digests["sz_county"].text("https://review.bureau.example")
    assert f"https://review.bureau.example/flags/{flags[('SZ', 'critical')]}" in text
    assert "Overdue stages (2)" in text
    assert "1 days overdue" in text


def test_digests_go_to_a_real_smtp_server_and_are_recorded(store: Store, flags: dict,
                                                           smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    settings = settings_for(port)
    outcome = notify.send(store, settings, now=NOW, env=ENV)
    assert sorted(outcome.emailed) == sorted(set(USERS)), "every user with an address and a digest role"
    assert "noaddress" in outcome.skipped
    assert len(inbox.messages) == len(USERS)
    by_to = {m["To"]: m for m in inbox.messages}
    mail = by_to["sz_county@bureau.example"]
    assert mail["From"] == "gmsense@bureau.example"
    assert mail["Subject"].strip() == "gmsense: 3 new flags, 3 stages awaiting you, 2 overdue (county:230183)"
    body = mail.get_content()
    assert f"/flags/{flags[('SZ', 'critical')]}" in body
    assert f"/flags/{flags[('WC', 'critical')]}" not in body, "another county's flag"
    assert ("gmsense@bureau.example", ["sz_county@bureau.example"]) in inbox.envelopes
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(DigestRow)) == len(USERS)
    # The next digest lists only the flags stored since; what is still awaiting or overdue stays.
    with store.session() as s, s.begin():
        first = s.get(FlagRow, flags[("SZ", "critical")])
        s.add(FlagRow(site_id="SZ", rule="new_disturbance", flag_key="later", severity="info", message="m",
                      evidence={}, created_scan_id=1, updated_scan_id=1, created_at=NOW + timedelta(hours=1),
                      province_code=first.province_code, city_code=first.city_code, county_code=first.county_code))
    inbox.messages.clear()
    later = NOW + timedelta(days=1)
    escalation.act(store, flags[("SZ", "critical")], auth.get_user(store, "sz_county"), 0, "sign", comment="trench",
                   now=later - timedelta(hours=2))
    notify.send(store, settings, now=later, env=ENV, usernames=["sz_county", "harbin"])
    by_to = {m["To"]: m for m in inbox.messages}
    subject = by_to["sz_county@bureau.example"]["Subject"].strip()
    assert subject.startswith("gmsense: 1 new flags, 3 stages awaiting you, 1 ")
    assert f"/flags/{flags[('SZ', 'critical')]}" in by_to["harbin@bureau.example"].get_content().split(
        "Stages awaiting you")[1].split("Overdue stages")[0], "the city's stage now awaits the city"


def test_a_wrong_smtp_login_is_an_error_and_nothing_is_recorded(store: Store, flags: dict,
                                                                smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    with pytest.raises(notify.NotifyError, match=r"SMTP server 127\.0\.0\.1"):
        notify.send(store, settings_for(port), now=NOW, env={**ENV, "GMSENSE_SMTP_PASSWORD": "wrong"})
    assert inbox.messages == []
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(DigestRow)) == 0


def test_a_dry_run_sends_and_records_nothing(store: Store, flags: dict, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    outcome = notify.send(store, settings_for(port), now=NOW, env=ENV, dry_run=True)
    assert outcome.emailed == []
    assert sum(not d.empty for d in outcome.digests) == len(USERS) + 1
    assert inbox.messages == []
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(DigestRow)) == 0


def test_the_webhook_is_signed_with_hmac_sha256(store: Store, flags: dict, smtp_server: tuple[Inbox, int],
                                                webhook_server: tuple[list, str]) -> None:
    received, url = webhook_server
    _inbox, port = smtp_server
    settings = settings_for(port, webhook=url)
    with pytest.raises(notify.NotifyError, match="GMSENSE_WEBHOOK_SECRET"):
        notify.send(store, settings, now=NOW, env={k: v for k, v in ENV.items() if "WEBHOOK" not in k})
    assert received == []
    outcome = notify.send(store, settings, now=NOW, env=ENV)
    assert outcome.webhook
    [(headers, body)] = received
    expected = "sha256=" + hmac.new(b"hook-key", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Gmsense-Signature"], expected)
    assert headers["X-Gmsense-Event"] == "digest"
    assert headers["X-Gmsense-Signature"] != "sha256=" + hmac.new(b"other", body, hashlib.sha256).hexdigest()
    payload = json.loads(body)
    users = {d["username"]: d for d in payload["digests"]}
    assert "noaddress" in users, "the webhook carries digests of users without an address too"
    assert users["sz_county"]["overdue"]["total"] == 2
    assert users["sz_county"]["scope"] == {"kind": "county", "codes": ["230183"]}
    with store.session() as s:
        channels = dict(s.execute(select(DigestRow.user_id, DigestRow.channels)).all())
    assert sorted(set(channels.values())) == ["webhook", "webhook+email"]


def test_the_cli_digest(tmp_path: Path, store: Store, flags: dict, smtp_server: tuple[Inbox, int],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gmsense.cli import app

    inbox, port = smtp_server
    config = tmp_path / "settings.yaml"
    config.write_text(f"notify:\n  smtp_host: 127.0.0.1\n  smtp_port: {port}\n  smtp_security: none\n")
    runner = CliRunner()
    db = store.url
    dry = runner.invoke(app, ["notify", "digest", "--dry-run", "--user", "sz_county", "--db", db,
                              "--config", str(config)])
    assert dry.exit_code == 0, dry.output
    assert "sz_county <sz_county@bureau.example>" in dry.output
    assert "Stages awaiting you (3)" in dry.output
    assert inbox.messages == []
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    sent = runner.invoke(app, ["notify", "digest", "--user", "sz_county", "--user", "noaddress", "--db", db,
                               "--config", str(config)])
    assert sent.exit_code == 0, sent.output
    assert "sz_county: sent by email" in sent.output
    assert "noaddress: not sent, no e-mail address" in sent.output
    assert len(inbox.messages) == 1
    unknown = runner.invoke(app, ["notify", "digest", "--user", "nobody", "--db", db, "--config", str(config)])
    assert unknown.exit_code == 2
    set_email = runner.invoke(app, ["users", "email", "noaddress", "na@bureau.example", "--db", db])
    assert set_email.exit_code == 0, set_email.output
    bad = runner.invoke(app, ["users", "email", "noaddress", "a@b\nBcc: x@evil.example", "--db", db])
    assert bad.exit_code == 2, "one address, no header injection"


def test_credentials_never_go_unencrypted_to_another_host() -> None:
    assert notify._is_local("127.0.0.1")
    assert notify._is_local("localhost")
    assert not notify._is_local("192.0.2.10")
