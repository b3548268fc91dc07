"""The signed webhook: how gmsense sends a delivery, and how a receiver verifies one.

Every delivery is one ``POST`` of a JSON body with these headers:

- ``X-Gmsense-Event``: what the body is (``digest``);
- ``X-Gmsense-Delivery``: a unique id of the delivery (a UUID); a retry of the same delivery
  carries the same id;
- ``X-Gmsense-Timestamp``: when this attempt was signed, whole seconds since 1970-01-01 UTC;
- ``X-Gmsense-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the shared secret, of
  ``TIMESTAMP + "." + DELIVERY_ID + "." + BODY`` (the raw body bytes).

A receiver (:func:`verify_webhook`) recomputes the HMAC over the bytes it received and compares it
in constant time, rejects a timestamp further than :data:`TOLERANCE_S` from its clock (a captured
delivery cannot be replayed later) and a delivery id it has accepted before, and only then acts on
the body. Because the timestamp and the id are inside the signed content, neither can be changed
without breaking the signature. A receiver should answer a repeated id with 2xx without acting on
it again (it is most likely a retry whose answer was lost), and the other rejections with 401.
docs/webhooks.md describes the scheme for receiving systems.

Sending (:func:`deliver`): an attempt that fails with a connection error, a timeout, HTTP 408,
425, 429 or 5xx is tried again after a back-off (doubling from the base delay, at most the longest
delay), up to the configured number of retries, with the same delivery id and a fresh timestamp
and signature; any other HTTP error (a 4xx: the receiver refused the content) is final at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gmsense.errors import GmsenseError

EVENT_HEADER = "X-Gmsense-Event"
DELIVERY_HEADER = "X-Gmsense-Delivery"
TIMESTAMP_HEADER = "X-Gmsense-Timestamp"
SIGNATURE_HEADER = "X-Gmsense-Signature"
#: A receiver rejects a delivery signed further than this from its own clock, in seconds (either way).
TOLERANCE_S = 300
#: HTTP statuses worth another attempt: the receiver was busy or failed, not the content.
RETRY_STATUSES = frozenset({408, 425, 429, *range(500, 600)})
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9-]{8,100}$")


class WebhookError(GmsenseError):
    """The webhook did not take a delivery (after its retries), or refused it."""


class DeliveryRejectedError(Exception):
    """A receiver's verdict on a delivery it must not act on; ``reason`` says why (a short word:
    ``missing``, ``signature``, ``stale``, ``replayed``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def signed_content(timestamp: str, delivery_id: str, body: bytes) -> bytes:
    """What the signature covers: ``TIMESTAMP.DELIVERY_ID.`` and the body."""
    return f"{timestamp}.{delivery_id}.".encode() + body


def signature(secret: str, timestamp: str, delivery_id: str, body: bytes) -> str:
    """The ``X-Gmsense-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of :func:`signed_content`."""
    digest = hmac.new(secret.encode(), signed_content(timestamp, delivery_id, body), hashlib.sha256).hexdigest()
    return "sha256=" + digest


class DeliveryLog:
    """The delivery ids a receiver accepted, for :func:`verify_webhook` (in memory, thread-safe).

    Ids are kept for twice the tolerance window: an older delivery is rejected as stale anyway.
    A receiver running several processes needs one log they share (a database table with the id
    as its primary key, say): any object with this ``first_time`` method will do."""

    def __init__(self, keep_s: float = 2 * TOLERANCE_S) -> None:
        self._keep_s = keep_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float) -> bool:
        """Record ``delivery_id``; False if it was recorded before (a replay)."""
        with self._lock:
            for old in [d for d, at in self._seen.items() if at < now - self._keep_s]:
                del self._seen[old]
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return str(value).strip()
    raise DeliveryRejectedError("missing", f"the delivery has no {name} header")


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, seen: DeliveryLog, *,
                   now: float | None = None, tolerance_s: float = TOLERANCE_S) -> str:
    """Check a received delivery; return its delivery id, or raise :class:`DeliveryRejectedError`.

    ``headers``: the request's headers (any case); ``body``: the raw bytes received (before any
    JSON parsing); ``seen``: the receiver's :class:`DeliveryLog`. Rejected: a missing header, a
    signature that is not the HMAC of the timestamp, id and body with ``secret`` (a tampered body or
    a wrong secret), a timestamp more than ``tolerance_s`` seconds from ``now`` (a stale or replayed
    capture), a delivery id accepted before. The id is recorded only when every check passes.
    """
    if not secret:
        raise ValueError("verify_webhook needs the shared secret")
    now = time.time() if now is None else now
    timestamp = _header(headers, TIMESTAMP_HEADER)
    delivery_id = _header(headers, DELIVERY_HEADER)
    given = _header(headers, SIGNATURE_HEADER)
    if not timestamp.isdigit() or not _DELIVERY_ID.match(delivery_id):
        raise DeliveryRejectedError("missing", "the delivery's timestamp or id is malformed")
    expected = signature(secret, timestamp, delivery_id, body)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise DeliveryRejectedError("signature", "the signature does not match the body (tampered, or another secret)")
    age = now - int(timestamp)
    if abs(age) > tolerance_s:
        raise DeliveryRejectedError("stale", f"the delivery was signed {age:+.0f} s from now, outside the "
                                       f"{tolerance_s:.0f} s window")
    if not seen.first_time(delivery_id, now):
        raise DeliveryRejectedError("replayed", f"delivery {delivery_id} was accepted before")
    return delivery_id


@dataclass(frozen=True)
class Delivery:
    """A delivery the receiver took: its id, how many attempts it needed, the final HTTP status."""

    delivery_id: str
    attempts: int
    status: int


def deliver(url: str, body: bytes, secret: str, *, event: str = "digest", timeout_s: float = 30.0,
            retries: int = 3, base_delay_s: float = 2.0, max_delay_s: float = 60.0,
            sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> Delivery:
    """POST ``body`` to ``url``, signed (see the module docstring); retried on connection errors,
    timeouts and HTTP 408/425/429/5xx, up to ``retries`` more times with the same delivery id.
    Raises :class:`WebhookError` when the receiver refuses it (another 4xx) or every attempt failed."""
    if not url.startswith(("https://", "http://")):
        raise WebhookError(f"the webhook URL must be http(s), not {url!r}")
    delivery_id = str(uuid.uuid4())
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            sleep(min(max_delay_s, base_delay_s * 2 ** (attempt - 1)))
        timestamp = str(int(clock()))
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": "gmsense-notify",
            EVENT_HEADER: event, DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(secret, timestamp, delivery_id, body)})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # http(s) only, checked above
                response.read()
                return Delivery(delivery_id, attempt + 1, response.status)
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            if exc.code not in RETRY_STATUSES:
                raise WebhookError(f"the webhook {url} refused delivery {delivery_id}: {last} (not retried)") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out, TLS failed
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise WebhookError(f"the webhook {url}'s certificate failed verification: {reason} "
                                   f"(nothing was sent)") from None
            last = str(reason)
    raise WebhookError(f"the webhook {url} did not take delivery {delivery_id} in {retries + 1} attempts; "
                       f"the last: {last}")
