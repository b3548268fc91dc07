"""The batch scan: work units as dask tasks, results written to the store as they arrive.

What is scanned is a :class:`~gmsense.batch.request.ScanRequest`, how it runs its
:class:`~gmsense.batch.request.ScanOptions`. The planner (gmsense.batch.planner) turns the licences
into units: one licence, a group of small ones, or a tile of a large one. Each unit is a dask task
that takes the request narrowed to its licences; workers compute and return results; only this
process writes the store, one transaction per licence (a tiled licence once all its tiles are
back, joined by gmsense.batch.tiles). A licence that fails (after retries of transient errors) is
recorded with its error and the scan goes on; the status says ``partial``. Progress goes to a
callback (:class:`ScanProgress` events); the command line draws it as a bar.

A worker that dies (a lost node, a killed process, a pre-empted batch job) costs no licence: the
scheduler runs the tasks it was running, and recomputes the results it held, on the other workers.
Only a task during whose runs ``distributed.scheduler.allowed-failures`` + 1 workers died (default
3, the scheduler's setting: on an external cluster that of the ``dask scheduler`` process) ends in
``KilledWorker``; the scan then retries the unit ``scan.retries`` times more (each retry again
survives one loss at most, as the scheduler keeps counting) and only then records its licences
failed, with a hint at memory: a unit that kills every worker it runs on is usually out of memory.
The trained model goes to the cluster once per scan, as a task of its own whose result every unit
takes (recomputed like any other if its worker dies), not inside each unit's task.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from functools import partial
from typing import Any

import dask
import psutil
from distributed import Client, Future, KilledWorker, LocalCluster, as_completed

from gmsense import __version__
from gmsense.batch.planner import Tile, WorkUnit, default_memory_limit, plan
from gmsense.batch.request import ScanOptions, ScanRequest
from gmsense.batch.tiles import LoadedTile, TileResult, analyse_tile, load_tile, merge_tiles, tile_sample
from gmsense.batch.workers import local_cluster
from gmsense.config import Settings
from gmsense.detect.context import SceneContext, SceneSample, merge_samples
from gmsense.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, GmsenseError, InputError
from gmsense.geo.sites import Site
from gmsense.pipeline import analyse_site, available_cores
from gmsense.store import Store

log = logging.getLogger(__name__)
#: dask.distributed's own logs in the scan's process and its workers: a task that fails is reported by the
#: scan (the licence's error in the summary and the store), so the workers' "Compute Failed" tracebacks and a
#: heartbeat cut off by the cluster's shutdown are only noise in an operator's terminal.
DASK_LOG_LEVEL = logging.CRITICAL
#: Per-licence stats of the analysis copied into the scan summary (coverage: gmsense.geo.coverage).
SUMMARY_STATS = ("tiles", "coverage_licence", "coverage_area", "coverage_warning", "imagery_warning")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Seconds between two heartbeats of a running scan (``params["owner"]["heartbeat"]``).
HEARTBEAT_S = 30.0
#: A running scan whose process is on another host counts as gone this long after its last heartbeat.
STALE_AFTER_S = 4 * HEARTBEAT_S


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


@dataclass(frozen=True)
class ScanProgress:
    """One step of a running scan, as :func:`run_scan` passes it to its ``progress`` callback.

    The first event comes once the work is planned (``site_id`` None); then one event per licence
    as it is skipped (up to date), stored or failed, so every licence of the request is reported
    once, except those a resumed scan had already stored (counted in ``done`` from the first event
    on); and an event with ``site_id`` None for each finished unit that finished no licence (a tile
    whose licence waits for its other tiles).
    """

    scan_id: int
    total: int  # licences in the request
    done: int  # licences finished so far: stored, failed, skipped, or stored before a resume
    failed: int  # licences failed so far
    units_done: int  # work units (dask tasks) of this run finished so far
    units: int  # work units of this run
    site_id: str | None = None  # the licence this event reports
    outcome: str | None = None  # what happened to it: "stored", "failed" or "skipped"


#: What :func:`run_scan` calls with each :class:`ScanProgress`.
ProgressCallback = Callable[[ScanProgress], None]


def _threads() -> int:
    """Threads of the in-process cluster (no --workers, no --scheduler)."""
    return min(4, os.cpu_count() or 1)


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, keep_memory: bool = True) -> Iterator[Client]:
    """A dask.distributed client.

    ``scheduler``: connect to an existing cluster; ``workers``: a LocalCluster of that many
    single-threaded worker processes, which keep the memory they free for their next unit when
    ``keep_memory`` (gmsense.batch.workers); neither: threads in this process.
    """
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(DASK_LOG_LEVEL)
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise GmsenseError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from None
        with client:
            yield client
        return
    if workers:
        cluster = local_cluster(workers, keep_memory, silence_logs=DASK_LOG_LEVEL)
        with cluster, Client(cluster) as client:
            yield client
        return
    cluster = LocalCluster(n_workers=1, threads_per_worker=_threads(), processes=False,
                           dashboard_address=":0", silence_logs=DASK_LOG_LEVEL)
    # In-process workers share this process's dask config: units set the local threaded
    # scheduler and its threads (see _with_retries); restore the caller's afterwards.
    caller = {key: dask.config.get(key, None) for key in ("scheduler", "num_workers")}
    with dask.config.set(caller), cluster, Client(cluster) as client:
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


def _with_retries(settings: Settings, func: Any, *args: Any, threads: int = 1) -> Any:
    """``func(*args)``, retried with back-off after transient errors (see is_transient).

    Runs on a worker. Lazy (dask) imagery inside a unit is computed with ``threads`` local threads
    (the unit's share of the cores), never sent back to the cluster: a unit waiting for sub-tasks
    that need the thread it holds would deadlock once every thread runs a unit.
    """
    dask.config.set({"scheduler": "threads", "num_workers": max(1, threads)})
    rng = random.Random()
    for retry in range(settings.scan.retries + 1):
        try:
            return func(*args)
        except Exception as exc:
            if retry == settings.scan.retries or not is_transient(exc):
                raise
            time.sleep(backoff_delay(retry, settings.scan.retry_base_delay_s, settings.scan.retry_max_delay_s, rng))
    raise AssertionError("unreachable")  # pragma: no cover


def analyse_with_retries(site: Site, request: ScanRequest, threads: int = 1) -> Any:
    """One licence's analysis (detection in ``threads`` threads), retried with back-off after
    transient errors."""
    layers = request.layers_of(site)
    extra = {"layers": layers} if layers else {}
    return _with_retries(request.settings, partial(analyse_site, threads=threads, **extra), site, request.source,
                         request.settings, request.start, request.end, request.works_of(site.site_id),
                         request.classifier, threads=threads)


def analyse_group(request: ScanRequest, threads: int = 1) -> list[tuple[str, Any, str | None]]:
    """Several small licences (``request.sites``) in one task: (licence id, result or None, error or
    None) each; one licence's failure does not stop the others."""
    out: list[tuple[str, Any, str | None]] = []
    for site in request.sites:
        try:
            out.append((site.site_id, analyse_with_retries(site, request, threads), None))
        except Exception as exc:  # recorded per licence
            out.append((site.site_id, None, _describe(exc)))
    return out


def analyse_tile_with_retries(site: Site, tile: Tile, request: ScanRequest, context: SceneContext | None = None,
                              threads: int = 1, loaded: LoadedTile | None = None) -> TileResult:
    """One tile of a large licence, retried with back-off after transient errors. ``loaded``: the
    tile already read (:func:`gmsense.batch.tiles.load_tile`)."""
    return _with_retries(request.settings, partial(analyse_tile, threads=threads, loaded=loaded), site, tile,
                         request, context, threads=threads)


def tile_sample_with_retries(site: Site, tile: Tile, request: ScanRequest,
                             loaded: LoadedTile | None = None) -> SceneSample:
    """The first pass over one tile (its share of the licence's scene sample), with retries."""
    return _with_retries(request.settings, tile_sample, site, tile, request, loaded)


def load_tile_with_retries(site: Site, tile: Tile, request: ScanRequest, threads: int = 1) -> LoadedTile:
    """One tile read into memory (in ``threads`` threads) and its season masked, with retries (held
    by the cluster until the tile's analysis: see gmsense.batch.tiles.LoadedTile)."""
    return _with_retries(request.settings, load_tile, site, tile, request, threads=threads)


def _shared(value: Any) -> Any:
    """The value itself: the task that puts a large object (the classifier) on the cluster once."""
    return value


def _on_worker(func: Any, request: ScanRequest, classifier: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(*args, request=request, **kwargs)`` on a worker, the request given back its classifier
    (sent once per scan as its own task: see :class:`_Tasks`)."""
    if classifier is not None:
        request = replace(request, classifier=classifier)
    return func(*args, request=request, **kwargs)


class _Tasks:
    """Submits a scan's tasks: the classifier once, each tiled licence's first pass and context,
    each unit. A task carries the request narrowed to its licences and without the classifier (a
    model of megabytes would travel inside every task; it goes once, as a task whose result
    the units take, recomputed if the worker that holds it dies)."""

    def __init__(self, client: Client, request: ScanRequest, scan_id: int, threads: int) -> None:
        self.client, self.request, self.scan_id, self.threads = client, request, scan_id, threads
        self.classifier = None
        if request.classifier is not None:
            # Large by design, and sent once: distributed's warning about large graphs is for repeats.
            with dask.config.set({"distributed.admin.large-graph-warning-threshold": "1GB"}):
                self.classifier = client.submit(_shared, request.classifier, key=self._key("classifier"), pure=False)
        self.contexts: dict[str, Future] = {}
        self.loaded: dict[str, dict[str, Future]] = {}  # licence id -> unit name -> its LoadedTile

    def _key(self, name: str) -> str:
        return f"{name}-{self.scan_id}-{uuid.uuid4().hex[:8]}"

    def _mine(self, unit: WorkUnit) -> ScanRequest:
        return replace(self.request.only(unit.sites), classifier=None)

    def contexts_for(self, units: list[WorkUnit]) -> None:
        """For every tiled licence, a future of its scene statistics: a first pass over each of its
        tiles, then their merge (gmsense.detect.context.merge_samples)."""
        samples: dict[str, list[Future]] = {}
        for unit in units:
            if unit.tile is not None:
                site = unit.sites[0]
                loaded = None
                if unit.hold:
                    loaded = self.client.submit(_on_worker, load_tile_with_retries, self._mine(unit), None, site,
                                                unit.tile, threads=self.threads, key=self._key(f"read-{unit.name}"),
                                                pure=False)
                    self.loaded.setdefault(site.site_id, {})[unit.name] = loaded
                samples.setdefault(site.site_id, []).append(self.client.submit(
                    _on_worker, tile_sample_with_retries, self._mine(unit), None, site, unit.tile, loaded=loaded,
                    key=self._key(f"sample-{unit.name}"), pure=False))
        self.contexts = {site_id: self.client.submit(merge_samples, parts, self.request.settings,
                                                     key=self._key(f"context-{site_id}"), pure=False)
                         for site_id, parts in samples.items()}

    def unit(self, unit: WorkUnit) -> Future:
        """The task that runs ``unit`` on a worker; a tile also gets its licence's scene statistics."""
        mine, key = self._mine(unit), self._key(f"unit-{unit.name}")
        if unit.tile is not None:
            site = unit.sites[0]
            return self.client.submit(_on_worker, analyse_tile_with_retries, mine, self.classifier, site, unit.tile,
                                      context=self.contexts.get(site.site_id), threads=self.threads, key=key,
                                      loaded=self.loaded.get(site.site_id, {}).get(unit.name), pure=False)
        if len(unit.sites) > 1:
            return self.client.submit(_on_worker, analyse_group, mine, self.classifier, threads=self.threads, key=key,
                                      pure=False)
        return self.client.submit(_on_worker, analyse_with_retries, mine, self.classifier, unit.sites[0],
                                  threads=self.threads, key=key, pure=False)

    def done_with(self, site_id: str) -> None:
        """A tiled licence is stored or failed: its scene statistics and held tiles need not survive a lost
        worker."""
        context = self.contexts.pop(site_id, None)
        if context is not None:
            context.release()
        for loaded in self.loaded.pop(site_id, {}).values():
            loaded.release()


def _killed_message(exc: KilledWorker, attempts: int) -> str:
    """A licence's error after its unit ended in KilledWorker ``attempts`` times."""
    return (f"the dask workers running it kept dying: {exc.allowed_failures + 1} workers died while running task "
            f"{exc.task!r} (the scheduler's distributed.scheduler.allowed-failures is {exc.allowed_failures}; "
            f"the scan tried the unit {attempts} time(s)); a unit that kills every worker it runs on is usually "
            f"out of memory: lower --memory-limit, or give the workers more memory (their logs say why they died)")


def process_slots(client: Client, options: ScanOptions) -> int:
    """Worker processes that run units side by side: ``--workers``, a remote cluster's workers, or 1
    for the in-process cluster (its threads share one interpreter lock, so a licence cut into tiles
    there would not run faster; its units use the cores as detector threads instead)."""
    if options.workers:
        return options.workers
    if options.scheduler:
        return max(1, len(client.nthreads()))
    return 1


def threads_per_unit(n_units: int, concurrent: int, cores: int) -> int:
    """Threads for detection inside each unit: the ``cores`` the ``concurrent`` task slots leave
    idle when there are fewer units than slots (one large licence uses every core)."""
    return max(1, cores // max(1, min(n_units, concurrent)))


def _up_to_date(sites: list[Site], request: ScanRequest, keys: dict[str, str], store: Store) -> dict[str, str]:
    """Licences whose newest available acquisition was already analysed: id -> that date."""
    analysed = store.last_analysed(keys)
    skip = {}
    for site in sites:
        if site.site_id not in analysed:
            continue
        latest = request.source.latest_date(site, request.start, request.end)
        if latest is not None and latest <= analysed[site.site_id]:
            skip[site.site_id] = analysed[site.site_id]
    return skip


def check_dates(start: str | None, end: str | None, names: tuple[str, str] = ("start", "end")) -> None:
    """Refuse dates that are not real ISO calendar dates (``YYYY-MM-DD``) or a start after the end.

    Called before anything touches the store, so bad dates leave no scan or licence rows behind.
    ``names``: what to call the two dates in the message (the command line passes its flags).
    """
    parsed: dict[str, date] = {}
    for name, value in zip(names, (start, end), strict=True):
        if value is None:
            continue
        if not _ISO_DATE.fullmatch(value.strip()):
            raise InputError(f"{name} {value!r} is not a date in the form YYYY-MM-DD (e.g. 2021-05-01)")
        try:
            parsed[name] = date.fromisoformat(value.strip())
        except ValueError as exc:
            raise InputError(f"{name} {value!r} is not a real calendar date ({exc})") from None
    if len(parsed) == 2 and parsed[names[0]] > parsed[names[1]]:
        raise InputError(f"{names[0]} {start} is after {names[1]} {end}; the first date must not be after the last")


def scan_owner() -> dict[str, Any]:
    """This process as the owner of a scan (recorded in its params; see :func:`owner_alive`)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex, "heartbeat": time.time()}


def owner_alive(owner: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether the process that runs a scan may still be running it.

    On this host the process table decides (a dead pid: killed; this process: not another one);
    a live pid counts only with a recent heartbeat (pids are reused). On another host only the
    heartbeat can tell: one newer than :data:`STALE_AFTER_S` seconds means alive.
    """
    if not owner:
        return False
    now = time.time() if now is None else now
    fresh = now - float(owner.get("heartbeat") or 0.0) < STALE_AFTER_S
    if owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        if not isinstance(pid, int) or pid == os.getpid() or not psutil.pid_exists(pid):
            return False
    return fresh


def _describe_request_difference(row: Any, described: dict[str, Any]) -> str:
    theirs = (row.params or {}).get("request")
    if not theirs:
        return f"scan {row.id} ({row.status}) was started by an older gmsense that did not record what it scanned"
    names = {"licences": "other licences", "imagery": "other imagery", "source": "another source",
             "start": "another start date", "end": "another end date", "config_hash": "other settings",
             "detector": "another detector", "model_version": "another model", "works": "other work programmes"}
    diffs = [text for field_name, text in names.items() if theirs.get(field_name) != described.get(field_name)]
    sites_file = (row.params or {}).get("sites_file")
    return (f"scan {row.id} ({row.status}{', ' + sites_file if sites_file else ''}) had "
            + (", ".join(diffs) or "another request"))


def _resumable(store: Store, described: dict[str, Any]) -> Any:
    """The newest unfinished scan of the request ``described`` (:meth:`ScanRequest.describe`) that no live
    process is running; InputError if none."""
    unfinished = store.unfinished_scans()
    matching = [row for row in unfinished if ((row.params or {}).get("request") or {}).get("key") == described["key"]]
    if not matching:
        others = "; ".join(_describe_request_difference(row, described) for row in unfinished[:3])
        raise InputError("there is no interrupted, failed or partial scan of these licences with these dates, "
                         "imagery, source and settings to resume; run without --resume"
                         + (f" (unfinished scans of other requests: {others})" if others else ""))
    previous = matching[0]
    owner = (previous.params or {}).get("owner")
    if previous.status == "running" and owner_alive(owner):
        age = time.time() - float(owner.get("heartbeat") or 0.0)
        raise InputError(
            f"scan {previous.id} of these licences is still running (process {owner.get('pid')} on "
            f"{owner.get('host')}, alive {age:.0f} s ago); two processes must not run one scan: wait for it to "
            f"finish, or stop it and resume (a scan whose process is gone on another host can be resumed "
            f"{STALE_AFTER_S:.0f} s after its last sign of life)")
    return previous


def _heartbeat(store: Store, scan_id: int, token: str) -> tuple[threading.Thread, threading.Event]:
    """A daemon thread recording, every :data:`HEARTBEAT_S` s, that this process still runs the scan."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                store.touch_scan(scan_id, token, time.time())
            except Exception:  # a busy database delays one beat; the next one retries
                logging.getLogger(__name__).debug("heartbeat of scan %s failed", scan_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"gmsense-scan-{scan_id}-heartbeat", daemon=True)
    thread.start()
    return thread, stop


def run_scan(request: ScanRequest, store: Store, *, options: ScanOptions | None = None,
             progress: ProgressCallback | None = None) -> ScanSummary:
    """Scan every licence of ``request`` and store the results; returns the summary (also stored with the scan).

    Incremental: a licence whose newest available acquisition was already analysed with the
    same settings is skipped (``options.force`` scans it anyway). ``options.resume`` continues the
    newest scan of the same request (licences by content, source, imagery, dates, settings,
    detector, model and work programmes; see :meth:`ScanRequest.describe`) that did not complete:
    licences it already stored are kept, the rest are scanned. Without such a scan, or when its
    process is still alive (:func:`owner_alive`), it raises InputError and writes nothing.
    ``options.memory_limit``: bytes one task may use; peak memory is about the number of
    concurrent tasks times this (see :class:`ScanOptions`).

    ``progress``: called in this process with a :class:`ScanProgress` as the scan advances (every
    licence once); None reports nothing. An error it raises ends the scan like any other.

    Bad dates (:func:`check_dates`) raise InputError before anything is written. Once the scan
    row exists, any error ends it as ``failed`` with the error; only a killed process leaves it
    ``running`` (for ``resume``).
    """
    options = options or ScanOptions()
    check_dates(request.start, request.end)
    settings = request.settings
    keys = {site.site_id: request.unit_key(site) for site in request.sites}
    described = request.describe()
    owner = scan_owner()
    if options.resume:
        previous = _resumable(store, described)
        claimed = store.claim_scan(previous.id, owner, ((previous.params or {}).get("owner") or {}).get("token"))
        if claimed is None:
            raise InputError(f"scan {previous.id} was just resumed by another process; leave it to that one")
        scan_id = claimed.id
        done = store.done_sites(scan_id)
        summary = ScanSummary(scan_id, "running", dict((previous.summary or {}).get("sites", {})))
        for site_id in list(summary.sites):
            if site_id not in done:
                del summary.sites[site_id]
    else:
        scan_id = store.begin_scan(source=request.source.name, detector=request.detector,
                                   config_hash=settings.config_hash(), gmsense_version=__version__,
                                   model_version=request.model_version,
                                   params={"start": request.start, "end": request.end,
                                           "n_sites": len(request.sites), "imagery": request.imagery,
                                           **options.params, "settings": settings.model_dump(mode="json"),
                                           "request": described, "owner": owner})
        done = set()
        summary = ScanSummary(scan_id, "running")
    beat, stop_beat = _heartbeat(store, scan_id, owner["token"])
    try:
        return _run(request, options, store, scan_id, summary, done, keys, progress)
    except BaseException as exc:
        error = "scan interrupted" if isinstance(exc, KeyboardInterrupt) else _describe(exc)
        try:
            store.finish_scan(scan_id, "failed", {"sites": summary.sites, "error": error})
        except Exception:  # the store itself failing: the original error is the one to report
            logging.getLogger(__name__).warning("could not mark scan %s failed", scan_id, exc_info=True)
        raise
    finally:
        stop_beat.set()
        beat.join(timeout=5)


def _run(request: ScanRequest, options: ScanOptions, store: Store, scan_id: int, summary: ScanSummary,
         done: set[str], keys: dict[str, str], progress: ProgressCallback | None) -> ScanSummary:
    """The body of :func:`run_scan` once its scan row exists."""
    sites, settings = list(request.sites), request.settings
    store.upsert_sites(sites)
    skipped = {} if options.force else _up_to_date([s for s in sites if s.site_id not in done], request, keys, store)
    for site_id, last in skipped.items():
        summary.sites[site_id] = {"patches": 0, "by_class": {}, "area_m2": 0.0, "flags": 0,
                                  "skipped": f"up to date (analysed through {last})"}
    todo = [s for s in sites if s.site_id not in done and s.site_id not in skipped]
    with dask_client(options.workers, options.scheduler, request.settings.scan.keep_worker_memory) as client:
        concurrent = options.workers or (1 if options.scheduler else _threads())
        units = plan(todo, settings, options.memory_limit or default_memory_limit(concurrent),
                     start=request.start, end=request.end, source=request.source,
                     slots=process_slots(client, options))
        # Only the in-process cluster's cores are known here; a remote cluster's units use one thread.
        threads = 1 if options.scheduler else threads_per_unit(len(units), concurrent, available_cores())
        by_id = {s.site_id: s for s in todo}
        tiles_back: dict[str, list[TileResult]] = {}
        finished: set[str] = set()
        outcomes: list[tuple[str, str]] = []  # (licence id, outcome) not yet reported
        count = {"done": len(sites) - len(todo) - len(skipped), "failed": len(summary.failures), "units_done": 0}

        def report(site_id: str | None = None, outcome: str | None = None) -> None:
            count["done"] += site_id is not None
            count["failed"] += outcome == "failed"
            if progress is not None:
                progress(ScanProgress(scan_id, len(sites), count["done"], count["failed"], count["units_done"],
                                      len(units), site_id, outcome))

        def save(site_id: str, result: Any) -> None:
            # What the store holds for the licence (patches, classes, area, flags), not what the result
            # listed: detections that extend one stored patch count once, as in the store.
            counts = store.save_site_result(scan_id, result, keys[site_id], request.licence_version(site_id))
            for key in ("coverage_warning", "imagery_warning"):
                if result.stats.get(key):
                    log.warning("licence %s: %s", site_id, result.stats[key])
            summary.sites[site_id] = {
                **counts, **{k: result.stats[k] for k in SUMMARY_STATS if k in result.stats},
            }
            finished.add(site_id)
            outcomes.append((site_id, "stored"))

        def fail(site_id: str, message: str) -> None:
            if site_id in finished:
                return
            store.record_failure(scan_id, site_id, message, keys[site_id])
            summary.sites[site_id] = {"error": message}
            finished.add(site_id)
            outcomes.append((site_id, "failed"))

        def handle(unit: WorkUnit, value: Any) -> None:
            if unit.tile is not None:
                site_id = unit.sites[0].site_id
                if site_id in finished:
                    return
                tiles_back.setdefault(site_id, []).append(value)
                if len(tiles_back[site_id]) == unit.tile.count:
                    site = by_id[site_id]
                    save(site_id, merge_tiles(site, tiles_back.pop(site_id), settings, request.works_of(site_id),
                                              request.layers_of(site)))
            elif len(unit.sites) > 1:
                for site_id, result, error in value:
                    if error is not None:
                        fail(site_id, error)
                    else:
                        save(site_id, result)
            else:
                save(unit.sites[0].site_id, value)

        tasks = _Tasks(client, request, scan_id, threads)
        tasks.contexts_for(units)
        futures = {tasks.unit(unit): unit for unit in units}
        retried: dict[str, int] = {}  # unit key -> retries after KilledWorker
        report()
        for site_id in skipped:
            report(site_id, "skipped")
        pending = as_completed(futures)
        for future in pending:
            unit = futures[future]
            try:
                value = future.result()
            except KilledWorker as exc:
                # The scheduler already re-ran the unit after each lost worker (allowed-failures):
                # retry it (and its first passes, if they were the ones killed) a few times more.
                attempts = retried.get(future.key, 0)
                if attempts < settings.scan.retries and not all(s.site_id in finished for s in unit.sites):
                    retried[future.key] = attempts + 1
                    log.warning("unit %s: its workers died %d times; retrying it", unit.name,
                                exc.allowed_failures + 1)
                    client.retry([future])
                    pending.add(future)
                    continue
                for site in unit.sites:
                    fail(site.site_id, _killed_message(exc, attempts + 1))
            except Exception as exc:  # one licence's failure must not stop the scan
                for site in unit.sites:
                    fail(site.site_id, _describe(exc))
            else:
                try:
                    handle(unit, value)
                except Exception as exc:  # merging tiles or storing one licence
                    for site in unit.sites:
                        fail(site.site_id, _describe(exc))
            future.release()
            # Reported outside the handling above: an error of the callback ends the scan.
            count["units_done"] += 1
            for site_id, outcome in outcomes:
                tasks.done_with(site_id)
                report(site_id, outcome)
            if not outcomes:
                report()
            outcomes.clear()
    n_failed = len(summary.failures)
    summary.status = "completed" if n_failed == 0 else ("failed" if n_failed == len(sites) else "partial")
    store.finish_scan(scan_id, summary.status, {"sites": summary.sites})
    return summary
