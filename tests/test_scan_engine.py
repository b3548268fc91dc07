"""The scan engine: kill -9 then --resume, incremental rescans, PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gmsense.cli import app
from gmsense.config import Settings, configs_dir
from gmsense.geo.sites import read_sites, write_sites
from gmsense.sources.synthetic.io import write_scene
from gmsense.store import Store

runner = CliRunner()
DEMO_SITES = configs_dir() / "demo_sites.geojson"
GMSENSE = Path(sys.executable).parent / "gmsense"


def _scan(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, ["scan", "--no-progress", *[str(a) for a in args]])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _content(db: str) -> tuple[list, list, list]:
    store = Store(db)
    patches = sorted((p.patch_id, p.geometry_wkt, p.disturbance_class, p.first_detected, p.last_seen)
                     for p in store.patch_rows())
    flags = sorted((f.rule, f.site_id, f.patch_id or "", f.flag_key, f.message) for f in store.flag_rows())
    recovery = sorted((r.patch_id, r.season, round(r.relative, 6)) for r in store.recovery_rows())
    return patches, flags, recovery


@pytest.mark.slow
def test_kill_9_then_resume_ends_like_an_uninterrupted_scan(tmp_path: Path) -> None:
    reference = str(tmp_path / "reference.db")
    code, output = _scan("--sites", DEMO_SITES, "--db", reference)
    assert code == 0, output

    killed = tmp_path / "killed.db"
    proc = subprocess.Popen([str(GMSENSE), "scan", "--sites", str(DEMO_SITES), "--db", str(killed), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # generous: a loaded machine is slow to start the scan
    while time.monotonic() < deadline:
        if killed.exists() and Store(str(killed)).scans() and Store(str(killed)).done_sites(1):
            break
        assert proc.poll() is None, "the scan ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = Store(str(killed))
    [scan] = store.scans()
    assert scan.status == "running", "a killed scan is left visibly unfinished"
    assert 1 <= len(store.done_sites(scan.id)) < 3

    code, output = _scan("--sites", DEMO_SITES, "--db", killed, "--resume")
    assert code == 0, output
    [scan] = Store(str(killed)).scans()
    assert scan.status == "completed"
    assert _content(str(killed)) == _content(reference)


def test_resume_with_nothing_to_resume_is_a_clear_error(tmp_path: Path) -> None:
    code, output = _scan("--sites", DEMO_SITES, "--db", tmp_path / "n.db", "--resume")
    assert code == 2
    assert "no interrupted" in output


@pytest.mark.slow
def test_incremental_rescan_processes_only_licences_with_new_dates(tmp_path: Path) -> None:
    site = read_sites(DEMO_SITES)[0]
    folder = write_scene(site, Settings(), tmp_path / "scene")
    newest = sorted(folder.glob("*.tif"))[-1]
    held_back = newest.rename(tmp_path / newest.name)  # not delivered yet
    sites_file = write_sites([site], tmp_path / "site.geojson")
    db = tmp_path / "inc.db"
    args = ("--sites", sites_file, "--source", "local", "--imagery", folder, "--db", db)
    assert _scan(*args)[0] == 0
    first = _content(str(db))

    code, output = _scan(*args)
    assert code == 0
    assert "up to date" in output, "nothing new: the licence is skipped"
    assert _content(str(db)) == first

    held_back.rename(newest)  # the next acquisition arrives
    code, output = _scan(*args)
    assert code == 0
    assert "up to date" not in output
    store = Store(str(db))
    units = store.scan(3)[1]
    assert [u.last_date for u in units] == [newest.name[:10]]
    patches_after = _content(str(db))[0]
    assert {p[0] for p in first[0]} <= {p[0] for p in patches_after}, "patch ids are kept across scans"

    code, output = _scan(*args, "--force")
    assert code == 0
    assert _content(str(db))[0] == patches_after, "re-running over the same dates changes nothing"


def test_schema_is_managed_by_migrations(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from gmsense.store import Base

    store = Store(str(tmp_path / "m.db"))
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() is not None
        assert compare_metadata(context, Base.metadata) == [], "the migrations build exactly the models' schema"
    Store(str(tmp_path / "m.db"))  # upgrading an up-to-date store is a no-op


@pytest.mark.postgres
def test_scan_into_postgresql(postgres_url: str, tmp_path: Path) -> None:
    site = read_sites(DEMO_SITES)[1]
    sites_file = write_sites([site], tmp_path / "one.geojson")
    code, output = _scan("--sites", sites_file, "--db", postgres_url, "--workers", "2")
    assert code == 0, output
    store = Store(postgres_url)
    assert store.engine.dialect.name == "postgresql"
    patches = store.patch_rows()
    assert patches
    assert any(not p.inside_licence for p in patches)
    code, output = _scan("--sites", sites_file, "--db", postgres_url, "--force")
    assert code == 0
    assert len(Store(postgres_url).patch_rows()) == len(patches), "idempotent on PostgreSQL too"


def test_two_processes_creating_one_store_at_once(tmp_path: Path) -> None:
    db = tmp_path / "race.db"
    code = "import sys; from gmsense.store import Store; Store(sys.argv[1]); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=600) for p in procs]  # only catches a hang
    assert all(p.returncode == 0 for p in procs), [o[1][-300:] for o in outputs]
    assert Store(str(db)).scans() == []


def test_a_store_waits_out_another_process_lock_longer_than_sqlite_default(tmp_path: Path) -> None:
    """pysqlite gives up after 5 s by default; a loaded host's migration can hold the file longer."""
    import sqlite3
    import time

    db = tmp_path / "held.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE unrelated (x INTEGER)")
    code = "import sys; from gmsense.store import Store; Store(sys.argv[1]); print('ok')"
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(7)  # longer than the 5 s default; the store waits up to SQLITE_LOCK_TIMEOUT_S
    holder.execute("COMMIT")
    holder.close()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-400:]
    assert out.strip() == "ok"


_LOADS: dict[str, int] = {}  # calls per source token; the scan may hand workers a copy of the source


class _FlakySource:
    """A real synthetic source whose first ``failures`` loads raise ``error``."""

    name = "synthetic"

    def __init__(self, settings: Settings, error: Exception, failures: int) -> None:
        from gmsense.sources import SyntheticSource

        self.inner, self.error, self.failures = SyntheticSource(settings), error, failures
        self.token = f"{id(self)}-{time.monotonic_ns()}"
        _LOADS[self.token] = 0

    @property
    def calls(self) -> int:
        return _LOADS[self.token]

    def load(self, site, region, start, end):
        _LOADS[self.token] += 1
        if _LOADS[self.token] <= self.failures:
            raise self.error
        return self.inner.load(site, region, start, end)

    def latest_date(self, site, start, end):
        return self.inner.latest_date(site, start, end)


@pytest.mark.parametrize(("error", "retried", "status"), [
    (ConnectionResetError("connection reset by peer"), True, "completed"),
    (TimeoutError("read timed out"), True, "completed"),
    (FileNotFoundError("no such file"), False, "failed"),
])
def test_transient_errors_are_retried_with_back_off_input_errors_fail_at_once(
        tmp_path: Path, error: Exception, retried: bool, status: str) -> None:
    from gmsense.batch.request import ScanRequest
    from gmsense.batch.scan import run_scan

    settings = Settings().with_overrides({"scan.retries": 2, "scan.retry_base_delay_s": 0.01,
                                          "synthetic.start": "2020-04-01", "synthetic.end": "2021-10-31"})
    site = [s for s in read_sites(DEMO_SITES) if s.site_id == "HLJ-MIN-003"]
    source = _FlakySource(settings, error, failures=1)
    summary = run_scan(ScanRequest(site, source, settings), Store(str(tmp_path / "s.db")))
    assert summary.status == status
    assert source.calls == (2 if retried else 1)
    if not retried:
        assert "no such file" in summary.failures["HLJ-MIN-003"]


def test_a_licence_that_keeps_failing_is_recorded_after_the_retries(tmp_path: Path) -> None:
    from gmsense.batch.request import ScanRequest
    from gmsense.batch.scan import run_scan
    from gmsense.errors import ImageryError

    settings = Settings().with_overrides({"scan.retries": 2, "scan.retry_base_delay_s": 0.01})
    sites = read_sites(DEMO_SITES)[:1]
    source = _FlakySource(settings, OSError("the NFS server is not responding"), failures=99)
    summary = run_scan(ScanRequest(sites, source, settings), Store(str(tmp_path / "s.db")))
    assert source.calls == 3
    assert summary.status == "failed"
    assert "NFS" in summary.failures[sites[0].site_id]
    bad = _FlakySource(settings, ImageryError("band B04 is missing"), failures=99)
    summary = run_scan(ScanRequest(sites, bad, settings), Store(str(tmp_path / "t.db")))
    assert bad.calls == 1


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    import random

    from gmsense.batch.scan import backoff_delay

    rng = random.Random(1)
    for retry in range(10):
        delays = [backoff_delay(retry, 2.0, 60.0, rng) for _ in range(200)]
        assert min(delays) >= 0.0
        assert max(delays) <= min(60.0, 2.0 * 2**retry)
        assert max(delays) > 0.5 * min(60.0, 2.0 * 2**retry)


def test_how_a_scan_runs_does_not_change_the_config_hash() -> None:
    base = Settings()
    assert base.with_overrides({"scan.retries": 5, "earthengine.max_concurrent": 20,
                                "earthengine.cache_dir": "/elsewhere"}).config_hash() == base.config_hash()
    assert base.with_overrides({"earthengine.cs_cdf_threshold": 0.7}).config_hash() != base.config_hash()
    assert base.with_overrides({"sites.buffer_m": 250}).config_hash() != base.config_hash()
