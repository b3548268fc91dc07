"""`gmsense bench accuracy`: the scan a user runs, scored against synthetic truth.

For each seed, licences are drawn (:func:`gmsense.train.random_licences`, scenario ``mixed``),
scanned with the synthetic source through :func:`gmsense.scan.run_scan` into a temporary store,
exported with :func:`gmsense.export.patches_frame`, and scored against the scene's truth
(:mod:`gmsense.bench.scoring`). Events are pooled over all scenes. Seeds 1-8 are the test seeds:
the detector and the classifier are tuned and trained on other seeds (101+).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.features import geometry_mask
from rich.console import Console

from gmsense import __version__
from gmsense.bench.scoring import match_scene, summarise
from gmsense.config import Settings
from gmsense.detect.patches import grid_transform
from gmsense.export import patches_frame
from gmsense.scan import run_scan
from gmsense.sources import SyntheticSource
from gmsense.sources.synthetic import synthesize
from gmsense.store import Store
from gmsense.train import PatchClassifier, random_licences

TARGETS = {"recall": (">=", 0.90), "class_accuracy": (">=", 0.85), "false_alarms_per_km2_year": ("<=", 0.2),
           "median_lag_days": ("<=", 30), "recovery_status_accuracy": (">=", 0.85)}
RECALL_PER_TYPE_TARGET = 0.80


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
    """Add ``first_observed`` and ``recovery_status`` where the simulator does not give them."""
    truth = truth.copy()
    times = cube["time"].values
    end = times.max()
    months = cube["time"].dt.month.values
    in_season = (months >= settings.season.start_month) & (months <= settings.season.end_month)
    shape = (cube.sizes["y"], cube.sizes["x"])
    clear = np.asarray(cube["clear"].values)
    if "first_observed" not in truth.columns:
        observed = []
        for geom, start in zip(truth.geometry, truth.start, strict=True):
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


def run_accuracy(seeds: list[int], *, sites_per_seed: int = 3, settings: Settings | None = None,
                 workers: int | None = None, classifier: PatchClassifier | None = None,
                 out: Path | None = None) -> dict[str, Any]:
    """Scan and score every scene; write ``out`` (JSON) and a sibling ``.md`` table if given."""
    settings = settings or Settings()
    t0 = time.perf_counter()
    all_events, all_false, n_patches, area_km2, years, per_seed = [], [], 0, 0.0, 0.0, []
    for seed in seeds:
        seeded = settings.model_copy(update={"synthetic": settings.synthetic.model_copy(update={"seed": seed})})
        sites = random_licences(seed, sites_per_seed)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(str(Path(tmp) / "bench.db"))
            run_scan(sites, SyntheticSource(seeded), seeded, store, workers=workers, classifier=classifier,
                     console=Console(quiet=True), show_progress=False)
            exported = patches_frame(store)
        seed_events, seed_false, seed_patches, seed_area = [], [], 0, 0.0
        for site in sites:
            region = site.buffered(seeded.sites.buffer_m)
            cube, truth = synthesize(site, region, seeded.synthetic)
            truth = complete_truth(truth, cube, seeded)
            patches = exported[exported.site_id == site.site_id].to_crs(site.crs)
            events, false_alarms = match_scene(truth, patches)
            seed_events.append(events)
            seed_false += false_alarms
            seed_patches += len(patches)
            seed_area += region.area / 1e6
            scene_years = len(np.unique(cube["time"].dt.year.values)) - 1  # the first season is history only
        events = pd.concat(seed_events, ignore_index=True)
        per_seed.append({"seed": seed, **summarise(events, seed_false, seed_patches, area_km2=seed_area,
                                                   years=scene_years)})
        all_events.append(events)
        all_false += seed_false
        n_patches += seed_patches
        area_km2 += seed_area
        years = scene_years
    pooled = summarise(pd.concat(all_events, ignore_index=True), all_false, n_patches, area_km2=area_km2,
                       years=years)
    results = {"detector": "model" if classifier else "rules",
               "model_version": classifier.version if classifier else None,
               "seeds": seeds, "sites_per_seed": sites_per_seed, "overall": pooled, "per_seed": per_seed,
               "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
               "config_hash": settings.config_hash(), "gmsense_version": __version__,
               "runtime_s": round(time.perf_counter() - t0, 1)}
    if out is not None:
        write_results(results, Path(out))
    return results


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
    row("inside-licence accuracy", "-", [fmt(r["overall"]["inside_licence_accuracy"]) for r in results])
    row("false alarms (on natural change)", "-",
        [f"{r['overall']['false_alarms']} ({sum(r['overall']['false_alarms_on_natural'].values())})" for r in results])
    row("human-made events / patches", "-", [f"{r['overall']['events_human']} / {r['overall']['patches']}"
                                            for r in results])
    seeds = results[0]["seeds"]
    return "\n".join(lines) + f"\n\nSeeds {min(seeds)}-{max(seeds)}, {results[0]['sites_per_seed']} licences each.\n"


def write_results(results: dict[str, Any] | list[dict[str, Any]], out: Path) -> Path:
    runs = results if isinstance(results, list) else [results]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs if len(runs) > 1 else runs[0], indent=2, default=str))
    out.with_suffix(".md").write_text(markdown(runs))
    return out
