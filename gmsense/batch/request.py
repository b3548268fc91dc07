"""What a scan is asked to do (:class:`ScanRequest`) and how it is run (:class:`ScanOptions`).

The request is the work: licences, the imagery source, settings, dates, approved work programmes
and the model that labels patches. It is exactly what ``--resume`` matches: two scans of equal
requests do the same work, and :meth:`ScanRequest.describe` (stored with every scan) says so with
its ``key``. The options say how the work is cut and scheduled (workers, the memory budget of a
task) and whether to resume or rescan; they never enter the key.

A request travels to the dask workers inside every task, narrowed to the task's licences
(:meth:`ScanRequest.only`), so it is a frozen, picklable dataclass::

    request = ScanRequest(sites, get_source("synthetic", settings), settings, start="2020-04-01")
    summary = run_scan(request, Store("scans.db"), options=ScanOptions(workers=4))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from gmsense.classify.model import PatchClassifier
from gmsense.config import Settings
from gmsense.geo.layers import LayerSet
from gmsense.geo.sites import WGS84, ApprovedWork, Site, reproject_geometry
from gmsense.sources import Source


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ScanRequest:
    """The work of one scan.

    ``sites``: the licences (any iterable; kept as a tuple). ``source``: where the imagery comes
    from (:func:`gmsense.sources.get_source`). ``start``/``end``: inclusive ISO dates
    (``YYYY-MM-DD``), None for the source's whole range. ``works``: approved work programmes per
    licence id (:func:`gmsense.geo.sites.read_works`); None when no programme was given.
    ``classifier``: the trained model that labels the patches (:func:`gmsense.classify.model.load_model`);
    None for the rule baseline. ``imagery``: the imagery path as the caller names it (the command
    line resolves it), recorded with the scan for reports and part of what ``--resume`` matches.
    ``licence_versions``: for licences from the store's register (``scan --all-active``), licence id
    -> (version, content digest) of the version scanned (gmsense.geo.licences); the flags record the
    version, and the digest enters the licence's unit key, so a changed licence is scanned again in
    full. None for licences read from a --sites file.
    ``layers``: the protected-land layers the rules check (gmsense.geo.layers; the store's current
    versions, read by the caller before the scan: workers never read the database); each task takes
    only the features near its licences. The versions of the layers near a licence enter its unit
    key, so a new version of such a layer has the licence scanned again. None: no layer is checked.
    """

    sites: tuple[Site, ...]
    source: Source
    settings: Settings
    start: str | None = None
    end: str | None = None
    works: dict[str, list[ApprovedWork]] | None = None
    classifier: PatchClassifier | None = None
    imagery: str | None = None
    licence_versions: dict[str, tuple[int, str]] | None = None
    layers: LayerSet | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))

    @property
    def detector(self) -> str:
        """``"model"`` when a classifier labels the patches, else ``"rules"``."""
        return "model" if self.classifier is not None else "rules"

    @property
    def model_version(self) -> str | None:
        """The classifier's ``name@version``, None for the rule baseline."""
        return self.classifier.version if self.classifier is not None else None

    def works_of(self, site_id: str) -> list[ApprovedWork] | None:
        """The approved works of one licence; None when the request has no programmes or none for it."""
        return self.works.get(site_id) if self.works else None

    def only(self, sites: Iterable[Site]) -> ScanRequest:
        """The same request for ``sites`` only (with only their work programmes): what one task
        takes to its worker. Its :meth:`describe` is not the scan's; that of the whole request is."""
        sites = tuple(sites)
        works = None
        if self.works is not None:
            works = {s.site_id: self.works[s.site_id] for s in sites if s.site_id in self.works}
        versions = None
        if self.licence_versions is not None:
            versions = {s.site_id: ref for s in sites if (ref := self.licence_versions.get(s.site_id)) is not None}
        layers = None
        if self.layers:
            layers = self.layers.near(unary_union([self._area_wgs84(s) for s in sites])) if sites else LayerSet()
        return replace(self, sites=sites, works=works, licence_versions=versions, layers=layers)

    def _area_wgs84(self, site: Site) -> BaseGeometry:
        """The licence's monitoring area in EPSG:4326, grown by a little (the analysis clips the
        layers to 1 km around it in its own CRS: gmsense.geo.layers.LayerSet.localised)."""
        return reproject_geometry(site.buffered(self.settings.sites.buffer_m + 1000.0), site.crs, WGS84)

    def layers_of(self, site: Site) -> LayerSet | None:
        """The protected-land layers near one licence (only their features near it); None when the
        request checks none."""
        return self.layers.near(self._area_wgs84(site)) if self.layers else None

    def licence_version(self, site_id: str) -> int | None:
        """The register version of a licence the request scans; None for a licence from a --sites file."""
        ref = (self.licence_versions or {}).get(site_id)
        return ref[0] if ref else None

    def unit_key(self, site: Site) -> str:
        """What makes two analyses of a licence the same work: licence, source, settings, detector
        and model, start; for a licence of the register also its content (the version's digest),
        so a new version of a licence is scanned again in full.

        The end date is not part of it: a later periodic scan of the same licence continues the
        same series, and only dates newer than the last analysed one make it worth scanning again.
        (Keys of licences from --sites files are as older gmsense computed them: the stored scans
        stay incremental.)
        """
        parts: list[Any] = [site.site_id, self.source.name, self.settings.config_hash(), self.detector,
                            self.model_version, self.start or ""]
        ref = (self.licence_versions or {}).get(site.site_id)
        if ref is not None:
            parts.append(ref[1])
        near = self.layers_of(site)
        if near:  # the versions of the layers around it (a licence no layer touches keeps its key)
            parts.append(["layers", [list(r) for r in near.refs()]])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        """What the scan was asked to do, with its ``key``: only a scan of the same request is resumed.

        The licences count by content (ids, polygons, attributes), not by file name; imagery is the
        path as given; works by content. Stored with the scan: its form and digests must not change,
        or scans already in a store could not be resumed.
        """
        licences = sorted([site.site_id, site.geometry_wgs84.wkb_hex, site.attrs] for site in self.sites)
        programme = None
        if self.works is not None:
            programme = sorted([w.site_id, w.work_id, w.work_type, w.year, w.geometry.wkb_hex, w.crs.to_string()]
                               for items in self.works.values() for w in items)
        request = {"licences": _digest(licences), "n_sites": len(self.sites), "source": self.source.name,
                   "imagery": self.imagery, "start": self.start, "end": self.end,
                   "config_hash": self.settings.config_hash(), "detector": self.detector,
                   "model_version": self.model_version,
                   "works": _digest(programme) if programme is not None else None}
        if self.layers:  # only then: the requests of scans without layers keep their key
            request["layers"] = _digest(self.layers.refs())
        return {**request, "key": _digest(request)}


@dataclass(frozen=True)
class ScanOptions:
    """How a scan runs: how the work is cut and scheduled, and whether to resume or rescan (none of it
    is part of the request's key).

    ``workers``: a ``distributed.LocalCluster`` of that many single-threaded processes;
    ``scheduler``: the address of an existing dask scheduler (``tcp://HOST:PORT``); neither: threads
    in this process. ``memory_limit``: bytes one task may use (default: half the machine's memory
    over the tasks that run at once); licences above it are scanned in tiles, small ones in groups
    (:mod:`gmsense.batch.planner`). ``resume``: continue the newest unfinished scan of the same
    request. ``force``: rescan licences that are up to date. ``params``: extra entries recorded
    in the scan's params (the command line records ``sites_file`` and ``works_file``).
    """

    workers: int | None = None
    scheduler: str | None = None
    memory_limit: int | None = None
    resume: bool = False
    force: bool = False
    params: dict[str, Any] = field(default_factory=dict)
