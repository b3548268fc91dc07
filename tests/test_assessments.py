"""Third-party assessments (issue 20, item 5): stored append-only (SQLite and PostgreSQL), signed and
verified (tampering in SQL is found), uploads checked by content, the web app's forms, API, roles and
downloads, and the public disclosure's count of assessments per violation."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pyproj
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import box
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from gmsense.errors import InputError
from gmsense.geo.divisions import divisions_of
from gmsense.geo.sites import Site
from gmsense.review import NotFoundError, assessments, auth, service, signing, uploads
from gmsense.review.app import create_app
from gmsense.store import AssessmentAttachmentRow, AssessmentRow, FlagRow, ScanRow, SiteRow, Store
from gmsense.testutils import run_cli

#: A key for the tests only (the deployment's comes from its environment).
TEST_KEY = "test-only-assessment-key-" + "5f3a9c" * 6
PASSWORD = "assessment-password-1"
SITES = {"SZ-1": {"name": "Shangzhi quarry", "county": "尚志市"}, "WC-1": {"name": "Wuchang pit", "county": "Wuchang"}}
USERS = {"sun_assessor": ("assessor", "licence:SZ-1"), "qian_assessor": ("assessor", "licence:WC-1"),
         "li": ("reviewer", "province"), "zhao": ("viewer", "county:Shangzhi"), "wang": ("admin", "province")}
APPEND_ONLY = "is an audit log"


def a_pdf() -> bytes:
    """A real one-page PDF."""
    from pypdf import PdfWriter

    writer, buffer = PdfWriter(), io.BytesIO()
    writer.add_blank_page(width=595, height=842)
    writer.write(buffer)
    return buffer.getvalue()


def a_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (30, 120, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def a_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (30, 120, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, TEST_KEY)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'assess.db'}"
    return request.getfixturevalue("postgres_url")


def plant(url: str, users: dict[str, tuple[str, str]] | None = None) -> Store:
    """Two licences (Shangzhi, Wuchang), two open flags each, and the users."""
    store = Store(url)
    with store.session() as s, s.begin():
        s.add(ScanRow(id=1, source="synthetic", config_hash="x", gmsense_version="t"))
        for site_id, attrs in SITES.items():
            codes = divisions_of(attrs)
            s.add(SiteRow(site_id=site_id, geometry_wkt="POLYGON((0 0,1 0,1 1,0 1,0 0))", attrs=attrs, **codes))
            s.flush()
            for k in range(2):
                s.add(FlagRow(site_id=site_id, rule="outside_licence", flag_key=str(k), severity="warning",
                              message="m", evidence={}, created_scan_id=1, updated_scan_id=1, **codes))
    for name, (role, scope) in (USERS if users is None else users).items():
        auth.add_user(store, name, PASSWORD, role, scope=scope)
    return store


def flags_of(store: Store, site_id: str) -> list[int]:
    with store.session() as s:
        return list(s.scalars(select(FlagRow.id).where(FlagRow.site_id == site_id).order_by(FlagRow.id)))


def files(*items: tuple[str, bytes]) -> list[uploads.Attachment]:
    return [uploads.check_file(name, content) for name, content in items]


# --- the store ---------------------------------------------------------------------------------------

def test_an_assessment_is_stored_signed_and_read_within_scope(url: str) -> None:
    store = plant(url, {k: USERS[k] for k in ("sun_assessor", "qian_assessor")})
    sun, qian = auth.get_user(store, "sun_assessor"), auth.get_user(store, "qian_assessor")
    flag = flags_of(store, "SZ-1")[0]
    pdf, png = a_pdf(), a_png()
    made = assessments.add(store, sun, "flag", flag, "non_compliant", "Spoil heap 40 m beyond the boundary.\r\n"
                           "Seen on site 2026-06-02.", files(("site visit.pdf", pdf), ("photo.png", png)))
    licence = assessments.add(store, sun, "licence", "SZ-1", "needs_follow_up", "Reclamation plan not found.")
    assert (made.row.seq, licence.row.seq) == (1, 2)
    assert made.row.key_id == signing.signing_key().key_id
    assert len(made.row.digest) == len(made.row.signature) == 64
    assert (made.row.county_code, licence.row.county_code) == ("230183", "230183")
    assert [(a.position, a.filename, a.media_type, a.size_bytes, a.sha256) for a in made.attachments] == [
        (1, "site visit.pdf", "application/pdf", len(pdf), hashlib.sha256(pdf).hexdigest()),
        (2, "photo.png", "image/png", len(png), hashlib.sha256(png).hexdigest())]
    stored, content = assessments.attachment(store, made.row.id, 1)
    assert content == pdf
    assert stored.filename == "site visit.pdf"
    sun_scope, qian_scope = auth.user_scope(store, sun), auth.user_scope(store, qian)
    assert [a.row.id for a in assessments.assessments(store, sun_scope, site_id="SZ-1")] == [made.row.id,
                                                                                             licence.row.id]
    assert [a.row.id for a in assessments.assessments(store, sun_scope, flag_id=flag)] == [made.row.id]
    assert assessments.assessments(store, qian_scope) == []
    with pytest.raises(NotFoundError):
        assessments.get(store, made.row.id, qian_scope)
    with pytest.raises(NotFoundError):
        assessments.attachment(store, made.row.id, 1, qian_scope)
    with pytest.raises(NotFoundError):  # another's licence, exactly as a missing one
        assessments.add(store, sun, "flag", flags_of(store, "WC-1")[0], "compliant", "x")
    with pytest.raises(NotFoundError):
        assessments.add(store, sun, "licence", "WC-1", "compliant", "x")
    result = assessments.verify(store)
    assert (result.ok, result.assessments, result.attachments) == (True, 2, 2)
    code, output = run_cli("assessments", "list", "--licence", "SZ-1", "--db", store.url)
    assert code == 0, output
    assert "2 assessments" in output
    code, output = run_cli("assessments", "list", "--licence", "WC-1", "--db", store.url)
    assert "0 assessments" in output
    code, output = run_cli("assessments", "list", "--licence", "NOPE-1", "--db", store.url)
    assert code == 2
    assert "no licence 'NOPE-1'" in output
    store.engine.dispose()


def test_only_assessors_add_and_bad_input_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = plant(f"sqlite:///{tmp_path / 'a.db'}", {k: USERS[k] for k in ("sun_assessor", "li")})
    sun, li = auth.get_user(store, "sun_assessor"), auth.get_user(store, "li")
    flag = flags_of(store, "SZ-1")[0]
    with pytest.raises(PermissionError, match="assessors may"):
        assessments.add(store, li, "flag", flag, "compliant", "a reviewer's view")
    for verdict, words, match in (("fine", "x", "unknown verdict"), ("compliant", "  ", "needs a text"),
                                  ("compliant", "x" * (assessments.MAX_TEXT + 1), "longer than"),
                                  ("compliant", "bell\x07", "control characters")):
        with pytest.raises(InputError, match=match):
            assessments.add(store, sun, "flag", flag, verdict, words)
    with pytest.raises(uploads.UploadError, match="at most 5 files"):
        assessments.add(store, sun, "flag", flag, "compliant", "x", files(*[(f"{k}.txt", b"t") for k in range(6)]))
    monkeypatch.delenv(signing.SIGNING_KEY_ENV)
    with pytest.raises(signing.SigningKeyError, match="GMSENSE_ASSESSMENT_KEY"):
        assessments.add(store, sun, "flag", flag, "compliant", "x")
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, "too-short")
    with pytest.raises(signing.SigningKeyError, match="at least 32"):
        assessments.add(store, sun, "flag", flag, "compliant", "x")
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(AssessmentRow)) == 0
    store.engine.dispose()


def _refused(store: Store, sql: str) -> None:
    with pytest.raises(DBAPIError, match=APPEND_ONLY), store.engine.begin() as c:
        c.execute(text(sql))


def test_assessments_and_attachments_are_append_only(url: str) -> None:
    store = plant(url, {"sun_assessor": USERS["sun_assessor"]})
    sun = auth.get_user(store, "sun_assessor")
    made = assessments.add(store, sun, "flag", flags_of(store, "SZ-1")[0], "non_compliant", "Spoil outside",
                           files(("notes.txt", "现场记录".encode())))
    for sql in ("UPDATE assessments SET text = 'all fine'", "UPDATE assessments SET verdict = 'compliant'",
                "UPDATE assessments SET username = 'someone'", "DELETE FROM assessments",
                "UPDATE assessment_attachments SET filename = 'other.txt'", "DELETE FROM assessment_attachments"):
        _refused(store, sql)
    with pytest.raises(DBAPIError, match=APPEND_ONLY), store.session() as s, s.begin():
        s.get(AssessmentRow, made.row.id).text = "rewritten through the ORM"
    if store.engine.dialect.name == "sqlite":
        _refused(store, "INSERT OR REPLACE INTO assessments SELECT * FROM assessments")
        _refused(store, "INSERT OR REPLACE INTO assessment_attachments SELECT * FROM assessment_attachments")
    else:
        _refused(store, "TRUNCATE assessments CASCADE")
        _refused(store, "TRUNCATE assessment_attachments")
    # The licence moves to Wuchang: its assessments follow it (division codes only), still intact.
    store.upsert_sites([Site("SZ-1", box(0, 0, 1, 1), pyproj.CRS.from_epsg(4326),
                             {"name": "Shangzhi quarry", "county": "Wuchang"})])
    with store.session() as s:
        row = s.get(AssessmentRow, made.row.id)
    assert (row.county_code, row.text) == ("230184", "Spoil outside")
    assert assessments.verify(store).ok
    store.engine.dispose()


def test_assessments_recorded_at_the_same_moment_are_numbered_without_gaps(url: str) -> None:
    store = plant(url, {"sun_assessor": USERS["sun_assessor"]})
    sun = auth.get_user(store, "sun_assessor")
    flag = flags_of(store, "SZ-1")[0]
    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda k: assessments.add(store, sun, "flag", flag, "compliant", f"visit {k}"),
                             range(18)))
    assert sorted(a.row.seq for a in made) == list(range(1, 19))
    assert assessments.verify(store).ok
    store.engine.dispose()


# --- signatures and tampering ----------------------------------------------------------------------------

@contextmanager
def unguarded(store: Store) -> Iterator[object]:
    """A connection on which the append-only triggers do not fire (as an intruder with the database's
    own rights would have): dropped on SQLite, disabled on PostgreSQL (both only for this test's store)."""
    with store.engine.begin() as c:
        if store.engine.dialect.name == "sqlite":
            for table in ("assessments", "assessment_attachments"):
                for action in ("update", "delete"):
                    c.execute(text(f"DROP TRIGGER {table}_no_{action}"))
        else:
            for table in ("assessments", "assessment_attachments"):
                c.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"))
        yield c


def test_verify_finds_every_kind_of_tampering(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = plant(url, {"sun_assessor": USERS["sun_assessor"]})
    sun = auth.get_user(store, "sun_assessor")
    flag = flags_of(store, "SZ-1")[0]
    pdf = a_pdf()
    made = [assessments.add(store, sun, "flag", flag, "non_compliant", f"Assessment {k}: spoil outside",
                            files(("report.pdf", pdf), ("notes.txt", b"field notes"))) for k in range(1, 7)]
    ids = [a.row.id for a in made]
    code, output = run_cli("assessments", "verify", "--db", store.url)
    assert code == 0, output
    assert "6 assessments and 12 attachments" in output
    assert "all intact" in output
    forged = made[1].row
    facts = [signing.AttachmentFacts(a.position, a.filename, a.media_type, a.size_bytes, a.sha256)
             for a in made[1].attachments]
    forged_digest = signing.digest(signing.canonical(
        seq=forged.seq, user_id=forged.user_id, username=forged.username, target_kind=forged.target_kind,
        site_id=forged.site_id, flag_id=forged.flag_id, created_at=forged.created_at, verdict="compliant",
        text=forged.text, attachments=facts))
    other_pdf = pdf.replace(b"/MediaBox", b"/MediaBox ", 1)
    with unguarded(store) as c:
        # 1: the text changed; 2: the verdict changed and its digest recomputed to match;
        # 3: a file's bytes swapped; 4: a file's bytes and its recorded hash swapped; 5: deleted.
        c.execute(text("UPDATE assessments SET text = 'No problem seen' WHERE id = :id"), {"id": ids[0]})
        c.execute(text("UPDATE assessments SET verdict = 'compliant', digest = :d WHERE id = :id"),
                  {"id": ids[1], "d": forged_digest})
        c.execute(text("UPDATE assessment_attachments SET content = :c WHERE assessment_id = :id AND position = 1"),
                  {"id": ids[2], "c": other_pdf})
        c.execute(text("UPDATE assessment_attachments SET content = :c, sha256 = :h, size_bytes = :n "
                       "WHERE assessment_id = :id AND position = 2"),
                  {"id": ids[3], "c": b"other notes", "h": hashlib.sha256(b"other notes").hexdigest(), "n": 11})
        c.execute(text("DELETE FROM assessment_attachments WHERE assessment_id = :id"), {"id": ids[4]})
        c.execute(text("DELETE FROM assessments WHERE id = :id"), {"id": ids[4]})
    result = assessments.verify(store)
    assert result.failed == [1, 2, 3, 4, 5], "the sixth is intact"
    why = {seq: " | ".join(p.what for p in result.problems if p.seq == seq) for seq in result.failed}
    assert "the digest differs" in why[1]
    assert "signature does not match" in why[1]
    assert "digest differs" not in why[2], "the digest was forged to match..."
    assert "signature does not match" in why[2], "... but not the signature"
    assert "attachment 1 (report.pdf)" in why[3]
    assert "digest differs" not in why[3]
    assert "attachment 2" not in why[4], "the file agrees with its forged hash..."
    assert "the digest differs" in why[4], "... which is not the hash that was signed"
    assert "missing" in why[5]
    code, output = run_cli("assessments", "verify", "--db", store.url)
    assert code == 1, output
    flat = " ".join(output.split())
    for k in (1, 2, 3, 4):
        assert f"FAILED assessment {ids[k - 1]} (no. {k})" in flat
    assert "FAILED no. 5: assessment number 5 is missing" in flat
    assert f"assessment {ids[5]} " not in flat
    assert "5 failed" in flat
    monkeypatch.setenv(signing.SIGNING_KEY_ENV, "another-deployment-key-" + "0" * 20)
    assert "signed with another key" in {p.seq: p.what for p in assessments.verify(store).problems}[6]
    monkeypatch.delenv(signing.SIGNING_KEY_ENV)
    code, output = run_cli("assessments", "verify", "--db", store.url)
    assert code == 2
    assert "GMSENSE_ASSESSMENT_KEY" in output
    store.engine.dispose()


def test_the_canonical_form_is_stable_and_covers_every_signed_field() -> None:
    from datetime import datetime

    base = {"seq": 3, "user_id": 7, "username": "sun", "target_kind": "flag", "site_id": "SZ-1", "flag_id": 12,
            "created_at": datetime(2026, 6, 2, 8, 30, 5, 999), "verdict": "non_compliant", "text": "弃土堆\r\nx",
            "attachments": [signing.AttachmentFacts(1, "a.pdf", "application/pdf", 10, "ab" * 32)]}
    body = signing.canonical(**base)
    assert body.decode() == (
        '{"attachments":[{"filename":"a.pdf","media_type":"application/pdf","position":1,"sha256":"' + "ab" * 32
        + '","size":10}],"author":{"id":7,"username":"sun"},"created_at":"2026-06-02T08:30:05",'
        '"format":"gmsense-assessment/1","seq":3,"target":{"flag":12,"kind":"flag","licence":"SZ-1"},'
        '"text":"弃土堆\\r\\nx","verdict":"non_compliant"}')
    changes = {"seq": 4, "user_id": 8, "username": "qian", "target_kind": "licence", "site_id": "WC-1",
               "flag_id": None, "created_at": datetime(2026, 6, 2, 8, 30, 6), "verdict": "compliant", "text": "x",
               "attachments": []}
    for name, value in changes.items():
        assert signing.canonical(**{**base, name: value}) != body, name
    key = signing.SigningKey(TEST_KEY.encode())
    assert key.matches(body, key.sign(body))
    assert not signing.SigningKey(b"another key, as long as it needs to be").matches(body, key.sign(body))


# --- uploads --------------------------------------------------------------------------------------------

def test_file_types_are_told_by_content_not_by_name() -> None:
    pdf, png, jpeg = a_pdf(), a_png(), a_jpeg()
    assert uploads.check_file("report.pdf", pdf).media_type == "application/pdf"
    assert uploads.check_file("photo.PNG", png).media_type == "image/png"
    assert uploads.check_file("photo.jpeg", jpeg).media_type == "image/jpeg"
    assert uploads.check_file("IMG_0001.JPG", jpeg).media_type == "image/jpeg"
    assert uploads.check_file("记录.txt", "现场记录：弃土堆\n".encode()).media_type == "text/plain"
    disguised = {
        "report.pdf": b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff",  # a Windows program
        "photo.png": b"GIF89a\x01\x00\x01\x00\x80\x00\x00",  # a GIF
        "scan.jpg": b"PK\x03\x04\x14\x00\x06\x00",  # a zip (or an Office document)
        "notes.txt": "现场记录".encode("gb18030"),  # not UTF-8
        "page.txt": b"<html>\x00<script>",  # a NUL byte: not text
    }
    for name, content in disguised.items():
        with pytest.raises(uploads.UploadError, match="by its content") as refused:
            uploads.check_file(name, content)
        assert refused.value.status == 415
    for name, content, says in (("report.png", pdf, "its content is PDF but its name ends .png"),
                                ("page.pdf", b"<html><script>alert(1)</script>", "plain text but its name ends .pdf"),
                                ("run.exe", b"echo hello", "ends .exe"), ("README", b"text", "without an extension")):
        with pytest.raises(uploads.UploadError, match=re.escape(says)):
            uploads.check_file(name, content)
    with pytest.raises(uploads.UploadError, match="is empty"):
        uploads.check_file("empty.pdf", b"")
    assert uploads.check_file("big.txt", b"a" * uploads.MAX_FILE_BYTES).size == uploads.MAX_FILE_BYTES
    with pytest.raises(uploads.UploadError, match="larger than 10 MB") as refused:
        uploads.check_file("big.txt", b"a" * (uploads.MAX_FILE_BYTES + 1))
    assert refused.value.status == 413


def test_file_names_are_sanitised() -> None:
    clean = uploads.sanitise_filename
    assert clean("../../etc/passwd.txt") == "passwd.txt"
    assert clean("C:\\Users\\li\\评估报告 2026.pdf") == "评估报告 2026.pdf"
    assert clean("report\u202efdp.exe") == "reportfdp.exe", "no right-to-left override"
    assert clean(".htaccess.txt") == "htaccess.txt"
    assert clean('x<script>"a".txt') == "x_script_a_.txt"
    assert clean("line\r\nbreak.txt") == "linebreak.txt"
    long = clean("长" * 300 + ".pdf")
    assert len(long) <= uploads.MAX_FILENAME
    assert long.endswith("长.pdf")
    assert clean("") == clean(None) == clean("...") == "attachment"


def test_at_most_five_files_and_none_is_read_beyond_the_limit() -> None:
    streams = [io.BytesIO(b"text") for _ in range(6)]
    with pytest.raises(uploads.UploadError, match="at most 5 files per assessment; 6 were attached"):
        uploads.read_files((f"{k}.txt", s) for k, s in enumerate(streams))
    assert all(s.tell() == 0 for s in streams), "refused before any file is read"
    assert [a.filename for a in uploads.read_files([("a.txt", io.BytesIO(b"x")), ("", io.BytesIO(b""))])] == ["a.txt"]
    huge = io.BytesIO(b"a" * (uploads.MAX_FILE_BYTES + 100))
    with pytest.raises(uploads.UploadError, match="larger than"):
        uploads.read_files([("huge.txt", huge)])
    assert huge.tell() == uploads.MAX_FILE_BYTES + 1


# --- the web app and the API ------------------------------------------------------------------------------

@pytest.fixture
def app_store(tmp_path: Path) -> Iterator[Store]:
    store = plant(f"sqlite:///{tmp_path / 'review.db'}")
    yield store
    store.engine.dispose()


@pytest.fixture
def client(app_store: Store, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(app_store, cache_dir=tmp_path / "pictures")) as c:
        yield c


def login(client: TestClient, name: str) -> str:
    """Log ``name`` in; their CSRF token."""
    client.cookies.clear()
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token,
                                           "next": "/flags"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client.get("/api/me").json()["csrf_token"]


def _count(store: Store) -> tuple[int, int]:
    with store.session() as s:
        return (s.scalar(select(func.count()).select_from(AssessmentRow)),
                s.scalar(select(func.count()).select_from(AssessmentAttachmentRow)))


def test_an_assessor_attaches_files_and_every_role_in_scope_reads_them(client: TestClient, app_store: Store) -> None:
    flag = flags_of(app_store, "SZ-1")[0]
    token = login(client, "sun_assessor")
    page = client.get(f"/flags/{flag}")
    assert 'id="assessment-form"' in page.text
    assert 'enctype="multipart/form-data"' in page.text
    pdf, png = a_pdf(), a_png()
    sent = client.post(f"/flags/{flag}/assessments", data={"csrf_token": token, "verdict": "non_compliant",
                                                            "text": "Spoil 40 m outside <b>the boundary</b>."},
                       files=[("files", ("../visit report.pdf", pdf, "application/octet-stream")),
                              ("files", ("photo.png", png, "image/png")),
                              ("files", ("", b"", "application/octet-stream"))],  # an empty file field
                       follow_redirects=False)
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"] == f"/flags/{flag}#assessments"
    api = client.post("/api/sites/SZ-1/assessments", data={"verdict": "needs_follow_up", "text": "No plan."},
                      files=[("files", ("plan.txt", "缺少复垦方案".encode(), "text/plain"))],
                      headers={"X-CSRF-Token": token})
    assert api.status_code == 201, api.text
    assert api.json()["target"] == {"kind": "licence", "licence": "SZ-1", "flag": None}
    assert api.json()["attachments"][0]["sha256"] == hashlib.sha256("缺少复垦方案".encode()).hexdigest()
    for reader in ("li", "zhao", "wang", "sun_assessor"):
        login(client, reader)
        flag_page = client.get(f"/flags/{flag}").text
        section = flag_page[flag_page.index('id="assessments"'):]
        assert "visit report.pdf" in section
        assert "non-compliant" in section
        assert "&lt;b&gt;the boundary&lt;/b&gt;" in section, "the text is escaped"
        assert "plan.txt" not in section, "the licence's own assessment is on the licence page"
        assert ('id="assessment-form"' in flag_page) == (reader == "sun_assessor")
        site_page = client.get("/sites/SZ-1").text
        assert "plan.txt" in site_page
        assert "visit report.pdf" in site_page
        listed = client.get(f"/api/flags/{flag}/assessments").json()
        assert [a["verdict"] for a in listed] == ["non_compliant"]
        assert len(client.get("/api/sites/SZ-1/assessments").json()) == 2
        assert len(client.get("/api/audit/assessments").json()) == 2
        assert "visit report.pdf" not in client.get("/audit").text
        assert client.get("/audit").text.count("non-compliant") == 1
    [first] = listed
    download = client.get(first["attachments"][0]["url"])
    assert download.status_code == 200
    assert download.content == pdf
    assert download.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"].startswith('attachment; filename="visit report.pdf"')
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert download.headers["repr-digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(pdf).digest()).decode()}:"
    page_download = client.get(f"/assessments/{first['id']}/attachments/2")
    assert page_download.content == png
    assert page_download.headers["content-type"] == "image/png"
    text_download = client.get(f"/api/assessments/{api.json()['id']}/attachments/1")
    assert text_download.headers["content-type"] == "text/plain; charset=utf-8"
    assert "filename*=UTF-8''plan.txt" in text_download.headers["content-disposition"]
    assert client.get(f"/api/assessments/{first['id']}/attachments/3").status_code == 404
    assert assessments.verify(app_store).ok


def test_viewers_reviewers_and_admins_may_not_add_assessments(client: TestClient, app_store: Store) -> None:
    flag = flags_of(app_store, "SZ-1")[0]
    body = {"verdict": "compliant", "text": "looks fine"}
    for name in ("zhao", "li", "wang"):
        token = login(client, name)
        form = client.post(f"/flags/{flag}/assessments", data={**body, "csrf_token": token}, follow_redirects=False)
        assert form.status_code == 403, name
        assert client.post("/sites/SZ-1/assessments", data={**body, "csrf_token": token}).status_code == 403
        api = client.post(f"/api/flags/{flag}/assessments", data=body, headers={"X-CSRF-Token": token})
        assert api.status_code == 403, name
        assert "assessors" in api.json()["detail"]
    token = login(client, "sun_assessor")
    assert client.post(f"/flags/{flag}/assessments", data=body).status_code == 403, "no CSRF token"
    assert client.post(f"/api/flags/{flag}/assessments", data=body,
                       headers={"X-CSRF-Token": token + "x"}).status_code == 403
    assert _count(app_store) == (0, 0)


def test_bad_uploads_get_a_clear_message_and_nothing_is_stored(client: TestClient, app_store: Store) -> None:
    flag = flags_of(app_store, "SZ-1")[0]
    token = login(client, "sun_assessor")
    body = {"csrf_token": token, "verdict": "non_compliant", "text": "Spoil outside"}
    good = ("report.pdf", a_pdf(), "application/pdf")
    cases = {
        "report2.pdf is not a PDF, PNG, JPEG or UTF-8 plain-text file by its content":
            [good, ("report2.pdf", b"MZ\x90\x00 a program", "application/pdf")],
        "big.pdf is larger than 10 MB": [("big.pdf", b"%PDF-" + b"0" * uploads.MAX_FILE_BYTES, "application/pdf")],
        "at most 5 files per assessment; 6 were attached": [good] * 6,
        "photo.png: its content is PDF but its name ends .png": [("photo.png", a_pdf(), "image/png")],
    }
    for message, parts in cases.items():
        sent = client.post(f"/flags/{flag}/assessments", data=body, files=[("files", p) for p in parts],
                           follow_redirects=False)
        assert sent.status_code == 303
        assert sent.headers["location"].endswith("#assessments")
        shown = client.get(sent.headers["location"].split("#")[0]).text
        error = shown[shown.index('id="assessment-error"'):]
        assert message in error[:error.index("</p>")]
    for data, message in (({**body, "text": ""}, "needs a text"), ({**body, "verdict": "fine"}, "unknown verdict")):
        sent = client.post(f"/flags/{flag}/assessments", data=data, follow_redirects=False)
        assert message in client.get(sent.headers["location"].split("#")[0]).text
    headers = {"X-CSRF-Token": token}
    api = {k: v for k, v in body.items() if k != "csrf_token"}
    statuses = [client.post(f"/api/flags/{flag}/assessments", data=api, headers=headers,
                            files=[("files", p) for p in parts]).status_code for parts in cases.values()]
    assert statuses == [415, 413, 400, 415]
    assert _count(app_store) == (0, 0), "nothing is stored from a refused upload"
    # The upload routes take more than the app's 1 MB body limit (five files of 2 MB), other routes do not...
    five = [("files", (f"part{k}.txt", b"t" * 2_000_000, "text/plain")) for k in range(5)]
    assert client.post(f"/api/flags/{flag}/assessments", data=api, headers=headers, files=five).status_code == 201
    assert client.post(f"/api/flags/{flag}/decision", content=b"{" + b" " * 2_000_000 + b"}",
                       headers={**headers, "Content-Type": "application/json"}).status_code == 413
    # ... but not more than five files' worth, refused before the app reads it.
    huge = client.post(f"/api/flags/{flag}/assessments", content=b"x" * (uploads.MAX_UPLOAD_BODY_BYTES + 1),
                       headers={**headers, "Content-Type": "multipart/form-data; boundary=x"})
    assert huge.status_code == 413
    assert str(uploads.MAX_UPLOAD_BODY_BYTES) in huge.json()["detail"]
    assert _count(app_store) == (1, 5)


def test_without_a_signing_key_the_app_says_so_and_stores_nothing(client: TestClient, app_store: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(signing.SIGNING_KEY_ENV)
    flag = flags_of(app_store, "SZ-1")[0]
    token = login(client, "sun_assessor")
    sent = client.post(f"/flags/{flag}/assessments", data={"csrf_token": token, "verdict": "compliant", "text": "x"},
                       follow_redirects=False)
    assert "GMSENSE_ASSESSMENT_KEY" in client.get(sent.headers["location"].split("#")[0]).text
    api = client.post(f"/api/flags/{flag}/assessments", data={"verdict": "compliant", "text": "x"},
                      headers={"X-CSRF-Token": token})
    assert api.status_code == 503
    assert "GMSENSE_ASSESSMENT_KEY" in api.json()["detail"]
    assert _count(app_store) == (0, 0)


# --- the public disclosure ----------------------------------------------------------------------------------

def test_the_disclosure_counts_a_violations_assessments_without_names_text_or_files(tmp_path: Path) -> None:
    from gmsense.outputs.disclosure import write_disclosure

    store = plant(f"sqlite:///{tmp_path / 'd.db'}", {k: USERS[k] for k in ("sun_assessor", "li")})
    sun, li = auth.get_user(store, "sun_assessor"), auth.get_user(store, "li")
    confirmed, other = flags_of(store, "SZ-1")
    service.decide(store, confirmed, li, "confirm", "violation", "spoil outside")
    assessments.add(store, sun, "flag", confirmed, "non_compliant", "ASSESSOR-TEXT one",
                    files(("SECRET-FILE.pdf", a_pdf())))
    assessments.add(store, sun, "flag", confirmed, "needs_follow_up", "ASSESSOR-TEXT two")
    assessments.add(store, sun, "flag", other, "compliant", "ASSESSOR-TEXT of an open flag")
    assessments.add(store, sun, "licence", "SZ-1", "compliant", "ASSESSOR-TEXT of the licence")
    write_disclosure(store, tmp_path / "public")
    published = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "public").iterdir()}
    for content in published.values():
        for private in ("sun_assessor", "ASSESSOR-TEXT", "SECRET-FILE"):
            assert private not in content
    [row] = list(csv.DictReader(io.StringIO(published["violations.csv"].lstrip("\ufeff"))))
    assert (row["reference"], row["assessments"], row["assessment_verdicts"]) == (
        f"F{confirmed:06d}", "2", "non-compliant; needs follow-up")
    write_disclosure(store, tmp_path / "public", lang="zh")
    [row] = list(csv.DictReader(io.StringIO((tmp_path / "public" / "violations.csv").read_text(
        encoding="utf-8").lstrip("\ufeff"))))
    assert row["assessment_verdicts"] == "不合规; 需跟进"
    store.engine.dispose()
