"""A scan on a dask cluster started the way an operator starts one: ``dask scheduler`` and two
``dask worker`` processes with their own command lines on 127.0.0.1. Once the first licence is
stored, the worker that is running a unit is killed (its nanny and worker process, like a lost
node); the scan still completes, with the same store as a local in-process scan of the same
licences (the README's "Running on a dask cluster" shows these commands)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gmsense.cli import app
from gmsense.config import configs_dir
from gmsense.geo.sites import Site, read_sites, write_sites
from gmsense.store import Store

REPO = Path(__file__).resolve().parent.parent
DEMO_SITES = configs_dir() / "demo_sites.geojson"
BIN = Path(sys.executable).parent
TIMEOUT_S = 900.0  # only catches a hang: a loaded machine is slow, never wrong


def _executable(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or pytest.fail(f"{name} is not installed"))


def _env() -> dict[str, str]:
    """Environment of every process: workers import gmsense from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class Processes:
    """Subprocesses each in its own session (a kill reaches a worker's nanny and its child), their
    stderr in files (a full pipe would block them), all stopped in :meth:`stop`."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.procs = folder, {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        with (self.folder / f"{name}.err").open("w") as err:
            proc = subprocess.Popen(list(args), stdout=err, stderr=subprocess.STDOUT, env=_env(), cwd=self.folder,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    def stop(self) -> None:
        """Terminate every process (and its session), then kill what is left after 20 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # whatever is left: a nanny's worker process
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)

    def logs(self) -> str:
        parts = []
        for name, proc in self.procs.items():
            text = (self.folder / f"{name}.err").read_text(errors="replace")
            parts.append(f"--- {name} (exit {proc.poll()}) ---\n{text[-4000:]}")
        return "\n".join(parts)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    folder = tmp_path / "procs"
    folder.mkdir()
    procs = Processes(folder)
    try:
        yield procs
    finally:
        procs.stop()


def _content(db: str) -> tuple[list, list, list]:
    store = Store(db)
    patches = sorted((p.patch_id, p.geometry_wkt, p.disturbance_class, p.first_detected, p.last_seen)
                     for p in store.patch_rows())
    flags = sorted((f.rule, f.site_id, f.patch_id or "", f.flag_key, f.message) for f in store.flag_rows())
    recovery = sorted((r.patch_id, r.season, round(r.relative, 6)) for r in store.recovery_rows())
    return patches, flags, recovery


def _wait(condition: Callable[[], object], what: str, procs: Processes, watched: tuple[str, ...]) -> object:
    deadline = time.monotonic() + TIMEOUT_S
    while not (value := condition()):
        for name in watched:
            if procs.procs[name].poll() is not None:
                pytest.fail(f"{name} ended while waiting for {what}\n{procs.logs()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{procs.logs()}")
        time.sleep(0.2)
    return value


def _scheduler_address(scheduler_file: Path) -> str | None:
    try:
        return json.loads(scheduler_file.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None  # not written yet, or half written


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        store = Store(str(db))
        scans = store.scans()
        return len(store.done_sites(scans[0].id)) if scans else 0
    except Exception:  # the store is being created
        return 0


def _licences(folder: Path) -> Path:
    """The demo licences and a copy of each under another id (another synthetic world): six units of
    a few seconds each, so work is left once the first licence is stored, however fast the machine."""
    demo = read_sites(DEMO_SITES)
    copies = [Site(f"{s.site_id}-B", s.geometry, s.crs, dict(s.attrs)) for s in demo]
    return write_sites(demo + copies, folder / "licences.geojson")


def _busy_worker(client: object) -> str | None:
    """The name of a worker running a task now, if any."""
    names = {address: info["name"] for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}
    return next((names[address] for address, keys in client.processing().items() if keys and address in names), None)


@pytest.mark.slow
@pytest.mark.cluster
def test_scan_on_an_external_cluster_survives_a_killed_worker(tmp_path: Path, processes: Processes) -> None:
    from distributed import Client

    licences = _licences(tmp_path)
    started = time.monotonic()
    reference = tmp_path / "reference.db"
    result = CliRunner().invoke(app, ["scan", "--no-progress", "--sites", str(licences), "--db", str(reference)])
    assert result.exit_code == 0, result.output
    timings = {"local scan": time.monotonic() - started}

    dask = _executable("dask")
    scheduler_file = processes.folder / "scheduler.json"
    processes.start("scheduler", dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(scheduler_file))
    address = _wait(lambda: _scheduler_address(scheduler_file), "the scheduler file", processes, ("scheduler",))
    assert address.startswith("tcp://127.0.0.1:")
    workers = ("worker-a", "worker-b")
    for name in workers:
        processes.start(name, dask, "worker", "--scheduler-file", str(scheduler_file), "--name", name,
                        "--nworkers", "1", "--nthreads", "1", "--memory-limit", "2GB", "--no-dashboard",
                        "--host", "127.0.0.1", "--local-directory", str(processes.folder / name),
                        "--death-timeout", "60")
    watched = ("scheduler", *workers)
    with Client(address, timeout="60s") as monitor:
        _wait(lambda: len(monitor.scheduler_info(n_workers=-1)["workers"]) == 2, "two workers", processes, watched)

        db = tmp_path / "cluster.db"
        started = time.monotonic()
        scan = processes.start("scan", _executable("gmsense"), "scan", "--no-progress", "--sites", str(licences),
                               "--scheduler", address, "--db", str(db))
        _wait(lambda: _stored(db) >= 1, "the first licence stored", processes, ("scan", *watched))
        busy = _wait(lambda: _busy_worker(monitor), "a worker running a unit", processes, ("scan", *watched))
        victim = next(name for name in workers if str(busy).startswith(name))  # dask may append "-0"
        assert scan.poll() is None, "the kill must land midway: make the workload larger"
        assert _stored(db) < 6, "the kill must land midway: make the workload larger"
        processes.kill(victim)
        _wait(lambda: len(monitor.scheduler_info(n_workers=-1)["workers"]) == 1, "the scheduler to notice",
              processes, ("scheduler",))

        try:
            code = scan.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the scan did not finish after the kill\n{processes.logs()}")
        timings["cluster scan"] = time.monotonic() - started
    assert code == 0, processes.logs()
    survivor = next(name for name in workers if name != victim)
    assert processes.procs[survivor].poll() is None, processes.logs()
    [row] = Store(str(db)).scans()
    assert row.status == "completed", (row.summary, processes.logs())
    assert not [s for s in row.summary["sites"].values() if s.get("error")], row.summary
    assert len(row.summary["sites"]) == 6
    assert _content(str(db)) == _content(str(reference))
    print(f"killed {victim}; " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


class _DyingSource:
    """A real synthetic source whose first ``deaths`` loads kill the worker process running them
    (like the kernel's out-of-memory killer); counted in files, as each death takes its memory along."""

    name = "synthetic"

    def __init__(self, settings: object, folder: Path, deaths: int) -> None:
        from gmsense.sources import SyntheticSource

        self.inner, self.folder, self.deaths, self.main = SyntheticSource(settings), folder, deaths, os.getpid()

    def load(self, site, region, start, end):
        died = len(list(self.folder.glob("death-*")))
        if died < self.deaths and os.getpid() != self.main:
            (self.folder / f"death-{died}").touch()
            os._exit(1)
        return self.inner.load(site, region, start, end)

    def latest_date(self, site, start, end):
        return self.inner.latest_date(site, start, end)


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize(("deaths", "status"), [(1, "completed"), (2, "failed")])
def test_a_unit_whose_workers_die_is_retried_then_recorded_failed(tmp_path: Path, deaths: int, status: str) -> None:
    """With allowed-failures 0 the first lost worker ends the unit in KilledWorker: the scan retries it
    (scan.retries = 1) on the restarted worker; a unit that kills its worker again fails its licence."""
    import dask

    from gmsense.batch.request import ScanOptions, ScanRequest
    from gmsense.batch.scan import run_scan
    from gmsense.config import Settings

    settings = Settings().with_overrides({"scan.retries": 1, "synthetic.start": "2020-04-01",
                                          "synthetic.end": "2021-10-31"})
    site = [s for s in read_sites(DEMO_SITES) if s.site_id == "HLJ-MIN-003"]
    source = _DyingSource(settings, tmp_path, deaths)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        summary = run_scan(ScanRequest(site, source, settings), Store(str(tmp_path / "s.db")),
                           options=ScanOptions(workers=1))
    assert len(list(tmp_path.glob("death-*"))) == deaths
    assert summary.status == status
    if status == "failed":
        assert "kept dying" in summary.failures["HLJ-MIN-003"]
        assert "out of memory" in summary.failures["HLJ-MIN-003"]
