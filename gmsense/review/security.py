"""HTTP hardening of the review app: security headers on every response, a request-body size
limit enforced before anything parses the body, and the Content-Security-Policy of the pages.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware) so that it sees every response the
app sends, including those of exception handlers, and can refuse an oversized body while it is
still arriving: from its Content-Length, or by counting the bytes of a body sent without one
(chunked). POSTs to the upload routes (assessments' attachments) have a limit of their own.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

#: The largest request body the app reads (forms and JSON are far smaller); larger ones get 413.
MAX_BODY_BYTES = 1_000_000

_CSP_COMMON = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
#: The pages' policy: no inline script or style at all (the templates have none).
PAGE_CSP = f"{_CSP_COMMON}; style-src 'self'; script-src 'self'"

SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def docs_csp(nonce: str) -> str:
    """The API docs page's policy: its one inline script runs by ``nonce`` (Swagger UI also sets
    inline styles)."""
    return f"{_CSP_COMMON}; style-src 'self' 'unsafe-inline'; script-src 'self' 'nonce-{nonce}'"


def new_nonce() -> str:
    """A fresh CSP nonce (128 random bits) for one response."""
    return secrets.token_urlsafe(16)


def add_nonce(html: str, nonce: str) -> str:
    """``html`` with ``nonce`` on every ``<script>`` tag."""
    return re.sub(r"<script\b", f'<script nonce="{nonce}"', html)


class SecurityMiddleware:
    """Adds SECURITY_HEADERS (and ``Cache-Control: no-store`` outside /static) to every response
    that does not set them itself, and answers 413 to a request body over ``max_body_bytes`` (a
    POST to a path ``upload_paths`` matches: over ``upload_body_bytes``) before the app sees it."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES, upload_body_bytes: int = 0,
                 upload_paths: re.Pattern[str] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.upload_body_bytes = upload_body_bytes
        self.upload_paths = upload_paths

    def limit(self, scope: MutableMapping[str, Any]) -> int:
        """The largest body this request may send."""
        if (self.upload_paths is not None and scope.get("method") == "POST"
                and self.upload_paths.fullmatch(scope.get("path", ""))):
            return max(self.max_body_bytes, self.upload_body_bytes)
        return self.max_body_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(scope, send)
        limit = self.limit(scope)
        if self._declared_too_large(scope, limit):
            await self._too_large(scope, send, limit)
            return
        body = await self._read_body(receive, limit)
        if body is None:
            await self._too_large(scope, send, limit)
            return
        await self.app(scope, _replay(body, receive), send)

    @staticmethod
    def _declared_too_large(scope: MutableMapping[str, Any], limit: int) -> bool:
        """Whether the Content-Length header says (or, unreadable, may hide) too large a body."""
        for key, value in scope.get("headers", []):
            if key.lower() == b"content-length":
                return not value.strip().isdigit() or int(value) > limit
        return False

    @staticmethod
    async def _read_body(receive: Receive, limit: int) -> list[Message] | None:
        """The request's body messages, read up to the limit; None as soon as it is exceeded."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages  # the client went away; the app sees that too
            size += len(message.get("body", b""))
            if size > limit:
                return None
            if not message.get("more_body", False):
                return messages

    @staticmethod
    async def _too_large(scope: MutableMapping[str, Any], send: Send, limit: int) -> None:
        detail = f"the request body is larger than the limit of {limit} bytes"
        if scope.get("path", "").startswith("/api/"):
            body, media_type = json.dumps({"detail": detail}).encode(), b"application/json"
        else:
            body, media_type = (
                f"413 request too large: {detail}".encode(),
                b"text/plain; charset=utf-8",
            )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", media_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _with_headers(scope: MutableMapping[str, Any], send: Send) -> Send:
        extra = dict(SECURITY_HEADERS)
        if not scope.get("path", "").startswith("/static"):
            extra["Cache-Control"] = "no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                headers += [
                    (key.lower().encode(), value.encode())
                    for key, value in extra.items()
                    if key.lower().encode() not in present
                ]
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives ``messages`` first, then whatever the client sends next."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
