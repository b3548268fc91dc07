"""`scan --start/--end`: bad dates are refused before the store is touched; a scan that fails
after its row exists ends ``failed`` with the error, never ``running`` forever."""

from __future__ import annotations

from pathlib import Path

import pyproj
import pytest
from shapely.geometry import box

from gmsense.config import Settings
from gmsense.errors import InputError
from gmsense.geo.sites import Site, write_sites
from gmsense.store import Store
from gmsense.testutils import run_cli

UTM52N = pyproj.CRS.from_epsg(32652)
SITE = Site("D-1", box(600_000, 5_290_000, 600_300, 5_290_300), UTM52N, {})


@pytest.fixture
def sites_file(tmp_path: Path) -> Path:
    return write_sites([SITE], tmp_path / "d.geojson")


@pytest.mark.parametrize(("dates", "message"), [
    (("--start", "2022-13-45"), "--start '2022-13-45' is not a real calendar date (month must be in 1..12)"),
    (("--start", "2022-02-30"), "--start '2022-02-30' is not a real calendar date (day is out of range for month)"),
    (("--end", "2021-02-29"), "--end '2021-02-29' is not a real calendar date"),
    (("--start", "2022-06-01", "--end", "2022-05-31"), "--start 2022-06-01 is after --end 2022-05-31"),
    (("--start", "last spring"), "--start 'last spring' is not a date in the form YYYY-MM-DD"),
    (("--end", "20220501"), "--end '20220501' is not a date in the form YYYY-MM-DD"),
])
def test_bad_dates_exit_2_and_create_no_store(sites_file: Path, tmp_path: Path, dates: tuple[str, ...],
                                              message: str) -> None:
    db = tmp_path / "new.db"
    code, output = run_cli("scan", "--sites", sites_file, "--db", db, "--detector", "rules", "--no-progress", *dates)
    assert code == 2, output
    assert message in " ".join(output.split())
    assert "Traceback" not in output
    assert not db.exists(), "bad dates must not create the store"


def test_bad_dates_write_nothing_into_an_existing_store(sites_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    Store(str(db))
    for dates in (("--start", "2022-13-45"), ("--start", "2022-06-01", "--end", "2022-05-01")):
        code, output = run_cli("scan", "--sites", sites_file, "--db", db, "--detector", "rules", "--no-progress",
                               *dates)
        assert code == 2, output
    store = Store(str(db))
    assert store.scans() == []
    assert store.site_rows() == []


def test_run_scan_checks_dates_before_writing(tmp_path: Path) -> None:
    from gmsense.batch.request import ScanRequest
    from gmsense.batch.scan import run_scan
    from gmsense.sources import SyntheticSource

    store = Store(str(tmp_path / "lib.db"))
    with pytest.raises(InputError, match="start 2021-09-01 is after end 2021-05-01"):
        run_scan(ScanRequest([SITE], SyntheticSource(Settings()), Settings(), start="2021-09-01", end="2021-05-01"),
                 store)
    assert store.scans() == []
    assert store.site_rows() == []


def test_an_error_after_the_scan_row_exists_marks_it_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gmsense.batch.scan
    from gmsense.batch.request import ScanRequest
    from gmsense.sources import SyntheticSource

    def broken_plan(*_a: object, **_k: object) -> None:
        raise RuntimeError("the planner exploded")

    monkeypatch.setattr(gmsense.batch.scan, "plan", broken_plan)
    store = Store(str(tmp_path / "f.db"))
    with pytest.raises(RuntimeError, match="planner exploded"):
        gmsense.batch.scan.run_scan(ScanRequest([SITE], SyntheticSource(Settings()), Settings()), store)
    [scan] = store.scans()
    assert scan.status == "failed", "an error must not leave the scan 'running' forever"
    assert scan.finished_at is not None
    assert scan.summary["error"] == "RuntimeError: the planner exploded"

