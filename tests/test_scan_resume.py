"""`scan --resume` continues only an unfinished scan of the same request, and never one that
another live process is still running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyproj
import pytest
from shapely.geometry import box

from gmsense.geo.sites import Site, write_sites
from gmsense.store import ScanRow, Store
from gmsense.testutils import run_cli

UTM52N = pyproj.CRS.from_epsg(32652)
SITE_A = Site("A-1", box(600_000, 5_290_000, 600_300, 5_290_300), UTM52N, {})
SITE_B = Site("B-1", box(602_000, 5_292_000, 602_300, 5_292_300), UTM52N, {})


class KilledError(Exception):
    """Stands in for kill -9 at the very end of a scan: its row is never finished."""


def _killed_scan(sites_file: Path, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a real scan whose process 'dies' before it can mark the scan finished."""
    def die(*_a: object, **_k: object) -> None:
        raise KilledError

    with monkeypatch.context() as patch:
        patch.setattr(Store, "finish_scan", die)
        with pytest.raises(KilledError):
            run_cli("scan", "--sites", sites_file, "--db", db, "--detector", "rules", "--no-progress")


def _scan(*args: object) -> tuple[int, str]:
    return run_cli("scan", *args, "--detector", "rules", "--no-progress")


def _set_owner(db: Path, scan_id: int, **owner: object) -> None:
    store = Store(str(db))
    with store.session() as s, s.begin():
        row = s.get(ScanRow, scan_id)
        row.params = {**row.params, "owner": {**row.params["owner"], **owner}}


@pytest.fixture
def two_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """Scan 1 of B and scan 2 of A, both killed (left running); A's is the newest."""
    a = write_sites([SITE_A], tmp_path / "a.geojson")
    b = write_sites([SITE_B], tmp_path / "b.geojson")
    db = tmp_path / "s.db"
    _killed_scan(b, db, monkeypatch)
    _killed_scan(a, db, monkeypatch)
    assert [(r.id, r.status, r.params["sites_file"]) for r in Store(str(db)).scans()] == [
        (1, "running", str(b)), (2, "running", str(a))]
    return a, b, db


def test_resume_picks_the_scan_of_the_same_sites_file(two_killed: tuple[Path, Path, Path]) -> None:
    _a, b, db = two_killed
    code, output = _scan("--sites", b, "--db", db, "--resume")
    assert code == 0, output
    assert "scan 1: completed" in output
    status = {r.id: r.status for r in Store(str(db)).scans()}
    assert status == {1: "completed", 2: "running"}, "A's scan is left alone for A's own --resume"
    assert [u.site_id for u in Store(str(db)).scan(1)[1]] == ["B-1"]
    assert [u.site_id for u in Store(str(db)).scan(2)[1]] == ["A-1"]


def test_resume_of_the_same_licences_under_another_file_name(two_killed: tuple[Path, Path, Path],
                                                             tmp_path: Path) -> None:
    _a, _b, db = two_killed
    copy = write_sites([SITE_B], tmp_path / "copy-of-b.geojson")  # the licences count, not the file name
    code, output = _scan("--sites", copy, "--db", db, "--resume")
    assert code == 0, output
    assert {r.id: r.status for r in Store(str(db)).scans()} == {1: "completed", 2: "running"}


def test_resume_without_a_matching_scan_is_a_clear_error_and_writes_nothing(
        two_killed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _a, b, db = two_killed
    both = write_sites([SITE_A, SITE_B], tmp_path / "both.geojson")
    before = [(r.id, r.status) for r in Store(str(db)).scans()]
    for args in (("--sites", both), ("--sites", b, "--start", "2020-01-01")):
        code, output = _scan(*args, "--db", db, "--resume")
        assert code == 2, output
        text = " ".join(output.split())
        assert "no interrupted, failed or partial scan of these licences" in text
        assert "run without --resume" in text
        assert "scan 2 (running" in text
    assert [(r.id, r.status) for r in Store(str(db)).scans()] == before
    assert sorted(r.site_id for r in Store(str(db)).site_rows()) == ["A-1", "B-1"]


def test_a_scan_still_alive_elsewhere_is_not_resumed(two_killed: tuple[Path, Path, Path]) -> None:
    _a, b, db = two_killed
    _set_owner(db, 1, host="another-host.example", pid=4242, heartbeat=time.time())
    code, output = _scan("--sites", b, "--db", db, "--resume")
    assert code == 2, output
    text = " ".join(output.split())
    assert "scan 1 of these licences is still running (process 4242 on another-host.example" in text
    assert Store(str(db)).scans()[0].status == "running"
    # No heartbeat for longer than STALE_AFTER_S: that process is gone; resume.
    _set_owner(db, 1, heartbeat=time.time() - 3600)
    code, output = _scan("--sites", b, "--db", db, "--resume")
    assert code == 0, output
    assert Store(str(db)).scans()[0].status == "completed"


def test_a_killed_process_on_this_host_is_resumed_at_once(two_killed: tuple[Path, Path, Path]) -> None:
    _a, b, db = two_killed
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    _set_owner(db, 1, host=socket.gethostname(), pid=int(gone.stdout), heartbeat=time.time())
    code, output = _scan("--sites", b, "--db", db, "--resume")
    assert code == 0, output
    owner = Store(str(db)).scans()[0].params["owner"]
    assert owner["pid"] == os.getpid(), "the resuming process now owns the scan"


def test_owner_alive_rules() -> None:
    from gmsense.batch.scan import STALE_AFTER_S, owner_alive

    now = 1_000_000.0
    here = socket.gethostname()
    parent = os.getppid()  # alive while this test runs
    assert owner_alive({"host": here, "pid": parent, "heartbeat": now}, now)
    assert not owner_alive({"host": here, "pid": parent, "heartbeat": now - STALE_AFTER_S - 1}, now), \
        "a live pid without a heartbeat is a reused pid"
    assert not owner_alive({"host": here, "pid": os.getpid(), "heartbeat": now}, now), "this process is not another"
    assert owner_alive({"host": "elsewhere", "pid": 1, "heartbeat": now - 5}, now)
    assert not owner_alive({"host": "elsewhere", "pid": 1, "heartbeat": now - STALE_AFTER_S - 1}, now)
    assert not owner_alive(None, now)
