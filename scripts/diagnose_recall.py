"""Why are human-made events missed? Per event of synthetic scenes: detected or not, and for a miss,
the detector's view of its footprint (the bucket it falls in). Tuning seeds only (201+).

    PYTHONPATH=. python scripts/diagnose_recall.py --seeds 201-204 --sites 2 --out /tmp/diag.csv [--domains ...]

Detection as the accuracy bench scores it (a patch over the footprint buffered by 15 m), from
:func:`gmsense.pipeline.analyse_cube` with the rule labels (detection does not depend on the classifier).
Buckets of a miss, the first that applies:

- ``not_observed``: no growing-season observation with half the footprint clear after the start;
- ``no_core_pixel``: no pixel at least a third covered by the event (sub-pixel footprint);
- ``patch_filtered``: footprint pixels confirmed in the event's season or later, but no patch (area filter);
- ``earlier_break``: the footprint's pixels broke in an earlier season (their first break) and no later break;
- ``withdrawn``: a confirmed run in the event's season that the persistence rule withdrew;
- ``no_history``: too few clear baseline observations for the model;
- ``sigma_limited``: a run of drops above ``min_drop`` that the z-score (``z_threshold`` x spread) rejects;
- ``weak_drop``: the drops stay below ``min_drop`` (too little of the pixel, or too little contrast);
- ``other``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import shapely
from rasterio.features import rasterize

from gmsense.bench.accuracy import complete_truth
from gmsense.classify.train import random_licences
from gmsense.config import Settings
from gmsense.cube.ops import season_year
from gmsense.detect.change import NO_BREAK, confirm_runs, detect_breaks, scene_dips, season_drops
from gmsense.detect.context import merge_samples
from gmsense.detect.lines import add_line_breaks
from gmsense.geo.grid import grid_transform
from gmsense.pipeline import analyse_cube, licence_sample, season_index
from gmsense.records import HUMAN_MADE_CLASSES
from gmsense.sources.synthetic import synthesize
from gmsense.sources.synthetic._domains import VALIDATION_DOMAINS

SUPER = 5  # coverage fraction from a 5 x 5 supersampled rasterisation


def coverage(geom, transform, shape) -> np.ndarray:
    from affine import Affine
    fine = transform * Affine.scale(1 / SUPER)
    raster = rasterize([(geom, 1)], out_shape=(shape[0] * SUPER, shape[1] * SUPER), transform=fine, dtype="uint8")
    return raster.reshape(shape[0], SUPER, shape[1], SUPER).mean(axis=(1, 3))


def longest_run(flags: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Longest run of True per column, missing observations (not ``seen``) skipped."""
    run = np.zeros(flags.shape[1], dtype=int)
    best = np.zeros(flags.shape[1], dtype=int)
    for t in range(flags.shape[0]):
        run = np.where(flags[t], run + 1, np.where(seen[t], 0, run))
        best = np.maximum(best, run)
    return best


def diagnose_site(site, settings: Settings, seed: int) -> list[dict]:
    det = settings.detect
    region = site.buffered(settings.sites.buffer_m)
    t0 = time.perf_counter()
    cube, truth = synthesize(site, region, settings.synthetic)
    truth = complete_truth(truth, cube, settings)
    result = analyse_cube(site, cube, settings, threads=1)
    _, _, _, ndvi = season_index(cube, settings, site.site_id)
    context = merge_samples([licence_sample(ndvi, region)])
    times = ndvi["time"].values.astype("datetime64[ns]")
    year = season_year(times, settings.season)
    doy = (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(int) + 1.0
    offset, _ = context.at(times)
    keep = ~np.isin(times, context.times[scene_dips(context.offset, context.has_data, settings.mask.max_scene_dip)])
    values = np.asarray(ndvi.transpose("time", "y", "x").values)
    transform = grid_transform(ndvi)
    pixel = abs(transform.a)
    shape = values.shape[1:]
    patches = [shapely.from_wkt(r.local_wkt) for r in result.patches]
    breaks = add_line_breaks(detect_breaks(ndvi, det, settings.mask.max_scene_dip, context=context, threads=1,
                                           season=settings.season).load(), ndvi, det, settings.season)
    line_labels, reasons, has_weak, blocked = explain_lines(breaks, values, times, settings)
    first_all = np.asarray(breaks["first_detected"].values)
    rebreak = np.asarray(breaks["rebreak_first_detected"].values)
    rows = []
    for _, ev in truth.iterrows():
        if ev.disturbance_class not in HUMAN_MADE_CLASSES:
            continue
        geom = ev.geometry
        width = 2 * geom.area / geom.length
        frac = coverage(geom, transform, shape)
        buffered = geom.buffer(15.0)
        hit = [p for p in patches if p.intersects(buffered)]
        start = np.datetime64(ev.start, "ns")
        after = np.flatnonzero(times >= start)
        ev_season = int(year[after[0]]) if after.size else None
        row = {"seed": seed, "site": site.site_id, "domain": cube.attrs.get("domain"), "event": ev.event_id,
               "kind": ev.kind, "klass": ev.disturbance_class, "start": str(ev.start)[:10], "pixel_m": pixel,
               "width_m": round(width, 1), "width_px": round(width / pixel, 2), "area_m2": round(geom.area),
               "max_frac": round(float(frac.max()), 2), "detected": bool(hit),
               "first_observed": ev.get("first_observed", "")}
        core = frac >= 1 / 3
        pix = np.flatnonzero(core.ravel())
        if pix.size:
            flat = values.reshape(values.shape[0], -1)[:, pix].astype("float64") - offset[:, None]
            flat[~keep] = np.nan
            drop, thr = season_drops(flat, doy, year, det)
            ev_t = (times >= start) & (year == ev_season) if ev_season is not None else np.zeros(times.size, bool)
            d, th = drop[ev_t], thr[ev_t]
            seen = np.isfinite(d)
            with np.errstate(invalid="ignore"):
                med_drop = np.nanmedian(np.where(seen, d, np.nan), axis=0) if seen.any() else np.full(pix.size, np.nan)
                is_drop = seen & (d > th)
                over_min = seen & (d > det.min_drop)
            sigma = th[0] / det.z_threshold if th.size else np.full(pix.size, np.nan)
            # pre-event spread of the model (index units), from the threshold of the event's season
            f0, _, _, _ = confirm_runs(np.where(ev_t[:, None], drop, np.nan), thr, det.confirm_obs, year, 0.0)
            f1, _, _, _ = confirm_runs(np.where(ev_t[:, None], drop, np.nan), thr, det.confirm_obs, year,
                                       det.min_persistence)
            fd = first_all.ravel()[pix]
            rb = rebreak.ravel()[pix]
            row.update({
                "core_px": int(pix.size),
                "med_drop": round(float(np.nanmedian(med_drop)), 3) if np.isfinite(med_drop).any() else None,
                "max_med_drop": round(float(np.nanmax(med_drop)), 3) if np.isfinite(med_drop).any() else None,
                "med_sigma": round(float(np.nanmedian(sigma)), 3) if np.isfinite(sigma).any() else None,
                "n_obs": int(seen.any(axis=1).sum()),
                "run_drop": int(longest_run(is_drop, seen).max()) if seen.size else 0,
                "run_over_min": int(longest_run(over_min, seen).max()) if seen.size else 0,
                "confirmed_nopersist": int((f0 != NO_BREAK).sum()),
                "confirmed": int((f1 != NO_BREAK).sum()),
                "px_broken": int((~np.isnat(fd)).sum()),
                "px_broken_before": int(((~np.isnat(fd)) & (season_year(np.where(np.isnat(fd), times[0], fd),
                                                                       settings.season) < (ev_season or 0))).sum()),
                "px_rebreak": int((~np.isnat(rb)).sum()),
                "no_history": int(np.isnan(drop[ev_t]).all(axis=0).sum()) if ev_t.any() else pix.size,
            })
        touched = frac > 0
        row["weak_px"] = int((has_weak & touched).sum())
        found = sorted({reasons.get(int(k), "?") for k in np.unique(line_labels[touched]) if k})
        row["line_reasons"] = ";".join(found + (["near_confirmed"] if (blocked & touched).any() else []))
        row["line_px"] = int((np.asarray(breaks["line"].values) & touched).sum())
        row["bucket"] = "" if hit else bucket(row, det)
        row["analyse_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    return rows


def explain_lines(breaks, index: np.ndarray, times: np.ndarray, settings: Settings):
    """The line pass's candidate components (label image) and why each was kept or rejected
    (:func:`gmsense.detect.lines.find_lines`, step by step)."""
    from scipy import ndimage

    from gmsense.detect import lines as lp
    det = settings.detect
    weak_first = np.asarray(breaks["weak_first"].values)
    has_weak = ~np.isnat(weak_first)
    pixel = abs(grid_transform(breaks).a)
    times = np.asarray(times).astype("datetime64[ns]")
    years = season_year(times, settings.season)
    first = np.searchsorted(times, np.where(has_weak, weak_first, times[0]))
    magnitude = np.where(has_weak, np.nan_to_num(np.asarray(breaks["weak_magnitude"].values)), 0.0)
    before_lines = np.where(np.asarray(breaks["line"].values), np.datetime64("NaT"), breaks["first_detected"].values)
    confirmed = lp.patch_pixels(before_lines, det.min_patch_m2, pixel, settings.season)
    scale = lp._Scale.of(det, pixel)
    clearance = int(np.ceil(det.line_clearance_m / pixel))
    free = ~(ndimage.binary_dilation(confirmed, iterations=clearance) if confirmed.any() and clearance else confirmed)
    ridge = lp.ridge_response(magnitude, scale.sigmas) >= det.line_min_ridge
    labels, _ = ndimage.label(ridge & free, structure=lp._EIGHT)
    reasons = {}
    pad = scale.ring[1] + 2
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        part = labels[box] == label
        if part.sum() < lp._MIN_PIXELS or has_weak[box][part].mean() <= 0.5:
            reasons[label] = "few_weak"
            continue
        holes = ndimage.binary_fill_holes(part) & ~part
        if holes.any() and has_weak[box][holes].mean() > 0.5:
            reasons[label] = "outline"
            continue
        shape = lp.shape_metrics(part, pixel)
        if shape["length_m"] < det.line_min_length_m or shape["elongation"] < det.line_min_elongation:
            reasons[label] = "shape"
            continue
        outer = lp._padded(box, pad, labels.shape)
        line = np.zeros(labels[outer].shape, dtype=bool)
        line[tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer, strict=True))] = part
        if not lp._few_weak_around(has_weak, line, outer, det, scale):
            reasons[label] = "ring_weak"
            continue
        if not lp._quiet_surroundings(index, times, years, first, has_weak, line, outer, det, scale):
            reasons[label] = "ring_drop_or_prior"
            continue
        reasons[label] = "kept"
    return labels, reasons, has_weak, ridge & ~free


def bucket(row: dict, det) -> str:
    if not isinstance(row.get("first_observed"), str) or not row["first_observed"]:
        return "not_observed"
    if not row.get("core_px"):
        return "no_core_pixel"
    if row["px_broken"] - row["px_broken_before"] > 0 or row["px_rebreak"] > 0:
        return "patch_filtered"
    if row["px_broken_before"] > 0 and row["px_broken_before"] >= row["core_px"] / 2:
        return "earlier_break"
    if row["confirmed_nopersist"] > 0 and row["confirmed"] == 0:
        return "withdrawn"
    if row["confirmed"] > 0:
        return "confirmed_no_patch"
    if row["no_history"] >= row["core_px"]:
        return "no_history"
    if row["run_over_min"] >= det.confirm_obs:
        return "sigma_limited"
    if (row.get("max_med_drop") or 0) < det.min_drop:
        return "weak_drop"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="201-204")
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--domains", default=",".join(VALIDATION_DOMAINS))
    parser.add_argument("--out", default="/tmp/diag.csv")
    args = parser.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    if any(s <= 115 for s in seeds):
        raise SystemExit("tuning seeds only (201+)")
    settings = Settings()
    rows = []
    for domain in args.domains.split(","):
        for seed in seeds:
            seeded = settings.model_copy(update={"synthetic": settings.synthetic.model_copy(update={"seed": seed})})
            for site in random_licences(seed, args.sites, domain=domain):
                rows += diagnose_site(site, seeded, seed)
                pd.DataFrame(rows).to_csv(args.out, index=False)
                print(domain, seed, site.site_id, len(rows), flush=True)
    frame = pd.DataFrame(rows)
    print(frame.groupby(["domain", "klass"]).detected.agg(["mean", "size"]))
    print(frame[~frame.detected].groupby(["domain", "bucket"]).size())


if __name__ == "__main__":
    main()
