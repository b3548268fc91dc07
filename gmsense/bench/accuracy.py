"""`gmsense bench accuracy`: the scan a user runs, scored against synthetic truth.

For each seed, licences are drawn (:func:`gmsense.classify.train.random_licences`, scenario ``mixed``),
scanned with the synthetic source through :func:`gmsense.batch.scan.run_scan` into a temporary store,
exported with :func:`gmsense.outputs.export.patches_frame`, and scored against the scene's truth
(:mod:`gmsense.bench.scoring`). Events are pooled over all scenes. Seeds 1-8 are the test seeds:
the detector and the classifier are tuned and trained on other seeds (101+).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.features import geometry_mask

from gmsense import __version__
from gmsense.batch.request import ScanOptions, ScanRequest
from gmsense.batch.scan import run_scan
from gmsense.bench import write_json_and_markdown
from gmsense.bench.scoring import EVENT_COLUMNS, FalseAlarms, match_scene, summarise
from gmsense.classify.model import PatchClassifier
from gmsense.classify.train import random_licences
from gmsense.config import Settings
from gmsense.geo.grid import grid_transform
from gmsense.outputs.export import patches_frame
from gmsense.sources import SyntheticSource
from gmsense.sources.synthetic import synthesize
from gmsense.store import Store

#: Issue 15's targets (pooled, and for the worst held-out domain where domains are scored).
TARGETS = {"recall": (">=", 0.92), "class_accuracy": (">=", 0.90), "human_labelled_natural": ("<=", 0.03),
           "human_labelled_uncertain": ("<=", 0.10), "false_alarms_per_km2_year": ("<=", 0.1),
           "median_lag_days": ("<=", 30), "recovery_status_accuracy": (">=", 0.88)}
RECALL_PER_TYPE_TARGET = 0.85


def truth_status(start: str, regrowth_years: float, end: np.datetime64, recovered: float = 0.8,
                 recovering: float = 0.25) -> str:
    """An event's recovery status at ``end`` from its regrowth speed (the simulator's ground truth)."""
    if int(str(start)[:4]) >= int(str(end)[:4]):
        return "active"
    if not regrowth_years:
        return "not_recovering"
    regrown = min((end - np.datetime64(start)) / np.timedelta64(365, "D") / regrowth_years, 1.0)
    return "recovered" if regrown >= recovered else ("recovering" if regrown >= recovering else "not_recovering")


def complete_truth(truth: Any, cube: Any, settings: Settings) -> Any:
    """Add ``first_observed`` and ``recovery_status`` where the simulator does not give them.

    ``first_observed`` (blank or missing) is computed as the simulator does: the first growing-season
    acquisition on or after the start date on which at least half of the footprint's pixels are clear
    by the cube's ``clear`` mask (the SCL-derived mask a user's scan sees). It stays blank when there
    is none; the scorer then measures the lag from the start date (see :mod:`gmsense.bench.scoring`).
    """
    truth = truth.copy()
    times = cube["time"].values
    end = times.max()
    months = cube["time"].dt.month.values
    in_season = (months >= settings.season.start_month) & (months <= settings.season.end_month)
    shape = (cube.sizes["y"], cube.sizes["x"])
    if "first_observed" not in truth.columns:
        truth["first_observed"] = ""
    blank = [not isinstance(v, str) or not v.strip() for v in truth["first_observed"]]
    if any(blank):
        clear = np.asarray(cube["clear"].values)
        observed = []
        for geom, start, todo, known in zip(truth.geometry, truth.start, blank, truth["first_observed"], strict=True):
            if not todo:
                observed.append(known)
                continue
            inside = geometry_mask([geom], shape, grid_transform(cube), invert=True, all_touched=True)
            share = clear[:, inside].mean(axis=1) if inside.any() else np.zeros(times.size)
            hits = np.flatnonzero((times >= np.datetime64(start)) & in_season & (share >= 0.5))
            observed.append(str(np.datetime64(times[hits[0]], "D")) if hits.size else "")
        truth["first_observed"] = observed
    if "recovery_status" not in truth.columns:
        truth["recovery_status"] = [truth_status(s, r, end, settings.recovery.recovered_ratio,
                                                 settings.recovery.recovering_ratio)
                                    for s, r in zip(truth.start, truth.regrowth_years, strict=True)]
    return truth


def scan_failures(store: Store, summary: Any, sites: list[Any]) -> dict[str, str]:
    """Licences of the scan with no stored result, with their errors: the summary's failures, the
    store's failed units, and any licence with no ``done`` unit at all."""
    failures = dict(summary.failures)
    _, units = store.scan(summary.scan_id)
    done = {u.site_id for u in units if u.status == "done"}
    for unit in units:
        if unit.status != "done":
            failures.setdefault(unit.site_id, unit.error or f"scan unit {unit.status}")
    for site in sites:
        if site.site_id not in done:
            failures.setdefault(site.site_id, "no result stored for this licence")
    return failures


def run_accuracy(seeds: list[int], *, sites_per_seed: int = 3, settings: Settings | None = None,
                 workers: int | None = None, classifier: PatchClassifier | None = None,
                 out: Path | None = None) -> dict[str, Any]:
    """Scan and score every scene; write ``out`` (JSON) and a sibling ``.md`` table if given.

    A licence whose scan failed is not dropped: its truth events are scored as misses (recall counts
    them) and it is listed under ``failed_sites`` with its error. Its area is left out of the
    false-alarm rate (no patch could be found there). If even its truth cannot be generated, its
    events are unknown: it is listed with ``events_human`` None.
    """
    settings = settings or Settings()
    t0 = time.perf_counter()
    all_events, all_false, n_patches, area_km2, exposure, per_seed, failed = [], FalseAlarms([]), 0, 0.0, 0.0, [], []
    empty = pd.DataFrame(columns=EVENT_COLUMNS)
    for seed in seeds:
        seeded = settings.model_copy(update={"synthetic": settings.synthetic.model_copy(update={"seed": seed})})
        sites = random_licences(seed, sites_per_seed)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(str(Path(tmp) / "bench.db"))
            summary = run_scan(ScanRequest(sites, SyntheticSource(seeded), seeded, classifier=classifier), store,
                               options=ScanOptions(workers=workers))
            failures = scan_failures(store, summary, sites)
            exported = patches_frame(store)
        seed_events, seed_patches, seed_area, seed_exposure, seed_failed = [], 0, 0.0, 0.0, []
        seed_false = FalseAlarms([])
        for site in sites:
            region = site.buffered(seeded.sites.buffer_m)
            try:
                cube, truth = synthesize(site, region, seeded.synthetic)
            except Exception as exc:  # the scan failed the same way: nothing to score, say so
                if site.site_id not in failures:
                    raise
                failed.append({"seed": seed, "site_id": site.site_id, "error": failures[site.site_id],
                               "events_human": None, "truth_error": f"{type(exc).__name__}: {exc}"})
                seed_failed.append(failed[-1])
                continue
            truth = complete_truth(truth, cube, seeded)
            scene_years = len(np.unique(cube["time"].dt.year.values)) - 1  # the first season is history only
            patches = exported[exported.site_id == site.site_id].to_crs(site.crs)
            events, false_alarms = match_scene(truth, patches)
            seed_events.append(events)
            seed_patches += len(patches)
            if site.site_id in failures:
                failed.append({"seed": seed, "site_id": site.site_id, "error": failures[site.site_id],
                               "events_human": int(events.human.astype(bool).sum())})
                seed_failed.append(failed[-1])
                continue
            seed_false += false_alarms
            seed_area += region.area / 1e6
            seed_exposure += region.area / 1e6 * scene_years
        events = pd.concat(seed_events, ignore_index=True) if seed_events else empty
        per_seed.append({"seed": seed, "failed_sites": len(seed_failed),
                         **summarise(events, seed_false, seed_patches, area_km2=seed_area,
                                     years=_years(seed_exposure, seed_area))})
        all_events.append(events)
        all_false += seed_false
        n_patches += seed_patches
        area_km2 += seed_area
        exposure += seed_exposure
    pooled = summarise(pd.concat([e for e in all_events if len(e)] or [empty], ignore_index=True), all_false,
                       n_patches, area_km2=area_km2, years=_years(exposure, area_km2))
    pooled["failed_sites"] = len(failed)
    pooled["events_human_on_failed_sites"] = sum(f["events_human"] or 0 for f in failed)
    results = {"detector": "model" if classifier else "rules",
               "model_version": classifier.version if classifier else None,
               "seeds": seeds, "sites_per_seed": sites_per_seed, "overall": pooled, "per_seed": per_seed,
               "failed_sites": failed,
               "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
               "config_hash": settings.config_hash(), "gmsense_version": __version__,
               "runtime_s": round(time.perf_counter() - t0, 1)}
    if out is not None:
        write_results(results, Path(out))
    return results


def _years(exposure_km2_years: float, area_km2: float) -> float:
    """Mean scene years weighted by area (the false-alarm rate's denominator is their product)."""
    return round(exposure_km2_years / area_km2, 4) if area_km2 else 0.0


def _met(value: float | None, op: str, target: float) -> str:
    if value is None:
        return "-"
    return "yes" if (value >= target if op == ">=" else value <= target) else "no"


def markdown(results: list[dict[str, Any]]) -> str:
    """One column per detector run, one row per metric, with the target and whether it is met."""
    head = "| metric | target | " + " | ".join(r["detector"] + (f" ({r['model_version']})" if r["model_version"]
                                                                 else "") for r in results) + " |"
    lines = [head, "|---|---|" + "---|" * len(results)]

    def row(name: str, target: str, values: list[Any]) -> None:
        lines.append(f"| {name} | {target} | " + " | ".join(values) + " |")

    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    for key, (op, target) in TARGETS.items():
        row(key.replace("_", " "), f"{op} {target}",
            [f"{fmt(r['overall'][key])} ({_met(r['overall'][key], op, target)})" for r in results])
    for klass in ("trench", "pad", "track", "clearing"):
        row(f"recall {klass}", f">= {RECALL_PER_TYPE_TARGET}",
            [f"{fmt(r['overall']['recall_by_type'][klass])} "
             f"({_met(r['overall']['recall_by_type'][klass], '>=', RECALL_PER_TYPE_TARGET)})" for r in results])
    row("uncertain patches on no human-made event (review load, per km2 per year)", "-",
        [f"{r['overall'].get('review_load', 0)} ({fmt(r['overall'].get('review_load_per_km2_year'))})"
         for r in results])
    row("median lag to first_detected (days)", "-",
        [fmt(r["overall"].get("median_first_detected_lag_days")) for r in results])
    row("inside-licence accuracy", "-", [fmt(r["overall"]["inside_licence_accuracy"]) for r in results])
    row("false alarms (on natural change)", "-",
        [f"{r['overall']['false_alarms']} ({sum(r['overall']['false_alarms_on_natural'].values())})" for r in results])
    row("human-made events / patches", "-", [f"{r['overall']['events_human']} / {r['overall']['patches']}"
                                            for r in results])
    row("failed licences (their events scored as misses)", "0",
        [f"{r['overall'].get('failed_sites', 0)} ({r['overall'].get('events_human_on_failed_sites', 0)})"
         for r in results])
    seeds = results[0]["seeds"]
    text = "\n".join(lines) + f"\n\nSeeds {min(seeds)}-{max(seeds)}, {results[0]['sites_per_seed']} licences each.\n"
    text += ("Lag: days from the event's first clear growing-season observation (>= half its footprint clear by "
             "the scene's SCL mask; its start date when there is none) to the patch's `confirmed_on`.\n")
    for r in results:
        for f in r.get("failed_sites", []):
            text += (f"\nFailed ({r['detector']}): seed {f['seed']} licence {f['site_id']}: {f['error']}"
                     + (f" (truth unavailable: {f['truth_error']})" if f.get("truth_error") else "") + "\n")
    return text


def write_results(results: dict[str, Any] | list[dict[str, Any]], out: Path) -> Path:
    runs = results if isinstance(results, list) else [results]
    return write_json_and_markdown(runs if len(runs) > 1 else runs[0], out, markdown(runs))
