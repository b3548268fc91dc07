"""The batch scan: work units as dask tasks, results written to the store as they arrive.

The planner (gmsense.planner) turns licences into units: one licence, a group of small ones, or
a tile of a large one. Workers compute and return results; only this process writes the store,
one transaction per licence (a tiled licence once all its tiles are back, joined by
gmsense.tiles). A licence that fails (after retries of transient errors) is recorded with its
error and the scan goes on; the status says ``partial``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dask
from distributed import Client, LocalCluster, as_completed
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gmsense import __version__
from gmsense.config import Settings
from gmsense.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, GmsenseError, InputError
from gmsense.pipeline import analyse_site
from gmsense.planner import Tile, WorkUnit, default_memory_limit, plan
from gmsense.sites import ApprovedWork, Site
from gmsense.sources import Source
from gmsense.store import Store
from gmsense.tiles import TileResult, analyse_tile, merge_tiles
from gmsense.train import PatchClassifier


@dataclass
class ScanSummary:
    scan_id: int
    status: str  # completed | partial | failed
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, str]:
        return {k: v["error"] for k, v in self.sites.items() if v.get("error")}

    @property
    def exit_code(self) -> int:
        return {"completed": EXIT_OK, "partial": EXIT_PARTIAL}.get(self.status, EXIT_FAILED)


def _threads() -> int:
    """Threads of the in-process cluster (no --workers, no --scheduler)."""
    return min(4, os.cpu_count() or 1)


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A dask.distributed client.

    ``scheduler``: connect to an existing cluster; ``workers``: a LocalCluster of that many
    single-threaded worker processes; neither: threads in this process.
    """
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise GmsenseError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        with client:
            yield client
        return
    if workers:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        with cluster, Client(cluster) as client:
            yield client
        return
    cluster = LocalCluster(n_workers=1, threads_per_worker=_threads(), processes=False,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    # In-process workers share this process's dask config: units set the local threaded
    # scheduler (see _with_retries); restore the caller's afterwards.
    with dask.config.set({"scheduler": dask.config.get("scheduler", None)}), cluster, Client(cluster) as client:
        yield client


def _describe(exc: BaseException) -> str:
    if isinstance(exc, GmsenseError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def is_transient(exc: BaseException) -> bool:
    """Whether an error may go away on its own (I/O, network, a busy service), so a retry can help.

    Input errors (a corrupt or missing file, a wrong setting) fail at once: retrying cannot fix
    them. A :class:`GmsenseError` may say otherwise with a ``transient = True`` attribute.
    """
    if isinstance(exc, GmsenseError):
        return bool(getattr(exc, "transient", False))
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    return isinstance(exc, OSError | TimeoutError | ConnectionError | MemoryError)


def backoff_delay(retry: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``retry`` (0-based): exponential with full jitter."""
    return rng.uniform(0.0, min(max_s, base_s * 2.0**retry))


def _with_retries(settings: Settings, func: Any, *args: Any) -> Any:
    """``func(*args)``, retried with back-off after transient errors (see is_transient).

    Runs on a worker. Lazy (dask) imagery inside a unit is computed with the worker's local
    threads, never sent back to the cluster: a unit waiting for sub-tasks that need the thread
    it holds would deadlock once every thread runs a unit.
    """
    dask.config.set({"scheduler": "threads"})
    rng = random.Random()
    for retry in range(settings.scan.retries + 1):
        try:
            return func(*args)
        except Exception as exc:
            if retry == settings.scan.retries or not is_transient(exc):
                raise
            time.sleep(backoff_delay(retry, settings.scan.retry_base_delay_s, settings.scan.retry_max_delay_s, rng))
    raise AssertionError("unreachable")  # pragma: no cover


def analyse_with_retries(site: Site, source: Source, settings: Settings, start: str | None, end: str | None,
                         works: list[ApprovedWork] | None, classifier: PatchClassifier | None) -> Any:
    """One licence's analysis, retried with back-off after transient errors."""
    return _with_retries(settings, analyse_site, site, source, settings, start, end, works, classifier)


def analyse_group(sites: tuple[Site, ...], source: Source, settings: Settings, start: str | None, end: str | None,
                  works: dict[str, list[ApprovedWork]] | None,
                  classifier: PatchClassifier | None) -> list[tuple[str, Any, str | None]]:
    """Several small licences in one task: (licence id, result or None, error or None) each; one
    licence's failure does not stop the others."""
    out: list[tuple[str, Any, str | None]] = []
    for site in sites:
        try:
            result = analyse_with_retries(site, source, settings, start, end,
                                          works.get(site.site_id) if works else None, classifier)
            out.append((site.site_id, result, None))
        except Exception as exc:  # recorded per licence
            out.append((site.site_id, None, _describe(exc)))
    return out


def analyse_tile_with_retries(site: Site, tile: Tile, source: Source, settings: Settings, start: str | None,
                              end: str | None, classifier: PatchClassifier | None) -> TileResult:
    """One tile of a large licence, retried with back-off after transient errors."""
    return _with_retries(settings, analyse_tile, site, tile, source, settings, start, end, classifier)


def _task(unit: WorkUnit, source: Source, settings: Settings, start: str | None, end: str | None,
          works: dict[str, list[ApprovedWork]] | None, classifier: PatchClassifier | None) -> tuple[Any, ...]:
    """The function and arguments that run ``unit`` on a worker."""
    if unit.tile is not None:
        return (analyse_tile_with_retries, unit.sites[0], unit.tile, source, settings, start, end, classifier)
    if len(unit.sites) > 1:
        return (analyse_group, unit.sites, source, settings, start, end, works, classifier)
    site = unit.sites[0]
    return (analyse_with_retries, site, source, settings, start, end, works.get(site.site_id) if works else None,
            classifier)


def unit_key(site: Site, source: Source, settings: Settings, start: str | None, detector: str = "rules",
             model_version: str | None = None) -> str:
    """What makes two units the same work: licence, source, settings, detector and model, start.

    The end date is not part of it: a later periodic scan of the same licence continues the
    same series, and only dates newer than the last analysed one make it worth scanning again.
    """
    blob = json.dumps([site.site_id, source.name, settings.config_hash(), detector, model_version, start or ""])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _up_to_date(sites: list[Site], source: Source, keys: dict[str, str], store: Store,
                start: str | None, end: str | None) -> dict[str, str]:
    """Licences whose newest available acquisition was already analysed: id -> that date."""
    analysed = store.last_analysed(keys)
    skip = {}
    for site in sites:
        if site.site_id not in analysed:
            continue
        latest = source.latest_date(site, start, end)
        if latest is not None and latest <= analysed[site.site_id]:
            skip[site.site_id] = analysed[site.site_id]
    return skip


def run_scan(sites: list[Site], source: Source, settings: Settings, store: Store, *,
             start: str | None = None, end: str | None = None, workers: int | None = None,
             scheduler: str | None = None, params: dict[str, Any] | None = None,
             works: dict[str, list[ApprovedWork]] | None = None, resume: bool = False, force: bool = False,
             classifier: PatchClassifier | None = None, memory_limit: int | None = None,
             console: Console | None = None, show_progress: bool = True) -> ScanSummary:
    """Scan every licence and store the results; returns the summary (also stored with the scan).

    Incremental: a licence whose newest available acquisition was already analysed with the
    same settings is skipped (``force`` scans it anyway). ``resume`` continues the newest scan
    that did not complete: licences it already stored are kept, the rest are scanned.
    ``works``: approved work programmes per licence id (see :func:`gmsense.sites.read_works`).
    ``memory_limit``: bytes one task may use (default: half the machine's memory over the tasks
    that run at once); licences above it are scanned in tiles, small ones in groups
    (gmsense.planner). Peak memory is about the number of concurrent tasks times this.
    """
    console = console or Console(stderr=True)
    store.upsert_sites(sites)
    detector = "model" if classifier is not None else "rules"
    model_version = classifier.version if classifier is not None else None
    keys = {site.site_id: unit_key(site, source, settings, start, detector, model_version) for site in sites}
    if resume:
        previous = store.resumable_scan()
        if previous is None:
            raise InputError("there is no interrupted, failed or partial scan to resume; run without --resume")
        if previous.config_hash != settings.config_hash() or previous.source != source.name:
            raise InputError(
                f"scan {previous.id} ran with other settings or another source "
                f"({previous.source}, config {previous.config_hash}); resume it with the same --config and --source")
        scan_id = store.reopen_scan(previous.id).id
        done = store.done_sites(scan_id)
        summary = ScanSummary(scan_id, "running", dict((previous.summary or {}).get("sites", {})))
        for site_id in list(summary.sites):
            if site_id not in done:
                del summary.sites[site_id]
    else:
        scan_id = store.begin_scan(source=source.name, detector=detector, config_hash=settings.config_hash(),
                                   gmsense_version=__version__, model_version=model_version,
                                   params={"start": start, "end": end, "n_sites": len(sites), **(params or {}),
                                           "settings": settings.model_dump(mode="json")})
        done = set()
        summary = ScanSummary(scan_id, "running")
    skipped = {} if force else _up_to_date([s for s in sites if s.site_id not in done], source, keys, store,
                                           start, end)
    for site_id, last in skipped.items():
        summary.sites[site_id] = {"patches": 0, "by_class": {}, "area_m2": 0.0, "flags": 0,
                                  "skipped": f"up to date (analysed through {last})"}
    todo = [s for s in sites if s.site_id not in done and s.site_id not in skipped]
    concurrent = workers or (1 if scheduler else _threads())
    units = plan(todo, settings, memory_limit or default_memory_limit(concurrent), start=start, end=end)
    by_id = {s.site_id: s for s in todo}
    tiles_back: dict[str, list[TileResult]] = {}
    finished: set[str] = set()

    def save(site_id: str, result: Any) -> None:
        counts = store.save_site_result(scan_id, result, keys[site_id])
        classes = Counter(p.disturbance_class for p in result.patches)
        summary.sites[site_id] = {
            "patches": len(result.patches), "by_class": dict(sorted(classes.items())),
            "area_m2": round(sum(p.area_m2 for p in result.patches), 1), "flags": len(result.flags), **counts,
            **({"tiles": result.stats["tiles"]} if "tiles" in result.stats else {}),
        }
        finished.add(site_id)

    def fail(site_id: str, message: str) -> None:
        if site_id in finished:
            return
        store.record_failure(scan_id, site_id, message, keys[site_id])
        summary.sites[site_id] = {"error": message}
        finished.add(site_id)

    def handle(unit: WorkUnit, value: Any) -> None:
        if unit.tile is not None:
            site_id = unit.sites[0].site_id
            if site_id in finished:
                return
            tiles_back.setdefault(site_id, []).append(value)
            if len(tiles_back[site_id]) == unit.tile.count:
                site = by_id[site_id]
                save(site_id, merge_tiles(site, tiles_back.pop(site_id), settings,
                                          works.get(site_id) if works else None))
        elif len(unit.sites) > 1:
            for site_id, result, error in value:
                if error is not None:
                    fail(site_id, error)
                else:
                    save(site_id, result)
        else:
            save(unit.sites[0].site_id, value)

    try:
        with dask_client(workers, scheduler) as client:
            futures = {client.submit(*_task(unit, source, settings, start, end, works, classifier),
                                     key=f"unit-{scan_id}-{unit.name}-{uuid.uuid4().hex[:8]}", pure=False): unit
                       for unit in units}
            columns = (TextColumn("[bold]scan {task.fields[scan]}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("failed {task.fields[failed]}"), TextColumn("units {task.fields[units]}"),
                       TimeElapsedColumn(), TimeRemainingColumn())
            with Progress(*columns, console=console, disable=not show_progress) as progress:
                task = progress.add_task("licences", total=len(sites), completed=len(sites) - len(todo),
                                         scan=scan_id, failed=0, units=f"0/{len(units)}")
                for n_done, future in enumerate(as_completed(futures), start=1):
                    unit = futures[future]
                    before = len(finished)
                    try:
                        handle(unit, future.result())
                    except Exception as exc:  # one licence's failure must not stop the scan
                        for site in unit.sites:
                            fail(site.site_id, _describe(exc))
                    finally:
                        future.release()
                    progress.update(task, advance=len(finished) - before, failed=len(summary.failures),
                                    units=f"{n_done}/{len(units)}")
    except BaseException:
        store.finish_scan(scan_id, "failed", {"sites": summary.sites, "error": "scan interrupted"})
        raise
    n_failed = len(summary.failures)
    summary.status = "completed" if n_failed == 0 else ("failed" if n_failed == len(sites) else "partial")
    store.finish_scan(scan_id, summary.status, {"sites": summary.sites})
    return summary
