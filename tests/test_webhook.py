"""The signed webhook's replay protection and retries (issue 20): a real local HTTP receiver that
verifies every delivery with gmsense.review.webhook.verify_webhook, as a receiving system would,
and gmsense's sender posting to it."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gmsense.review import webhook

SECRET = "shared-hook-secret"
BODY = json.dumps({"event": "digest", "digests": [{"username": "zhao", "new_flags": {"total": 3}}]}).encode()


class Receiver:
    """What the receiver saw: (status it answered, reason, headers, body) per request."""

    def __init__(self) -> None:
        self.log = webhook.DeliveryLog()
        self.requests: list[tuple[int, str, dict[str, str], bytes]] = []
        self.accepted: list[dict] = []
        self.fail_first: list[int] = []  # statuses to answer before verifying (a receiver in trouble)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = dict(self.headers)
            if state.fail_first:
                status, reason = state.fail_first.pop(0), "busy"
            else:
                try:
                    webhook.verify_webhook(SECRET, headers, body, state.log)
                except webhook.DeliveryRejectedError as exc:
                    # a repeated id: taken already (say a retry whose answer was lost), not acted on again
                    status, reason = (200 if exc.reason == "replayed" else 401), exc.reason
                else:
                    status, reason = 204, "accepted"
                    state.accepted.append(json.loads(body))
            state.requests.append((status, reason, headers, body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks/gmsense"
    server.shutdown()
    server.server_close()


def _post(url: str, headers: dict[str, str], body: bytes) -> int:
    """Send a request as an attacker would: any headers and body."""
    wanted = {k: v for k, v in headers.items() if k.lower().startswith(("x-gmsense", "content-type"))}
    request = urllib.request.Request(url, data=body, method="POST", headers=wanted)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_valid_delivery_passes_and_its_replay_is_rejected(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    delivery = webhook.deliver(url, BODY, SECRET, retries=0)
    assert (delivery.attempts, delivery.status) == (1, 204)
    [(status, reason, headers, body)] = state.requests
    assert (status, reason) == (204, "accepted")
    assert headers["X-Gmsense-Delivery"] == delivery.delivery_id
    assert state.accepted == [json.loads(BODY)]
    assert _post(url, headers, body) == 200, "the same delivery sent again: answered, not acted on"
    assert state.requests[-1][1] == "replayed"
    assert len(state.accepted) == 1


def test_a_tampered_body_or_header_is_rejected(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    webhook.deliver(url, BODY, SECRET, retries=0)
    _status, _reason, headers, body = state.requests[0]
    forged = body.replace(b'"total": 3', b'"total": 0')
    assert forged != body
    fresh = {**headers, "X-Gmsense-Delivery": "00000000-0000-4000-8000-000000000001"}
    assert _post(url, fresh, forged) == 401
    assert state.requests[-1][1] == "signature"
    assert _post(url, fresh, body) == 401, "a new delivery id under the old signature"
    later = {**headers, "X-Gmsense-Timestamp": str(int(headers["X-Gmsense-Timestamp"]) + 1)}
    assert _post(url, later, body) == 401, "a moved timestamp under the old signature"
    no_signature = {k: v for k, v in headers.items() if k != "X-Gmsense-Signature"}
    assert _post(url, no_signature, body) == 401
    assert state.requests[-1][1] == "missing"
    assert len(state.accepted) == 1, "only the genuine delivery"


def test_a_stale_delivery_is_rejected_even_when_signed(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    delivery_id = "6f1c2c55-6a5e-4c3e-9d0e-3b1f7f0b2a10"
    for offset in (-(webhook.TOLERANCE_S + 5), webhook.TOLERANCE_S + 5):
        stamp = str(int(time.time()) + offset)
        headers = {"X-Gmsense-Timestamp": stamp, "X-Gmsense-Delivery": delivery_id,
                   "X-Gmsense-Signature": webhook.signature(SECRET, stamp, delivery_id, BODY)}
        assert _post(url, headers, BODY) == 401
        assert state.requests[-1][1] == "stale"
    stamp = str(int(time.time()) - webhook.TOLERANCE_S + 30)  # old, but inside the window
    headers = {"X-Gmsense-Timestamp": stamp, "X-Gmsense-Delivery": delivery_id,
               "X-Gmsense-Signature": webhook.signature(SECRET, stamp, delivery_id, BODY)}
    assert _post(url, headers, BODY) == 204, "the rejected attempts did not use up the id"


def test_the_log_forgets_ids_only_after_they_are_stale() -> None:
    log = webhook.DeliveryLog()
    assert log.first_time("a" * 10, now=1000.0)
    assert not log.first_time("a" * 10, now=1000.0 + webhook.TOLERANCE_S)
    assert log.first_time("b" * 10, now=1000.0 + 3 * webhook.TOLERANCE_S)
    assert log.first_time("a" * 10, now=1000.0 + 3 * webhook.TOLERANCE_S), "pruned: a replay is stale by then"


def test_retries_on_5xx_keep_the_delivery_id_and_back_off(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.fail_first = [503, 500, 429]
    slept: list[float] = []
    delivery = webhook.deliver(url, BODY, SECRET, retries=3, base_delay_s=0.5, max_delay_s=1.5, sleep=slept.append)
    assert delivery.attempts == 4
    assert slept == [0.5, 1.0, 1.5], "doubling, capped"
    assert {r[2]["X-Gmsense-Delivery"] for r in state.requests} == {delivery.delivery_id}
    assert [r[0] for r in state.requests] == [503, 500, 429, 204]
    assert len(state.accepted) == 1


def test_retries_are_bounded_and_a_4xx_is_not_retried(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.fail_first = [502] * 5
    with pytest.raises(webhook.WebhookError, match=r"in 3 attempts; the last: HTTP 502"):
        webhook.deliver(url, BODY, SECRET, retries=2, base_delay_s=0, sleep=lambda _s: None)
    assert len(state.requests) == 3
    state.requests.clear()
    state.fail_first = [400]
    with pytest.raises(webhook.WebhookError, match=r"refused delivery .*HTTP 400.*not retried"):
        webhook.deliver(url, BODY, SECRET, retries=5, sleep=lambda _s: None)
    assert len(state.requests) == 1
    state.requests.clear()
    with pytest.raises(webhook.WebhookError, match="not retried"):
        webhook.deliver(url, BODY, "the-wrong-secret", retries=5, sleep=lambda _s: None)
    assert [r[1] for r in state.requests] == ["signature"]


def test_connection_errors_are_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once it is closed
    slept: list[float] = []
    with pytest.raises(webhook.WebhookError, match=r"in 3 attempts; the last: .*(refused|Connection)"):
        webhook.deliver(f"http://127.0.0.1:{port}/hook", BODY, SECRET, retries=2, base_delay_s=0.01,
                        sleep=slept.append)
    assert slept == [0.01, 0.02]
