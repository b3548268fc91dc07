"""Hardening of the review app over a real scanned store (FastAPI's TestClient): the content
security policy, the request-body limit, huge ids, security headers on every error, login for the
API docs, case-insensitive user names and unlocking a locked-out user."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gmsense.review import auth, service
from gmsense.review.app import create_app
from gmsense.review.security import SECURITY_HEADERS
from gmsense.store import Store
from gmsense.testutils import run_cli
from tests import test_review_app as review_app_tests
from tests.test_review_app import PASSWORDS, csrf_of, login

# The review app tests' fixtures: the demo's store with one user per role, a private copy per test
# and a TestClient over it.
demo_db = review_app_tests.demo_db
store = review_app_tests.store
client = review_app_tests.client

HUGE_ID = "99999999999999999999"  # beyond 64 bits
TEMPLATES = Path(auth.__file__).parent / "templates"


def _directives(response: Any) -> dict[str, str]:
    """The response's Content-Security-Policy as {directive: sources}."""
    policy = response.headers["content-security-policy"]
    return {
        part.split()[0]: " ".join(part.split()[1:]) for part in policy.split(";") if part.strip()
    }


def _assert_security_headers(response: Any, where: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        if name != "Content-Security-Policy":
            assert response.headers.get(name) == value, f"{where}: {name}"
    assert "default-src 'self'" in response.headers.get("content-security-policy", ""), where
    assert response.headers.get("cache-control") == "no-store", where


def test_no_page_allows_inline_scripts(client: TestClient) -> None:
    anonymous = client.get("/login")
    login(client, "ada")
    for response in [anonymous] + [
        client.get(path)
        for path in (
            "/flags",
            "/flags/1",
            "/dashboard",
            "/audit",
            "/admin/users",
            "/sites/HLJ-EXP-001",
            "/nowhere",
        )
    ]:
        where = str(response.url)
        policy = _directives(response)
        assert policy["script-src"] == "'self'", where
        assert "unsafe-inline" not in response.headers["content-security-policy"], where
        assert policy["object-src"] == "'none'", where
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), where
        assert not re.search(r"\son[a-z]+\s*=", response.text), where


def test_templates_hold_no_inline_script_handler_or_style() -> None:
    for template in TEMPLATES.glob("*.html"):
        html = template.read_text(encoding="utf-8")
        assert "<script" not in html, template.name
        assert not re.search(r"\son[a-z]+\s*=", html), template.name
        assert "<style" not in html, template.name
        assert "style=" not in html, template.name


def test_the_api_docs_run_their_script_by_a_fresh_nonce(client: TestClient) -> None:
    login(client, "vic")
    nonces = []
    for _ in range(2):
        docs = client.get("/api/docs")
        assert docs.status_code == 200
        script_src = _directives(docs)["script-src"]
        assert "unsafe-inline" not in script_src
        [nonce] = re.findall(r"'nonce-([^']+)'", script_src)
        scripts = re.findall(r"<script[^>]*>", docs.text)
        assert len(scripts) >= 2  # the bundle and the inline start-up script
        assert all(f'nonce="{nonce}"' in tag for tag in scripts)
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    assert len(nonces[0]) >= 16


def test_the_api_docs_and_schema_need_a_login(client: TestClient) -> None:
    docs = client.get("/api/docs", follow_redirects=False)
    assert docs.status_code == 303
    assert docs.headers["location"] == "/login?next=/api/docs"
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 401
    assert "paths" not in schema.text
    login(client, "vic")  # any role
    assert client.get("/api/docs").status_code == 200
    assert "/api/flags/{flag_id}/decision" in client.get("/api/openapi.json").json()["paths"]


def test_an_anonymous_oversized_body_is_refused_before_parsing(client: TestClient) -> None:
    big = b'{"decision": "confirm", "comment": "' + b"x" * 2_000_000 + b'"}'
    response = client.post(
        "/api/flags/1/decision", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413  # not 401 after parsing 2 MB
    assert "larger than the limit" in response.json()["detail"]
    _assert_security_headers(response, "413 api")
    form = client.post(
        "/login", data={"username": "rita", "password": "p" * 1_100_000, "csrf_token": "x"}
    )
    assert form.status_code == 413
    _assert_security_headers(form, "413 form")


def test_a_chunked_body_without_content_length_is_counted(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"y" * 65_536

    response = client.post(
        "/api/flags/1/decision", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413


def test_the_limit_stops_reading_a_streamed_body_early_and_is_configurable(
    store: Store, tmp_path: Path
) -> None:
    """Straight through ASGI: a body sent in 1000 pieces of 4 KiB without Content-Length is
    refused after the few pieces that pass a 10 kB limit; the rest are never read."""
    app = create_app(store, cache_dir=tmp_path / "pictures", max_body_bytes=10_000)
    pulled, sent = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"z" * 4096, "more_body": pulled < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/login",
        "raw_path": b"/login",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"text/plain")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413
    assert pulled == 3  # 12 KiB > 10 kB: no more is read
    with TestClient(app) as small:
        assert small.post("/login", content=b"a" * 10_001).status_code == 413
        assert (
            small.post("/login", content=b"a" * 9_000).status_code == 403
        )  # read, then the CSRF check


def test_ids_beyond_64_bits_are_404_with_security_headers(client: TestClient) -> None:
    login(client, "rita")
    for path in (
        f"/flags/{HUGE_ID}",
        f"/api/flags/{HUGE_ID}",
        f"/flags/{HUGE_ID}/chips.png",
        f"/flags/{HUGE_ID}/trajectory.png",
        "/flags/0",
        "/flags/-1",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        _assert_security_headers(response, path)
    token = csrf_of(client)
    decided = client.post(
        f"/flags/{HUGE_ID}/decision",
        data={"csrf_token": token, "decision": "confirm", "reason": "violation", "comment": "x"},
    )
    assert decided.status_code == 404
    api = client.post(
        f"/api/flags/{HUGE_ID}/decision",
        json={"decision": "confirm", "reason": "violation", "comment": "x"},
        headers={"X-CSRF-Token": token},
    )
    assert api.status_code == 404
    audit = client.get("/api/audit", params={"flag_id": HUGE_ID})
    assert audit.status_code == 422
    _assert_security_headers(audit, "422")


def test_every_error_response_carries_the_security_headers(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the database fell over")

    with TestClient(
        create_app(store, cache_dir=tmp_path / "pictures"), raise_server_exceptions=False
    ) as tolerant:
        login(tolerant, "rita")
        responses = {
            "404": tolerant.get("/nowhere"),
            "405": tolerant.put("/flags"),
            "422": tolerant.get("/api/flags", params={"page": "zero"}),
            "403": tolerant.post("/admin/users", data={"csrf_token": "forged"}),
        }
        monkeypatch.setattr(service, "get_flag", broken)
        responses["500 page"] = tolerant.get("/flags/1")
        responses["500 api"] = tolerant.get("/api/flags/1")
    for status, response in responses.items():
        assert response.status_code == int(status[:3]), status
        _assert_security_headers(response, status)
    assert "internal error" in responses["500 page"].text
    assert "fell over" not in responses["500 page"].text  # no internals, no traceback
    assert responses["500 api"].json() == {
        "detail": "internal error: the server log has the details"
    }


def test_user_names_ignore_case_in_the_app(client: TestClient, store: Store) -> None:
    login(client, "ada")
    token = csrf_of(client, "/admin/users")
    added = client.post(
        "/admin/users",
        data={
            "csrf_token": token,
            "username": "RITA",
            "password": "another-password-1",
            "role": "admin",
        },
        follow_redirects=False,
    )
    assert "exists" in added.headers["location"]
    assert [u.username for u in auth.list_users(store)].count("rita") == 1
    assert not any(u.username == "RITA" for u in auth.list_users(store))
    client.post("/admin/users/ADA/active", data={"csrf_token": token, "active": "0"})
    assert auth.get_user(store, "ada").active  # still herself, whatever the case
    other = TestClient(client.app)
    login(other, "Rita", PASSWORDS["rita"])
    assert other.get("/api/me").json()["username"] == "rita"


def test_a_locked_out_user_is_let_in_again_by_users_unlock(
    client: TestClient, store: Store
) -> None:
    for _ in range(auth.MAX_FAILED_LOGINS):
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        client.post(
            "/login", data={"username": "rita", "password": "wrong-wrong", "csrf_token": token}
        )
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    locked = client.post(
        "/login", data={"username": "rita", "password": PASSWORDS["rita"], "csrf_token": token}
    )
    assert locked.status_code == 429
    code, output = run_cli("users", "unlock", "rita", "--address", "testclient", "--db", store.url)
    assert code == 0, output
    login(client, "rita")
    assert client.get("/flags").status_code == 200
