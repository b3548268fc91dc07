"""How long third-party assessments take (issue 20, item 5): an upload of the largest assessment the app
takes (5 files of 10 MB) through the real app, and ``gmsense assessments verify`` over many assessments,
on SQLite and, with ``--pg URL`` (a database this script may empty), PostgreSQL.

    PYTHONPATH=. python scripts/measure_assessments.py [--n 1000] [--attachment-kb 100] [--pg URL]

The signing key is a throw-away one set here. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from gmsense.geo.divisions import divisions_of
from gmsense.review import assessments, auth, uploads
from gmsense.review.app import create_app
from gmsense.review.signing import SIGNING_KEY_ENV
from gmsense.store import FlagRow, ScanRow, SiteRow, Store

PASSWORD = "measure-password-1"


def _store(url: str) -> Store:
    if url.startswith("postgresql"):
        engine = create_engine(url)
        with engine.begin() as c:
            c.execute(text("DROP SCHEMA public CASCADE"))
            c.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    store = Store(url)
    attrs = {"county": "尚志市"}
    with store.session() as s, s.begin():
        s.add(ScanRow(id=1, source="synthetic", config_hash="x", gmsense_version="t"))
        s.add(SiteRow(site_id="SZ-1", geometry_wkt="POLYGON((0 0,1 0,1 1,0 1,0 0))", attrs=attrs,
                      **divisions_of(attrs)))
        s.flush()
        s.add(FlagRow(site_id="SZ-1", rule="outside_licence", flag_key="0", severity="warning", message="m",
                      evidence={}, created_scan_id=1, updated_scan_id=1, **divisions_of(attrs)))
    auth.add_user(store, "sun", PASSWORD, "assessor", scope="licence:SZ-1")
    return store


def measure(url: str, n: int, attachment_kb: int, label: str) -> None:
    store = _store(url)
    with TestClient(create_app(store, cache_dir=Path(tempfile.mkdtemp()))) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        client.post("/login", data={"username": "sun", "password": PASSWORD, "csrf_token": token, "next": "/flags"})
        csrf = client.get("/api/me").json()["csrf_token"]
        pdf = b"%PDF-1.7\n" + os.urandom(uploads.MAX_FILE_BYTES - 9)
        files = [("files", (f"report-{k}.pdf", pdf, "application/pdf")) for k in range(uploads.MAX_FILES)]
        start = time.perf_counter()
        response = client.post("/api/flags/1/assessments", data={"verdict": "non_compliant", "text": "x"},
                               files=files, headers={"X-CSRF-Token": csrf})
        upload_s = time.perf_counter() - start
        assert response.status_code == 201, response.text
    print(f"{label}: upload of {uploads.MAX_FILES} x 10 MB through the app: {upload_s:.2f} s", flush=True)
    sun = auth.get_user(store, "sun")
    files_each = [uploads.check_file("notes.pdf", b"%PDF-1.7\n" + os.urandom(attachment_kb * 1024))]
    start = time.perf_counter()
    for k in range(n):
        assessments.add(store, sun, "flag", 1, "compliant", f"visit {k}", files_each)
    add_s = time.perf_counter() - start
    print(f"{label}: {n} assessments of one {attachment_kb} KB file added: {add_s:.1f} s "
          f"({1000 * add_s / n:.1f} ms each)", flush=True)
    start = time.perf_counter()
    result = assessments.verify(store)
    verify_s = time.perf_counter() - start
    assert result.ok, result.problems[:3]
    megabytes = (uploads.MAX_FILES * uploads.MAX_FILE_BYTES + n * attachment_kb * 1024) / 2**20
    print(f"{label}: verify of {result.assessments} assessments, {result.attachments} attachments "
          f"({megabytes:.0f} MB): {verify_s:.1f} s", flush=True)
    store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--attachment-kb", type=int, default=100)
    parser.add_argument("--pg", help="a PostgreSQL URL whose public schema this script empties")
    args = parser.parse_args()
    os.environ[SIGNING_KEY_ENV] = os.urandom(32).hex()
    with tempfile.TemporaryDirectory() as folder:
        measure(f"sqlite:///{Path(folder) / 'measure.db'}", args.n, args.attachment_kb, "SQLite")
    if args.pg:
        measure(args.pg, args.n, args.attachment_kb, "PostgreSQL")


if __name__ == "__main__":
    main()
