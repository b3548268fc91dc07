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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.features import geometry_mask

from gmsense import __version__
from gmsense.batch.request import ScanOptions, ScanRequest
from gmsense.batch.scan import run_scan
from gmsense.bench import write_json_and_markdown
from gmsense.bench.scoring import EVENT_COLUMNS, FalseAlarms, match_scene, patch_truth, summarise
from gmsense.classify.model import PatchClassifier
from gmsense.classify.train import DEFAULT_PARAMS, RANDOMISED, TrainingParams, random_licences, world_for
from gmsense.config import Settings
from gmsense.cube.ops import in_season as season_dates
from gmsense.cube.ops import season_year
from gmsense.geo.grid import grid_transform
from gmsense.outputs.export import patches_frame, recovery_frame
from gmsense.records import HUMAN_MADE_CLASSES
from gmsense.sources import SyntheticSource
from gmsense.sources.synthetic import biome_of, scan_settings, synthesize
from gmsense.store import Store

#: Issue 15's targets (pooled, and for the worst held-out domain where domains are scored).
TARGETS = {"recall": (">=", 0.92), "class_accuracy": (">=", 0.90), "human_labelled_natural": ("<=", 0.03),
           "human_labelled_uncertain": ("<=", 0.10), "false_alarms_per_km2_year": ("<=", 0.1),
           "median_lag_days": ("<=", 30), "recovery_status_accuracy": (">=", 0.88)}
RECALL_PER_TYPE_TARGET = 0.85


def truth_status(start: str, regrowth_years: float, end: np.datetime64, recovered: float = 0.8,
                 recovering: float = 0.25, *, first_season: int | None = None,
                 latest_season: int | None = None) -> str:
    """An event's recovery status at ``end`` from its regrowth speed (the simulator's ground truth).

    ``active`` is what a scan can call it: no growing season since the one it was first seen in.
    With ``latest_season`` (the imagery's last growing season, gmsense.cube.ops.season_year) that
    is an event whose first growing season on or after its start (``first_season``; None: none
    yet) is the latest: a work dug in November after the season is first seen, and judged, in
    next year's season, and a southern season runs across New Year. Without, the calendar year of
    ``start`` against that of ``end`` (a northern season with no winter works)."""
    if latest_season is not None:
        if first_season is None or first_season >= latest_season:
            return "active"
    elif int(str(start)[:4]) >= int(str(end)[:4]):
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
    in_season = season_dates(times, settings.season)
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
        season_times = times[in_season]
        seasons = season_year(season_times, settings.season)
        latest = int(seasons.max()) if seasons.size else None
        firsts = np.searchsorted(season_times, np.array([np.datetime64(str(s)[:10]) for s in truth.start],
                                                        dtype=season_times.dtype))
        truth["recovery_status"] = [
            truth_status(s, r, end, settings.recovery.recovered_ratio, settings.recovery.recovering_ratio,
                         first_season=int(seasons[i]) if i < seasons.size else None, latest_season=latest)
            for s, r, i in zip(truth.start, truth.regrowth_years, firsts, strict=True)]
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


@dataclass
class Scored:
    """What scanning and matching a set of scenes gave, before it is summarised (poolable)."""

    events: list[pd.DataFrame] = field(default_factory=list)
    false_alarms: FalseAlarms = field(default_factory=lambda: FalseAlarms([]))
    patches: int = 0
    area_km2: float = 0.0
    exposure: float = 0.0  # km2 x scene years
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    recovery: list[dict[str, Any]] = field(default_factory=list)  # see _recovery_rows
    patch_rows: list[dict[str, Any]] | None = None  # with details: every patch, its metrics and the truth under it

    def add(self, other: Scored) -> None:
        self.events += other.events
        self.recovery += other.recovery
        self.false_alarms += other.false_alarms
        self.patches += other.patches
        self.area_km2 += other.area_km2
        self.exposure += other.exposure
        self.per_seed += other.per_seed
        self.failed += other.failed
        if other.patch_rows is not None:
            self.patch_rows = (self.patch_rows or []) + other.patch_rows

    def summary(self) -> dict[str, Any]:
        empty = pd.DataFrame(columns=EVENT_COLUMNS)
        pooled = summarise(pd.concat([e for e in self.events if len(e)] or [empty], ignore_index=True),
                           self.false_alarms, self.patches, area_km2=self.area_km2,
                           years=_years(self.exposure, self.area_km2))
        pooled["failed_sites"] = len(self.failed)
        pooled["events_human_on_failed_sites"] = sum(f["events_human"] or 0 for f in self.failed)
        return pooled


#: Called after each seed is scored: (what, seeds done, seeds in all).
Progress = Callable[[str, int, int], None]


def score_seeds(seeds: list[int], *, sites_per_seed: int, settings: Settings, workers: int | None,
                classifier: PatchClassifier | None, domain: str | None = None,
                progress: Progress | None = None, details: bool = False) -> Scored:
    """Scan the licences of every seed (of ``domain``'s world when given; ``randomised:BIOME``: each
    seed's randomly drawn world of the biome, gmsense.sources.synthetic.randomised_domain) and match
    them to truth; with ``details``, keep every patch with its metrics (:func:`write_details`)."""
    scored = Scored()
    empty = pd.DataFrame(columns=EVENT_COLUMNS)
    for done, seed in enumerate(seeds, start=1):
        world = world_for(domain, seed)
        seeded = settings.model_copy(update={"synthetic": settings.synthetic.model_copy(update={"seed": seed})})
        seeded = scan_settings(seeded, world)  # a southern world's season is six months on
        sites = random_licences(seed, sites_per_seed, domain=world)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(str(Path(tmp) / "bench.db"))
            summary = run_scan(ScanRequest(sites, SyntheticSource(seeded), seeded, classifier=classifier), store,
                               options=ScanOptions(workers=workers))
            failures = scan_failures(store, summary, sites)
            exported = patches_frame(store)
            trajectories = _trajectories(recovery_frame(store))
            metrics = {r.patch_id: r.metrics or {} for r in store.patch_rows()} if details else None
        part = _score_sites(seed, sites, seeded, failures, exported, empty, metrics)
        for frame in part.events:
            frame["seed"], frame["domain"] = seed, world or "classic"
        for row in part.patch_rows or []:
            row.update(seed=seed, domain=world or "classic")
        part.recovery = _recovery_rows(part.events, seed, world, trajectories)
        scored.add(part)
        if progress is not None:
            progress(f"{world or 'classic'} seed {seed}", done, len(seeds))
    return scored


def _score_sites(seed: int, sites: list[Any], seeded: Settings, failures: dict[str, str], exported: Any,
                 empty: pd.DataFrame, metrics: dict[Any, dict[str, Any]] | None = None) -> Scored:
    out = Scored(patch_rows=[] if metrics is not None else None)
    for site in sites:
        region = site.buffered(seeded.sites.buffer_m)
        try:
            cube, truth = synthesize(site, region, seeded.synthetic)
        except Exception as exc:  # the scan failed the same way: nothing to score, say so
            if site.site_id not in failures:
                raise
            out.failed.append({"seed": seed, "site_id": site.site_id, "error": failures[site.site_id],
                               "events_human": None, "truth_error": f"{type(exc).__name__}: {exc}"})
            continue
        truth = complete_truth(truth, cube, seeded)
        scene_years = len(np.unique(cube["time"].dt.year.values)) - 1  # the first season is history only
        patches = exported[exported.site_id == site.site_id].to_crs(site.crs)
        events, false_alarms = match_scene(truth, patches, pixel_m=abs(grid_transform(cube).a))
        events["site_id"] = site.site_id
        events["start"] = [str(v)[:10] for v in truth.start]
        events["regrowth_years"] = [float(v) for v in truth.regrowth_years]
        out.events.append(events)
        out.patches += len(patches)
        if out.patch_rows is not None and metrics is not None:
            out.patch_rows += [{"site_id": site.site_id, "patch_id": p.patch_id, "class": p.disturbance_class,
                                "confidence": p.confidence, "natural_agent": p.natural_agent,
                                "label_reason": p.label_reason, "first_detected": str(p.first_detected)[:10],
                                "confirmed_on": str(p.confirmed_on)[:10], "recovery_status": p.recovery_status,
                                "area_m2": round(float(p.geometry.area), 1), **under,
                                "metrics": metrics.get(p.patch_id, {})}
                               for p, under in zip(patches.itertuples(), patch_truth(truth, patches), strict=True)]
        if site.site_id in failures:
            out.failed.append({"seed": seed, "site_id": site.site_id, "error": failures[site.site_id],
                               "events_human": int(events.human.astype(bool).sum())})
            continue
        out.false_alarms += false_alarms
        out.area_km2 += region.area / 1e6
        out.exposure += region.area / 1e6 * scene_years
    events = pd.concat(out.events, ignore_index=True) if out.events else empty
    out.per_seed = [{"seed": seed, "failed_sites": len(out.failed),
                     **summarise(events, out.false_alarms, out.patches, area_km2=out.area_km2,
                                 years=_years(out.exposure, out.area_km2))}]
    return out


def run_accuracy(seeds: list[int], *, sites_per_seed: int = 3, settings: Settings | None = None,
                 workers: int | None = None, classifier: PatchClassifier | None = None,
                 out: Path | None = None, progress: Progress | None = None,
                 details: Path | None = None) -> dict[str, Any]:
    """Scan and score every scene; write ``out`` (JSON) and a sibling ``.md`` table if given, and
    with ``details`` every event and patch there (:func:`write_details`).

    A licence whose scan failed is not dropped: its truth events are scored as misses (recall counts
    them) and it is listed under ``failed_sites`` with its error. Its area is left out of the
    false-alarm rate (no patch could be found there). If even its truth cannot be generated, its
    events are unknown: it is listed with ``events_human`` None.
    """
    settings = settings or Settings()
    t0 = time.perf_counter()
    scored = score_seeds(seeds, sites_per_seed=sites_per_seed, settings=settings, workers=workers,
                         classifier=classifier, progress=progress, details=details is not None)
    if details is not None:
        write_details(scored, details)
    results = {"detector": "model" if classifier else "rules",
               "model_version": classifier.version if classifier else None,
               "seeds": seeds, "sites_per_seed": sites_per_seed, "overall": scored.summary(),
               "per_seed": scored.per_seed, "failed_sites": scored.failed, "recovery_events": scored.recovery,
               "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
               "config_hash": settings.config_hash(), "gmsense_version": __version__,
               "runtime_s": round(time.perf_counter() - t0, 1)}
    if out is not None:
        write_results(results, Path(out))
    return results


def run_domains(seeds: list[int], domains: list[str], *, sites_per_seed: int = 2, settings: Settings | None = None,
                workers: int | None = None, model: Path | None = None,
                params: TrainingParams = DEFAULT_PARAMS, progress: Progress | None = None,
                details: Path | None = None) -> dict[str, Any]:
    """Leave-one-domain-out: each world of ``domains`` is scanned (test ``seeds``) with a model
    fitted on the training table of ``model`` (a folder from ``gmsense train --domains``) without
    the rows of that world's biome (under any sensor, pixel size or sky: ``worlds_of``), so the
    figures of a world come from a model that never saw its land cover; without ``model`` the rule
    baseline. Per world, pooled over the worlds, and the worst world per target; with ``details``,
    every event and patch of every world (:func:`write_details`)."""
    from gmsense.classify.train import domains_of, fit_classifier, read_training_table, worlds_of

    settings = settings or Settings()
    t0 = time.perf_counter()
    table = read_training_table(model) if model is not None else None
    pooled, per_domain, trained_on = Scored(), {}, {}
    for domain in domains:
        classifier = None
        if table is not None:
            # the whole biome, under every sensor and sky
            keep = worlds_of(table) != biome_of(domain.removeprefix(f"{RANDOMISED}:"))
            classifier = fit_classifier(table[keep], params=params, name=f"without {domain}")
            trained_on[domain] = sorted(set(domains_of(table[keep])))
        scored = score_seeds(seeds, sites_per_seed=sites_per_seed, settings=settings, workers=workers,
                             classifier=classifier, domain=domain, progress=progress,
                             details=details is not None)
        per_domain[domain] = scored.summary()
        pooled.add(scored)
    if details is not None:
        write_details(pooled, details)
    worst = {}
    for key, (op, _) in TARGETS.items():
        values = [(v[key], d) for d, v in per_domain.items() if v.get(key) is not None]
        if values:
            value, domain = (min if op == ">=" else max)(values)
            worst[key] = {"value": value, "domain": domain}
    type_values = [(v["recall_by_type"][c], d, c) for d, v in per_domain.items() for c in HUMAN_MADE_CLASSES
                   if v["recall_by_type"].get(c) is not None]
    if type_values:
        value, domain, klass = min(type_values)
        worst["recall_per_type"] = {"value": value, "domain": domain, "class": klass}
    return {"detector": "model" if table is not None else "rules",
            "model_version": f"leave-one-domain-out from {model}" if model else None,
            "validation": "leave-one-domain-out", "domains": domains, "trained_on": trained_on,
            "seeds": seeds, "sites_per_seed": sites_per_seed, "overall": pooled.summary(),
            "per_domain": per_domain, "worst_domain": worst, "failed_sites": pooled.failed,
            "recovery_events": pooled.recovery,
            "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
            "config_hash": settings.config_hash(), "gmsense_version": __version__,
            "runtime_s": round(time.perf_counter() - t0, 1)}


def _trajectories(frame: pd.DataFrame) -> dict[Any, list[list[float]]]:
    """Per stored patch, its recovery trajectory: ``[season, patch, ring, relative]`` per season."""
    out: dict[Any, list[list[float]]] = {}
    for row in frame.itertuples(index=False):
        out.setdefault(row.patch_id, []).append([int(row.season), round(float(row.patch_value), 4),
                                                 round(float(row.ring_value), 4), round(float(row.relative), 4)])
    return out


def _recovery_rows(events: list[pd.DataFrame], seed: int, domain: str | None,
                   trajectories: dict[Any, list[list[float]]]) -> list[dict[str, Any]]:
    """One row per detected human-made event with a truth status: what the recovery status was
    scored on (truth and estimate, the ratio, the event's start and regrowth, the matched patch's
    trajectory), so a wrong status can be traced to its cause."""
    rows = []
    for frame in events:
        for ev in frame.itertuples(index=False):
            if not (ev.human and ev.detected and isinstance(ev.truth_status, str)):
                continue
            rows.append({"seed": seed, "domain": domain or "classic", "site_id": ev.site_id,
                         "event_id": ev.event_id, "kind": ev.kind, "start": ev.start,
                         "regrowth_years": ev.regrowth_years, "width_m": ev.width_m, "patch_id": ev.patch_id,
                         "truth_status": ev.truth_status, "status": ev.status,
                         "recovery_ratio": ev.recovery_ratio, "trajectory": trajectories.get(ev.patch_id, [])})
    return rows


def _years(exposure_km2_years: float, area_km2: float) -> float:
    """Mean scene years weighted by area (the false-alarm rate's denominator is their product)."""
    return round(exposure_km2_years / area_km2, 4) if area_km2 else 0.0


#: Row labels of the recall by event width over pixel size (gmsense.bench.scoring.WIDTH_GROUPS).
WIDTH_LABELS = {"under_third_px": "events narrower than 1/3 pixel", "third_to_one_px": "events 1/3 to 1 pixel wide",
                "at_least_one_px": "events at least 1 pixel wide"}


WIDTH_NOTE = ("Recall by width: human-made events grouped by their footprint's width (2 x area / perimeter) over "
              "the scene's pixel size, recall (events); the targets apply to all events.")


def _rules_cell(metrics: dict[str, Any]) -> str:
    """The trust rules behind ``uncertain`` (gmsense.bench.scoring.uncertain_rule), as
    "rule n, ..." for works, natural change and the review load, separated by " / "."""
    def one(counts: dict[str, int] | None) -> str:
        ranked = sorted((counts or {}).items(), key=lambda kv: -kv[1])
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in ranked) or "-"

    return " / ".join(one(metrics.get(key)) for key in ("uncertain_rules_human", "uncertain_rules_natural",
                                                         "review_load_by_rule"))


def _width_cell(summary: dict[str, Any], group: str) -> str:
    """``recall (n events)`` of one width group; ``- (0)`` when the group is empty or not measured."""
    entry = summary.get("recall_by_width", {}).get(group) or {}
    value = entry.get("recall")
    return f"{'-' if value is None else f'{value:.3f}'} ({entry.get('events', 0)})"


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
    for name, label in WIDTH_LABELS.items():
        row(f"recall, {label}", "-", [_width_cell(r["overall"], name) for r in results])
    row("uncertain patches on no human-made event (review load, per km2 per year)", "-",
        [f"{r['overall'].get('review_load', 0)} ({fmt(r['overall'].get('review_load_per_km2_year'))})"
         for r in results])
    row("uncertain by trust rule: works / natural change / review load", "-",
        [_rules_cell(r["overall"]) for r in results])
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
    text += WIDTH_NOTE + "\n"
    for r in results:
        for f in r.get("failed_sites", []):
            text += (f"\nFailed ({r['detector']}): seed {f['seed']} licence {f['site_id']}: {f['error']}"
                     + (f" (truth unavailable: {f['truth_error']})" if f.get("truth_error") else "") + "\n")
    return text


def markdown_domains(results: list[dict[str, Any]]) -> str:
    """Leave-one-domain-out runs: one column per held-out world, then pooled and the worst world."""
    lines = []
    for r in results:
        domains = r["domains"]
        title = r["detector"] + (f" ({r['model_version']})" if r["model_version"] else "")
        lines += [f"### {title}", "",
                  "| metric | target | " + " | ".join(domains) + " | pooled | worst |",
                  "|---|---|" + "---|" * (len(domains) + 2)]

        def fmt(v: Any) -> str:
            return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

        for key, (op, target) in TARGETS.items():
            worst = r["worst_domain"].get(key, {})
            cells = [fmt(r["per_domain"][d].get(key)) for d in domains]
            lines.append(f"| {key.replace('_', ' ')} | {op} {target} | " + " | ".join(cells)
                         + f" | {fmt(r['overall'].get(key))} ({_met(r['overall'].get(key), op, target)}) | "
                         + (f"{fmt(worst.get('value'))} {worst.get('domain', '')} "
                            f"({_met(worst.get('value'), op, target)})" if worst else "-") + " |")
        for klass in HUMAN_MADE_CLASSES:
            cells = [fmt(r["per_domain"][d]["recall_by_type"].get(klass)) for d in domains]
            pooled = r["overall"]["recall_by_type"].get(klass)
            lines.append(f"| recall {klass} | >= {RECALL_PER_TYPE_TARGET} | " + " | ".join(cells)
                         + f" | {fmt(pooled)} ({_met(pooled, '>=', RECALL_PER_TYPE_TARGET)}) | - |")
        for name, label in WIDTH_LABELS.items():
            cells = [_width_cell(r["per_domain"][d], name) for d in domains]
            lines.append(f"| recall, {label} | - | " + " | ".join(cells)
                         + f" | {_width_cell(r['overall'], name)} | - |")
        cells = [f"{r['per_domain'][d].get('review_load', 0)}" for d in domains]
        lines.append("| uncertain patches on no human-made event (review load) | - | " + " | ".join(cells)
                     + f" | {r['overall'].get('review_load', 0)} | - |")
        cells = [_rules_cell(r["per_domain"][d]) for d in domains]
        lines.append("| uncertain by trust rule: works / natural change / review load | - | " + " | ".join(cells)
                     + f" | {_rules_cell(r['overall'])} | - |")
        cells = [f"{r['per_domain'][d]['events_human']} / {r['per_domain'][d]['patches']}" for d in domains]
        lines.append("| human-made events / patches | - | " + " | ".join(cells)
                     + f" | {r['overall']['events_human']} / {r['overall']['patches']} | - |")
        lines.append("")
    seeds = results[0]["seeds"]
    lines.append(f"Leave-one-domain-out: each world is scanned (test seeds {min(seeds)}-{max(seeds)}, "
                 f"{results[0]['sites_per_seed']} licences each) with a model fitted without that world's "
                 "training rows; the rule baseline needs no training. " + WIDTH_NOTE)
    return "\n".join(lines) + "\n"


def write_details(scored: Scored, folder: Path) -> None:
    """Every scored event (``events.csv``: truth, the matched patch, its label, the trust rule behind an
    ``uncertain``) and every patch (``patches.jsonl.gz``: label, reason, all stored metrics including
    the model's class probabilities, and the truth under it: :func:`gmsense.bench.scoring.patch_truth`),
    so each error of the figures can be read one by one and a labelling rule can be replayed offline."""
    import gzip
    import json

    folder.mkdir(parents=True, exist_ok=True)
    events = [e for e in scored.events if len(e)]
    (pd.concat(events, ignore_index=True) if events else pd.DataFrame(columns=EVENT_COLUMNS)).to_csv(
        folder / "events.csv", index=False)
    with gzip.open(folder / "patches.jsonl.gz", "wt", encoding="utf-8") as f:
        for row in scored.patch_rows or []:
            f.write(json.dumps(row, default=str) + "\n")


def write_results(results: dict[str, Any] | list[dict[str, Any]], out: Path) -> Path:
    runs = results if isinstance(results, list) else [results]
    text = markdown_domains(runs) if "per_domain" in runs[0] else markdown(runs)
    return write_json_and_markdown(runs if len(runs) > 1 else runs[0], out, text)
