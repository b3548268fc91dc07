"""Digests (issue 20): per user, new flags, stages awaiting them and overdue stages in their scope;
delivered to real SMTP servers the tests start (aiosmtpd on 127.0.0.1: STARTTLS and implicit TLS
with certificates of a throwaway CA made here, a login) and a real local HTTP server for the signed
webhook; recorded per channel so the next digest starts where that channel's last one ended, and
nothing is lost or sent twice after a failure."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from gmsense.config import Settings, load_settings
from gmsense.errors import InputError
from gmsense.review import auth, escalation, notify, webhook
from gmsense.store import DigestRow, FlagRow, Store
from tests.test_escalation import PASSWORD, T0, USERS, plant
from tests.tls_certs import ServerCert, make_server_cert

NOW = T0 + timedelta(days=6)
SMTP_USER, SMTP_PASSWORD = "relay-user", "relay-secret-1"
ENV = {"GMSENSE_SMTP_USER": SMTP_USER, "GMSENSE_SMTP_PASSWORD": SMTP_PASSWORD, "GMSENSE_WEBHOOK_SECRET": "hook-key"}
NO_LOGIN = {"GMSENSE_WEBHOOK_SECRET": "hook-key"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServerCert]:
    """The bureau's private CA and the relay's certificate; a stranger's; one for another host name."""
    folder = tmp_path_factory.mktemp("tls")
    return {"relay": make_server_cert(folder, "bureau"), "stranger": make_server_cert(folder, "stranger"),
            "other_host": make_server_cert(folder, "misnamed", hosts=("mail.elsewhere.example",), ips=())}


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
    """The aiosmtpd handler: keeps every message it is given, whether the session was encrypted and
    logged in; ``refuse`` addresses get 550 at RCPT, ``hang_up_at`` a dropped connection at DATA."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.sessions: list[tuple[bool, bool]] = []  # (encrypted, logged in) per message
        self.connections = 0
        self.refuse: set[str] = set()
        self.hang_up_at: str | None = None

    async def handle_EHLO(self, server: object, session: object, envelope: object, hostname: str,
                          responses: list[str]) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: object, session: object, envelope: object, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        if self.hang_up_at in envelope.rcpt_tos:
            server.transport.close()  # the relay goes away before it answers
            return "250 OK"
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.content, policy=default_policy))
        self.sessions.append((session.ssl is not None, bool(session.authenticated)))
        return "250 OK"


def _authenticator(server: object, session: object, envelope: object, mechanism: str, data: object) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (SMTP_USER,
                                                                                                SMTP_PASSWORD)
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers a failure with 535


def _free_port() -> int:
    with socket.socket() as probe:  # the controller's start-up check cannot use port 0
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def smtp_relay(mode: str, cert: ServerCert | None = None) -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1: ``starttls`` (STARTTLS required before anything, then a
    login), ``tls`` (TLS from the first byte, then a login) or ``plain`` (no TLS, no login)."""
    inbox, port = Inbox(), _free_port()
    kwargs: dict = {}
    if mode == "starttls":
        kwargs = {"tls_context": cert.server_context(), "require_starttls": True, "authenticator": _authenticator,
                  "auth_required": True}
    elif mode == "tls":
        # aiosmtpd cannot tell that a connection it wrapped itself is encrypted: it must be told not
        # to insist on STARTTLS before AUTH (the whole session is TLS).
        kwargs = {"ssl_context": cert.server_context(), "authenticator": _authenticator, "auth_required": True,
                  "auth_require_tls": False}
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def relay(certs: dict[str, ServerCert]) -> Iterator[tuple[Inbox, int]]:
    """The bureau's relay: STARTTLS with a certificate of its private CA, and a login."""
    with smtp_relay("starttls", certs["relay"]) as server:
        yield server


@pytest.fixture
def webhook_server() -> Iterator[tuple[list[tuple[dict, bytes]], str, list[int]]]:
    """A local HTTP receiver: keeps every request; answers the statuses queued in its third item
    first (then 204)."""
    received: list[tuple[dict, bytes]] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(statuses.pop(0) if statuses else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}/hooks/gmsense", statuses
    server.shutdown()
    server.server_close()


def settings_for(port: int, webhook_url: str | None = None, *, security: str = "starttls",
                 ca_file: Path | None = None, **more: object) -> Settings:
    base = load_settings()
    notify_settings = base.notify.model_copy(update={
        "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": security, "smtp_timeout_s": 10.0,
        "smtp_ca_file": str(ca_file) if ca_file else None, "from_address": "gmsense@bureau.example",
        "app_url": "https://review.bureau.example", "webhook_url": webhook_url,
        "webhook_retry_base_delay_s": 0.01, **more})
    return base.model_copy(update={"notify": notify_settings})


def digest_rows(store: Store) -> list[tuple[str, str, int]]:
    """(user, channel, new flags) of every recorded digest."""
    from gmsense.store import UserRow

    with store.session() as s:
        return sorted(s.execute(select(UserRow.username, DigestRow.channels, DigestRow.new_flags)
                                .join(UserRow, UserRow.id == DigestRow.user_id)).all())


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


def test_digests_go_over_starttls_with_a_login_and_are_recorded(store: Store, flags: dict, certs: dict,
                                                                relay: tuple[Inbox, int]) -> None:
    inbox, port = relay
    settings = settings_for(port, ca_file=certs["relay"].ca_file)
    outcome = notify.send(store, settings, now=NOW, env=ENV)
    assert sorted(outcome.emailed) == sorted(set(USERS)), "every user with an address and a digest role"
    assert "noaddress" in outcome.skipped
    assert len(inbox.messages) == len(USERS)
    assert set(inbox.sessions) == {(True, True)}, "every message went over TLS, after the login"
    by_to = {m["To"]: m for m in inbox.messages}
    mail = by_to["sz_county@bureau.example"]
    assert mail["From"] == "gmsense@bureau.example"
    assert mail["Subject"].strip() == "gmsense: 3 new flags, 3 stages awaiting you, 2 overdue (county:230183)"
    body = mail.get_content()
    assert f"/flags/{flags[('SZ', 'critical')]}" in body
    assert f"/flags/{flags[('WC', 'critical')]}" not in body, "another county's flag"
    assert ("gmsense@bureau.example", ["sz_county@bureau.example"]) in inbox.envelopes
    assert {channel for _user, channel, _n in digest_rows(store)} == {"email"}
    assert len(digest_rows(store)) == len(USERS)
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


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")  # aiosmtpd, see smtp_relay
def test_implicit_tls_with_a_login(store: Store, flags: dict, certs: dict) -> None:
    with smtp_relay("tls", certs["relay"]) as (inbox, port):
        outcome = notify.send(store, settings_for(port, security="tls", ca_file=certs["relay"].ca_file), now=NOW,
                              env=ENV, usernames=["sz_county"])
    assert outcome.emailed == ["sz_county"]
    assert [m["To"] for m in inbox.messages] == ["sz_county@bureau.example"]
    assert [auth for _tls, auth in inbox.sessions] == [True]
    with pytest.raises(notify.NotifyError, match="SMTP server"), smtp_relay("plain") as (plain_inbox, port):
        # a relay that answers in plain text where TLS is expected: an error, nothing sent
        notify.send(store, settings_for(port, security="tls", ca_file=certs["relay"].ca_file), now=NOW, env=ENV,
                    usernames=["sz_county"])
    assert plain_inbox.messages == []


@pytest.mark.parametrize(("server_cert", "trusted", "message"), [
    ("stranger", "relay", r"failed verification \(unable to get local issuer certificate\)"),
    ("relay", None, r"failed verification \(unable to get local issuer"),  # the system's store lacks the bureau's CA
    ("other_host", "other_host", r"failed verification \((Hostname|IP address) mismatch"),
])
@pytest.mark.parametrize("mode", ["starttls", "tls"])
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_a_certificate_that_fails_verification_is_an_error_and_nothing_is_sent(
        store: Store, flags: dict, certs: dict, mode: str, server_cert: str, trusted: str | None,
        message: str) -> None:
    ca_file = certs[trusted].ca_file if trusted else None
    with smtp_relay(mode, certs[server_cert]) as (inbox, port):
        with pytest.raises(notify.NotifyError, match=message) as caught:
            notify.send(store, settings_for(port, security=mode, ca_file=ca_file), now=NOW, env=ENV)
        assert inbox.messages == []
    assert "failed verification" in str(caught.value)
    assert "smtp_ca_file" in str(caught.value), "the message says how to trust a private CA"
    assert digest_rows(store) == []


def test_a_server_without_starttls_is_never_used_in_plain_text(store: Store, flags: dict, certs: dict) -> None:
    with smtp_relay("plain") as (inbox, port):
        with pytest.raises(notify.NotifyError, match="does not offer STARTTLS: refusing to go on unencrypted"):
            notify.send(store, settings_for(port, ca_file=certs["relay"].ca_file), now=NOW, env=NO_LOGIN)
        assert inbox.messages == []
    assert digest_rows(store) == []


def test_the_login_never_goes_unencrypted(store: Store, flags: dict) -> None:
    with smtp_relay("plain") as (inbox, port):
        with pytest.raises(InputError, match=r"refusing to send the SMTP login unencrypted to 127\.0\.0\.1"):
            notify.send(store, settings_for(port, security="none"), now=NOW, env=ENV)
        assert inbox.connections == 0, "refused before connecting"
        with pytest.raises(InputError, match="GMSENSE_SMTP_USER is set but GMSENSE_SMTP_PASSWORD is not"):
            notify.send(store, settings_for(port, security="none"), now=NOW,
                        env={"GMSENSE_SMTP_USER": SMTP_USER})
        # A local relay without a login, in plain text: allowed (no secret travels).
        outcome = notify.send(store, settings_for(port, security="none"), now=NOW, env=NO_LOGIN,
                              usernames=["sz_county"])
        assert outcome.emailed == ["sz_county"]
        assert inbox.sessions == [(False, False)]


def test_a_missing_ca_file_is_an_input_error(store: Store, flags: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"notify\.smtp_ca_file .*nope\.pem does not exist"):
        notify.send(store, settings_for(1, ca_file=tmp_path / "nope.pem"), now=NOW, env=ENV)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(InputError, match="is not a PEM CA certificate"):
        notify.send(store, settings_for(1, ca_file=tmp_path / "junk.pem"), now=NOW, env=ENV)


def test_a_wrong_smtp_login_is_an_error_and_nothing_is_recorded(store: Store, flags: dict, certs: dict,
                                                                relay: tuple[Inbox, int]) -> None:
    inbox, port = relay
    with pytest.raises(notify.NotifyError, match=r"SMTP server 127\.0\.0\.1:\d+ \(starttls\) refused the login"):
        notify.send(store, settings_for(port, ca_file=certs["relay"].ca_file), now=NOW,
                    env={**ENV, "GMSENSE_SMTP_PASSWORD": "wrong"})
    assert inbox.messages == []
    assert digest_rows(store) == []


def test_a_dry_run_sends_and_records_nothing(store: Store, flags: dict, certs: dict,
                                             relay: tuple[Inbox, int]) -> None:
    inbox, port = relay
    outcome = notify.send(store, settings_for(port, ca_file=certs["relay"].ca_file), now=NOW, env=ENV, dry_run=True)
    assert outcome.emailed == []
    assert sum(not d.empty for d in outcome.digests) == len(USERS) + 1
    assert inbox.messages == []
    assert inbox.connections == 0
    assert digest_rows(store) == []


def test_the_webhook_is_signed_with_a_timestamp_and_a_delivery_id(
        store: Store, flags: dict, certs: dict, relay: tuple[Inbox, int], webhook_server: tuple) -> None:
    received, url, _statuses = webhook_server
    _inbox, port = relay
    settings = settings_for(port, webhook_url=url, ca_file=certs["relay"].ca_file)
    with pytest.raises(notify.NotifyError, match="GMSENSE_WEBHOOK_SECRET"):
        notify.send(store, settings, now=NOW, env={k: v for k, v in ENV.items() if "WEBHOOK" not in k})
    assert received == []
    outcome = notify.send(store, settings, now=NOW, env=ENV)
    assert outcome.webhook
    [(headers, body)] = received
    assert headers["X-Gmsense-Event"] == "digest"
    assert headers["X-Gmsense-Delivery"] == outcome.delivery_id
    assert webhook.verify_webhook("hook-key", headers, body, webhook.DeliveryLog()) == outcome.delivery_id
    with pytest.raises(webhook.DeliveryRejectedError, match="signature does not match"):
        webhook.verify_webhook("another-key", headers, body, webhook.DeliveryLog())
    payload = json.loads(body)
    users = {d["username"]: d for d in payload["digests"]}
    assert "noaddress" in users, "the webhook carries digests of users without an address too"
    assert users["sz_county"]["overdue"]["total"] == 2
    assert users["sz_county"]["scope"] == {"kind": "county", "codes": ["230183"]}
    rows = digest_rows(store)
    assert sum(channel == "webhook" for _u, channel, _n in rows) == len(USERS) + 1
    assert sum(channel == "email" for _u, channel, _n in rows) == len(USERS)
    assert outcome.channels["sz_county"] == ["webhook", "email"]
    assert outcome.channels["noaddress"] == ["webhook"]


def _later_flag(store: Store, flags: dict, key: str, at: object) -> None:
    with store.session() as s, s.begin():
        first = s.get(FlagRow, flags[("SZ", "critical")])
        s.add(FlagRow(site_id="SZ", rule="new_disturbance", flag_key=key, severity="info", message="m",
                      evidence={}, created_scan_id=1, updated_scan_id=1, created_at=at,
                      province_code=first.province_code, city_code=first.city_code, county_code=first.county_code))


def test_a_failed_webhook_loses_nothing_and_sends_nothing_twice(
        store: Store, flags: dict, certs: dict, relay: tuple[Inbox, int], webhook_server: tuple) -> None:
    received, url, statuses = webhook_server
    inbox, port = relay
    settings = settings_for(port, webhook_url=url, ca_file=certs["relay"].ca_file, webhook_retries=2)
    statuses.extend([503, 503, 503])  # down for the whole first run
    with pytest.raises(notify.NotifyError, match=r"did not take delivery .* in 3 attempts; the last: HTTP 503") as c:
        notify.send(store, settings, now=NOW, env=ENV, usernames=["sz_county", "noaddress"])
    assert len(received) == 3, "the first attempt and two retries"
    assert len({h["X-Gmsense-Delivery"] for h, _ in received}) == 1, "every retry is the same delivery"
    assert c.value.outcome.emailed == ["sz_county"], "the e-mail went all the same"
    assert digest_rows(store) == [("sz_county", "email", 3)], "the webhook's digests are not recorded"
    # The receiver is back: the webhook gets what it missed, e-mail does not repeat its new flags.
    received.clear()
    inbox.messages.clear()
    later = NOW + timedelta(hours=3)
    _later_flag(store, flags, "between", NOW + timedelta(hours=1))
    outcome = notify.send(store, settings, now=later, env=ENV, usernames=["sz_county", "noaddress"])
    [(_headers, body)] = received
    digests = {d["username"]: d for d in json.loads(body)["digests"]}
    assert digests["sz_county"]["new_flags"]["total"] == 4, "the 3 it missed and the one since"
    assert digests["sz_county"]["since"] == (later - timedelta(days=7)).isoformat(timespec="seconds"), \
        "the webhook's first digest"
    [mail] = inbox.messages
    assert mail["Subject"].strip().startswith("gmsense: 1 new flags"), "only the flag since the last e-mail"
    assert outcome.channels["sz_county"] == ["webhook", "email"]
    assert digest_rows(store) == [("noaddress", "webhook", 3), ("sz_county", "email", 1), ("sz_county", "email", 3),
                                  ("sz_county", "webhook", 4)]


def test_a_webhook_that_recovers_within_its_retries_takes_the_delivery_once(
        store: Store, flags: dict, certs: dict, relay: tuple[Inbox, int], webhook_server: tuple) -> None:
    received, url, statuses = webhook_server
    _inbox, port = relay
    statuses.extend([502, 500])
    outcome = notify.send(store, settings_for(port, webhook_url=url, ca_file=certs["relay"].ca_file), now=NOW,
                          env=ENV, usernames=["noaddress"])
    assert outcome.webhook
    assert len(received) == 3
    assert {h["X-Gmsense-Delivery"] for h, _ in received} == {outcome.delivery_id}
    log = webhook.DeliveryLog()
    assert webhook.verify_webhook("hook-key", received[-1][0], received[-1][1], log) == outcome.delivery_id
    with pytest.raises(webhook.DeliveryRejectedError, match="accepted before"):
        webhook.verify_webhook("hook-key", received[0][0], received[0][1], log)
    assert digest_rows(store) == [("noaddress", "webhook", 3)]


def test_a_refused_recipient_is_not_recorded_and_gets_the_same_flags_next_time(
        store: Store, flags: dict, certs: dict, relay: tuple[Inbox, int]) -> None:
    inbox, port = relay
    settings = settings_for(port, ca_file=certs["relay"].ca_file)
    inbox.refuse = {"harbin@bureau.example"}
    outcome = notify.send(store, settings, now=NOW, env=ENV, usernames=["sz_county", "harbin", "wc_county"])
    assert sorted(outcome.emailed) == ["sz_county", "wc_county"]
    assert "no such mailbox" in outcome.failed["harbin"]
    assert [u for u, _c, _n in digest_rows(store)] == ["sz_county", "wc_county"]
    inbox.refuse, inbox.messages = set(), []
    notify.send(store, settings, now=NOW + timedelta(hours=1), env=ENV, usernames=["sz_county", "harbin", "wc_county"])
    subjects = {m["To"]: m["Subject"].strip() for m in inbox.messages}
    assert subjects["harbin@bureau.example"].startswith("gmsense: 9 new flags"), "what it missed, whole"
    assert subjects["sz_county@bureau.example"].startswith("gmsense: 0 new flags"), "nothing twice"


def test_a_connection_that_breaks_off_records_only_what_the_server_took(
        store: Store, flags: dict, certs: dict, relay: tuple[Inbox, int]) -> None:
    inbox, port = relay
    settings = settings_for(port, ca_file=certs["relay"].ca_file)
    inbox.hang_up_at = "prov@bureau.example"  # the users go in name order: boss, harbin, ..., prov, ...
    outcome = notify.send(store, settings, now=NOW, env=ENV)
    taken = sorted(m["To"].split("@")[0] for m in inbox.messages)
    assert taken == sorted(outcome.emailed)
    assert "prov" not in outcome.emailed
    assert "broke off" in outcome.failed["prov"]
    assert set(outcome.failed) == set(USERS) - set(taken), "the one it hung up on and everyone after"
    assert sorted(u for u, _c, _n in digest_rows(store)) == taken
    inbox.hang_up_at, inbox.messages = None, []
    notify.send(store, settings, now=NOW + timedelta(hours=1), env=ENV)
    again = {m["To"].split("@")[0]: m["Subject"].strip() for m in inbox.messages}
    for name in outcome.failed:
        assert not again[name].startswith("gmsense: 0 new flags"), f"{name} gets the flags it missed"
    for name in taken:
        assert again[name].startswith("gmsense: 0 new flags"), f"{name} is not sent its flags twice"


def test_the_cli_digest(tmp_path: Path, store: Store, flags: dict, certs: dict, relay: tuple[Inbox, int],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gmsense.cli import app

    inbox, port = relay
    config = tmp_path / "settings.yaml"
    config.write_text(f"notify:\n  smtp_host: 127.0.0.1\n  smtp_port: {port}\n  smtp_security: starttls\n"
                      f"  smtp_ca_file: {certs['relay'].ca_file}\n")
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
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"notify:\n  smtp_host: 127.0.0.1\n  smtp_port: {port}\n  smtp_security: none\n")
    refused = runner.invoke(app, ["notify", "digest", "--user", "wc_county", "--db", db, "--config", str(plain)])
    assert refused.exit_code == 2
    assert "refusing to send the SMTP login unencrypted" in refused.output
    assert "Traceback" not in refused.output
    untrusted = tmp_path / "untrusted.yaml"
    untrusted.write_text(f"notify:\n  smtp_host: 127.0.0.1\n  smtp_port: {port}\n  smtp_security: starttls\n")
    failed = runner.invoke(app, ["notify", "digest", "--user", "wc_county", "--db", db, "--config", str(untrusted)])
    assert failed.exit_code == 1
    assert "failed verification" in failed.output
    set_email = runner.invoke(app, ["users", "email", "noaddress", "na@bureau.example", "--db", db])
    assert set_email.exit_code == 0, set_email.output
    bad = runner.invoke(app, ["users", "email", "noaddress", "a@b\nBcc: x@evil.example", "--db", db])
    assert bad.exit_code == 2, "one address, no header injection"
