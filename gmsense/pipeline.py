"""One licence, end to end: cube -> breaks -> patches -> classes -> recovery -> flags.

:func:`analyse_site` is what each dask task runs. It returns a :class:`SiteResult` and writes
nothing; the scan hands results to the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyproj
import shapely
import xarray as xr
from affine import Affine
from shapely.geometry.base import BaseGeometry

from gmsense.classify.baseline import classify_patch
from gmsense.classify.model import PatchClassifier
from gmsense.classify.trust import trusted_label
from gmsense.config import Settings
from gmsense.cube import ops as cubeops
from gmsense.cube.contract import CUBE_BANDS
from gmsense.detect.change import detect_breaks
from gmsense.detect.context import SceneContext, SceneSample, merge_samples, sample_step, scene_sample
from gmsense.detect.features import add_patch_context, add_patch_spectra
from gmsense.detect.lines import add_line_breaks
from gmsense.detect.patches import Patch, extract_patches
from gmsense.errors import ImageryError, NoObservationsError
from gmsense.flags import evaluate
from gmsense.geo.coverage import coverage_stats, observed_counts
from gmsense.geo.grid import grid_transform
from gmsense.geo.layers import LayerSet
from gmsense.geo.sites import WGS84, ApprovedWork, Site, reproject_geometry
from gmsense.records import PatchRecord, SiteResult
from gmsense.recovery import recovery_status, ring_exclusion, ring_mask, ring_outlines, trajectory
from gmsense.sources import Source

#: What a licence's stats say when its imagery was min-max rescaled per image (the local source's check).
RESCALED_IMAGERY = ("the imagery's values look min-max rescaled per image, not reflectance: breaks are found, but "
                    "the reflectance signatures (fire, water, bare soil) and the learned model do not hold on them, "
                    "so labels lean to uncertain")


DETECTION_INDEX = "ndvi"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _iso(value: np.datetime64) -> str:
    return str(np.datetime64(value, "D")) if not np.isnat(value) else ""


def _cube_crs(cube: xr.Dataset, site_id: str) -> pyproj.CRS:
    crs = cube.rio.crs
    if crs is None:
        raise ImageryError(f"imagery for licence {site_id} has no CRS; write one (rioxarray: ds.rio.write_crs)")
    return pyproj.CRS.from_user_input(crs)


def _image_ids(season: xr.Dataset, attrs: dict) -> list[str]:
    """An identifier per acquisition: the file(s) it came from, else source and date."""
    if "image_id" in season.coords:
        return [str(v) for v in season["image_id"].values]
    prefix = attrs.get("source", "imagery")
    if prefix == "synthetic":
        prefix = f"synthetic:seed{attrs.get('seed', 0)}"
    return [f"{prefix}:{_iso(t)}" for t in season["time"].values]


def _evidence(times: np.ndarray, clear_share: np.ndarray, patch: Patch, image_ids: list[str]) -> dict:
    """The observations a patch rests on: the last mostly clear one before it, the first that
    showed it and the one that confirmed it (dates and image identifiers)."""
    before = np.flatnonzero((times < patch.first_detected) & (clear_share >= 0.5))
    out: dict[str, str] = {}
    if before.size:
        out["before_date"], out["before_image"] = _iso(times[before[-1]]), image_ids[before[-1]]
    for name, when in (("after", patch.first_detected), ("confirm", patch.confirmed_on)):
        hit = np.flatnonzero(times == when)
        if hit.size:
            out[f"{name}_date"], out[f"{name}_image"] = _iso(when), image_ids[hit[0]]
    return out


def _sequence(pmask: np.ndarray, dates: np.ndarray | None, later: bool) -> dict:
    """How a patch (``pmask``, y x) sits in its ground's sequence of disturbances. For a later
    disturbance (``later``; ``dates`` (y, x) the pixels' ``first_detected``): ``earlier_disturbance``,
    the earliest first detection under it. For a first one (``dates`` the pixels' ``disturbed_again``,
    gmsense.detect.change.later_breaks): ``disturbed_again``, the earliest date its ground was
    disturbed again, and ``disturbed_again_share``, the share of its pixels that were. ISO dates;
    empty when there is no other disturbance."""
    if dates is None:
        return {}
    inside = dates[pmask]
    inside = inside[~np.isnat(inside)]
    if inside.size == 0:
        return {}
    if later:
        return {"earlier_disturbance": _iso(inside.min())}
    return {"disturbed_again": _iso(inside.min()), "disturbed_again_share": round(inside.size / int(pmask.sum()), 4)}


def _season_source(cube: xr.Dataset, dates: np.ndarray) -> tuple[xr.Dataset, np.ndarray | slice]:
    """Where to read the growing season from, and its dates there: a numpy-backed cube as it is
    (nothing copied); a lazy (dask) one loaded once, growing-season dates only."""
    if any(cube[v].chunks is not None for v in cube.data_vars):
        return cube.isel(time=dates).load(), slice(None)
    return cube, dates


@dataclass(frozen=True)
class _PatchFollowing:
    """What following one patch needs (its monitoring area, reference ring, recovery, evidence):
    the licence and its monitoring area (``region``), every patch's geometry and their
    :func:`gmsense.recovery.ring_exclusion`, the index ``values`` (T, y, x) on ``times`` and its grid
    ``transform``, the latest season, the acquisitions' identifiers, and the breaks' ``again``
    (``disturbed_again``; None without later disturbances) and ``first_dates`` (``first_detected``)."""

    licence: BaseGeometry
    region: BaseGeometry
    all_geoms: list[BaseGeometry]
    exclusion: BaseGeometry | None
    transform: Affine
    values: np.ndarray
    times: np.ndarray
    latest_season: int
    image_ids: list[str]
    again: np.ndarray | None
    first_dates: np.ndarray
    settings: Settings

    def follow(self, patch: Patch, patch_labels: np.ndarray, is_later: bool,
               ring_outline: BaseGeometry | None = None) -> tuple | None:
        """The patch's part of the monitoring area, its record's dates, area and recovery fields,
        its evidence and its sequence metrics; None for a patch (almost) outside the area.
        ``ring_outline``: its reference ring's shape (:func:`gmsense.recovery.ring_outlines`)."""
        settings = self.settings
        geom = patch.geometry.intersection(self.region)
        if geom.is_empty or geom.area < settings.detect.min_patch_m2:
            return None
        pmask = patch_labels == patch.label
        ring = ring_mask(patch.geometry, self.all_geoms, pmask.shape, self.transform, self.exclusion, ring_outline)
        # A first disturbance's ground disturbed again is followed up to the new disturbance
        # (gmsense.recovery); the later one from its own detection.
        until = self.again if self.again is not None and not is_later else None
        obs = trajectory(self.values, self.times, pmask, ring, patch.first_detected, DETECTION_INDEX, until,
                         settings.season)
        status, ratio = recovery_status(obs, patch.first_detected, self.latest_season, settings.recovery,
                                        settings.season)
        inside = self.values[:, pmask]
        seen = np.isfinite(inside).any(axis=1)
        evidence = _evidence(self.times, np.isfinite(inside).mean(axis=1), patch, self.image_ids)
        outside = geom.difference(self.licence).area
        fields = {"first_detected": _iso(patch.first_detected), "confirmed_on": _iso(patch.confirmed_on),
                  "last_seen": _iso(self.times[seen].max()) if seen.any() else _iso(patch.confirmed_on),
                  "area_m2": round(float(geom.area), 1), "inside_licence": bool(outside < 1e-6),
                  "area_outside_m2": round(float(outside), 1), "recovery_status": status, "recovery_ratio": ratio,
                  "recovery": obs}
        return geom, fields, evidence, _sequence(pmask, self.first_dates if is_later else until, is_later)


def season_index(cube: xr.Dataset, settings: Settings, site_id: str,
                 threads: int = 1) -> tuple[xr.Dataset, np.ndarray | slice, xr.Dataset, xr.DataArray]:
    """The growing season of ``cube`` as the detector sees it: where to read the bands from and the
    season's dates there (see :func:`_season_source`), the season with its refined clear mask (not
    refined for annual composites, ``attrs["composite"] == "annual"``: they are made of clear pixels,
    and the haze test misreads composites whose bands are rescaled), and the masked detection index
    (loaded; NaN where not clear). NDVI is masked in one compiled pass per date
    (:func:`gmsense.cube.ops.season_ndvi`, dates among ``threads`` threads) and the season then
    holds only ``clear``."""
    dates = np.flatnonzero(cubeops.in_season(cube["time"], settings.season))
    if dates.size == 0:
        raise ImageryError(
            f"licence {site_id}: no acquisitions fall in the growing season "
            f"(months {settings.season.start_month}-{settings.season.end_month}); "
            "widen the date range (start/end) or the season")
    bands = [b for b in CUBE_BANDS if b in cube]
    source, dates = _season_source(cube[[*bands, "clear"]], dates)
    refine = cube.attrs.get("composite") != "annual"  # composites are made of clear pixels: nothing to refine
    if DETECTION_INDEX == "ndvi" and "nir" in source and "red" in source:
        at = np.arange(source.sizes["time"])[dates]
        clear, ndvi = cubeops.season_ndvi(source, at, settings.mask, refine, threads)
        return source, dates, clear.to_dataset(), ndvi
    # Only the bands masking and the detection index need are copied for the season; the
    # patches' spectra are read from ``source`` patch by patch.
    needed = {"red", "blue", *cubeops.INDEX_BANDS[DETECTION_INDEX]}
    season = source[[b for b in bands if b in needed] + ["clear"]].isel(time=dates)
    if refine:
        season = cubeops.refine_clear(season, settings.mask)
    return source, dates, season, cubeops.masked_index(season, DETECTION_INDEX).load()


def licence_sample(ndvi: xr.DataArray, region: BaseGeometry, core: BaseGeometry | None = None) -> SceneSample:
    """The scene sample (gmsense.detect.context) of the licence whose monitoring area is ``region``
    (the cube's CRS, metres) at the lattice points inside it, and inside the box ``core`` (a
    tile's core) when given, by half-open bounds: a point on the edge between two cores belongs
    to one of them."""
    transform = grid_transform(ndvi)
    step = sample_step(region.area, abs(transform.a * transform.e))

    def keep(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        inside = shapely.contains_xy(region, x, y)
        if core is not None:
            minx, miny, maxx, maxy = core.bounds
            inside &= (x >= minx) & (x < maxx) & (y >= miny) & (y < maxy)
        return inside

    return scene_sample(ndvi, step, keep)


def analyse_cube(site: Site, cube: xr.Dataset, settings: Settings,
                 works: list[ApprovedWork] | None = None, classifier: PatchClassifier | None = None,
                 *, keep_breaks: bool = False, context: SceneContext | None = None,
                 coverage_within: BaseGeometry | None = None, threads: int | None = None,
                 layers: LayerSet | None = None, prepared: tuple[Any, ...] | None = None) -> SiteResult:
    """Detect, classify and follow the disturbances of one licence in its cube.

    ``works``: the licence's approved work programme (None when it has none). ``classifier``:
    a trained model (gmsense.classify.model) that labels the patches; None uses the rule baseline.
    ``keep_breaks``: also return the per-pixel breaks (``SiteResult.breaks``, on the cube's
    grid); scans leave it off, since the breaks would travel back from every worker.
    ``context``: the licence's scene statistics when ``cube`` is one tile of it (see
    gmsense.batch.tiles); None takes them from the monitoring area in ``cube``.
    ``coverage_within``: count coverage (gmsense.geo.coverage) only there, in the licence's CRS (a
    tile's core: tiles' counts add up to the licence's); None counts the whole monitoring area.
    ``threads``: detection works on row blocks in this many threads (the same result); None uses
    every core this process may run on (:func:`available_cores`). ``layers``: protected land
    (gmsense.geo.layers) the rule ``protected_land`` checks the patches against; None checks none.
    ``prepared``: :func:`season_index` of ``cube`` already computed (with ``settings.for_cube``),
    not computed again.

    Annual composites (``cube.attrs["composite"] == "annual"``) are read by the yearly detector
    (``settings.detect_annual``, :meth:`gmsense.config.Settings.for_cube`).

    A later disturbance of ground that broke before (gmsense.detect.change.later_breaks) is a
    patch of its own, after the first disturbances' patches, with its own dates and
    ``metrics["earlier_disturbance"]``; the earlier patch's recovery is followed up to it
    (gmsense.recovery) and its metrics name ``disturbed_again`` (date) and ``disturbed_again_share``.
    """
    settings = settings.for_cube(cube.attrs)  # annual composites: the yearly detector
    crs = _cube_crs(cube, site.site_id)
    local = site.to_crs(crs)
    region = local.buffered(settings.sites.buffer_m)
    bands = [b for b in CUBE_BANDS if b in cube]
    threads = threads or available_cores()
    source, dates, season, ndvi = prepared or season_index(cube, settings, site.site_id, threads)
    values = np.asarray(ndvi.transpose("time", "y", "x").values)
    finite = np.isfinite(values)  # (the clear share and the coverage count read it)
    clear_share = np.count_nonzero(finite) / finite.size  # (the mean of a bool array sums in float64: slower)
    if clear_share == 0:
        raise NoObservationsError(f"licence {site.site_id}: every growing-season observation is cloudy or missing")
    if context is None:
        context = merge_samples([licence_sample(ndvi, region)], settings, threads=threads)
    breaks = add_line_breaks(detect_breaks(ndvi, settings.detect, settings.mask.max_scene_dip, context=context,
                                           threads=threads, season=settings.season).load(),
                             ndvi, settings.detect, settings.season, threads)
    # First disturbances, then later disturbances of ground that broke before (their own patches
    # over the same ground, each in its own label image).
    patches, labels = extract_patches(breaks, settings.detect.min_patch_m2, season=settings.season)
    later, later_labels = extract_patches(breaks, settings.detect.min_patch_m2, later=True, season=settings.season)
    transform = grid_transform(ndvi)
    times = ndvi["time"].values.astype("datetime64[ns]")
    clear = np.asarray(season["clear"].transpose("time", "y", "x").values)
    # On one thread: in threads side by side the features and recoveries (small arrays, Python
    # between them) fought over the interpreter lock and one licence took longer on two cores.
    for group, group_labels, magnitude in ((patches, labels, "magnitude"), (later, later_labels, "rebreak_magnitude")):
        if group:
            add_patch_spectra(group, group_labels, source[bands], clear=clear, time_index=dates,
                              season=settings.season, annual=cube.attrs.get("composite") == "annual",
                              rescaled=bool(cube.attrs.get("rescaled_per_image")))
            add_patch_context(group, group_labels, values, times, np.asarray(breaks[magnitude].values),
                              settings.detect, abs(transform.a), settings.season)

    years = cubeops.season_year(times, settings.season)
    all_geoms = [p.geometry for p in [*patches, *later]]
    exclusion = ring_exclusion(all_geoms) if all_geoms else None
    image_ids = _image_ids(season, cube.attrs)
    again = np.asarray(breaks["disturbed_again"].values) if later else None
    first_dates = np.asarray(breaks["first_detected"].values)
    followed = _PatchFollowing(local.geometry, region, all_geoms, exclusion, transform, values, times, int(years.max()),
                               image_ids, again, first_dates, settings)
    candidates = [*((p, labels, False) for p in patches), *((p, later_labels, True) for p in later)]
    outlines = ring_outlines(all_geoms, exclusion, threads) if all_geoms else []
    recoveries = [followed.follow(*c, outline) for c, outline in zip(candidates, outlines, strict=True)]
    records: list[PatchRecord] = []
    geometries = []
    for (patch, _, _), recovery in zip(candidates, recoveries, strict=True):
        if recovery is None:
            continue
        geom, fields, evidence, sequence = recovery
        klass, confidence = classify_patch(patch, settings.classify)
        records.append(PatchRecord(
            site_id=site.site_id,
            geometry_wkt=reproject_geometry(geom, crs, WGS84).wkt,
            local_wkt=geom.wkt,
            local_crs=crs.to_string(),
            disturbance_class=klass,
            confidence=confidence,
            **fields,
            metrics={"n_pixels": patch.n_pixels, "magnitude": round(patch.magnitude, 4), "evidence": evidence,
                     **sequence, **{k: round(float(v), 4) for k, v in patch.shape.items()},
                     **{k: round(float(v), 4) for k, v in (patch.spectral | patch.context).items()
                        if np.isfinite(v)}},
        ))
        geometries.append(geom)
    stats = {"n_dates": int(cube.sizes["time"]), "n_season_dates": int(season.sizes["time"]),
             "clear_share": round(clear_share, 3), "crs": crs.to_string(),
             "resolution_m": float(abs(transform.a)),
             "first_date": _iso(times.min()), "last_date": _iso(times.max()),
             "last_acquisition": _iso(cube["time"].values.max()),
             "shape": [int(cube.sizes["y"]), int(cube.sizes["x"])]}
    within = None if coverage_within is None else reproject_geometry(coverage_within, site.crs, crs)
    counts = observed_counts(finite.any(axis=0), transform, local.geometry, region, within)
    stats.update(coverage_stats(counts, settings.sites.min_coverage))
    if cube.attrs.get("rescaled_per_image"):
        stats["imagery_warning"] = RESCALED_IMAGERY
    label_patches(records, classifier, settings)
    local_works = [w.to_crs(crs) for w in works] if works is not None else None
    local_layers = layers.localised(crs, region) if layers else None
    flags = evaluate(local, records, geometries, stats["last_date"], settings.rules, local_works, settings.season,
                     local_layers, settings.recovery)
    kept = breaks[["first_detected", "confirmed_on", "magnitude", "line", "rebreak_first_detected",
                   "rebreak_confirmed_on", "rebreak_magnitude"]] if keep_breaks else None
    return SiteResult(site.site_id, records, flags, stats, breaks=kept)


def label_patches(records: list[PatchRecord], classifier: PatchClassifier | None, settings: Settings) -> None:
    """Give each record its trusted label (gmsense.classify.trust): the model's class (the rule
    class kept as ``rule_class``, with an explanation) or the rule baseline's, then ``natural``
    only with a natural agent and ``uncertain`` with its reason when the label cannot be trusted."""
    probabilities: list[dict[str, float] | None] = [None] * len(records)
    domain = None
    if classifier is not None and records:
        features = [r.metrics for r in records]
        probabilities = list(classifier.probabilities(features))
        domain = classifier.training_domain
        for record, probs, why in zip(records, probabilities, classifier.explain(features), strict=True):
            klass = max(probs, key=probs.__getitem__)
            record.metrics["rule_class"] = record.disturbance_class
            record.metrics["explanation"] = why
            record.metrics["class_probabilities"] = {c: round(float(p), 4) for c, p in probs.items()}
            record.disturbance_class, record.confidence = klass, round(probs[klass], 3)
    for record, probs in zip(records, probabilities, strict=True):
        label = trusted_label(record.disturbance_class, record.confidence, record.metrics, settings.trust,
                              probabilities=probs, domain=domain)
        if label.disturbance_class != record.disturbance_class:
            record.metrics["label_before_trust"] = record.disturbance_class
        record.disturbance_class, record.natural_agent = label.disturbance_class, label.natural_agent
        if label.reason:
            record.metrics["label_reason"] = label.reason
        if label.evidence:
            record.metrics["natural_evidence"] = label.evidence


def analyse_site(site: Site, source: Source, settings: Settings, start: str | None = None,
                 end: str | None = None, works: list[ApprovedWork] | None = None,
                 classifier: PatchClassifier | None = None, *, threads: int | None = None,
                 layers: LayerSet | None = None) -> SiteResult:
    """Load the licence's cube from ``source`` and analyse it (``threads``, ``layers``: see :func:`analyse_cube`)."""
    region = site.buffered(settings.sites.buffer_m)
    cube = source.load(site, region, start, end)
    if cube.sizes.get("time", 0) == 0:
        raise ImageryError(f"licence {site.site_id}: no acquisitions between {start or 'the start'} "
                           f"and {end or 'the end'}")
    return analyse_cube(site, cube, settings, works, classifier, threads=threads, layers=layers)
