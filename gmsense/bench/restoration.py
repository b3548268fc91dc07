"""`gmsense bench restoration`: the register's restoration accounting scored against synthetic truth (issue 19).

For each seed, a restoration world (:mod:`gmsense.sources.synthetic.restoration`: ``polygons`` legacy
pits, dumps and tailings over forest, shrubland and grassland, with planting, natural succession,
failure, reversion and partial restoration, annual 30 m composites with noise and gaps) is written to
a temporary folder; then what a user runs is timed: the register imported into a fresh SQLite store
(:func:`gmsense.geo.register.read_register`, ``Store.upsert_register``), the restoration run
(:func:`gmsense.restoration.run.run_restoration`, with the world's land-cover map as ``--land-cover``)
and the report
(:func:`gmsense.outputs.restoration_report.write_restoration_report`). The report's tables are scored:

- **status accuracy**: the share of polygon-years whose status (``damaged``, ``under_restoration``,
  ``restored``, ``reverted``, or none: intact ground, or no ratio) equals the truth's, over the
  polygon-years where either has one; and the same on the latest year only;
- **restored-area error** per polygon, latest year: ``|est - true| / max(true, AREA_FLOOR_M2)`` over the
  polygons with a true restored area, ``est`` the report's ``restored_m2`` (restored share of the
  polygon's pixels x its area); the median (the target) and the 90th percentile;
- **county restoration rate** (restored / (damaged + restored) area, the survey's figure), latest year:
  the report's ``by_county.csv`` against the same function
  (:func:`gmsense.outputs.restoration_report.accounting`) run on the truth (each polygon with a true
  status counts its truly restored area, the area of its parts restored, and the rest as damaged); the
  error in percentage points, max and median over counties;
- **runtime**: import + run + report (the world's generation is timed apart).

Seeds and land-cover mix: the tests use seeds below 100 and their own mixes; the defaults here (seeds
1001-1003, forest 45 % / shrubland 25 % / grassland 30 %) were used for nothing else, and neither the
generator nor the classifier was changed after seeing their figures.

The real BC wildfire polygon (``specrec_bc06_wildfire``: 30 m BAP composites 2002-2024, min-max rescaled,
``wildfire_516.gpkg``, fire 2005, restoration from 2006) goes through the same import, run and report as
a one-polygon register: its status and ratio per year are reported, with plausibility checks (no status
before the fire, ``damaged`` in 2006, ``under_restoration`` later). There is no true status to score.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from gmsense import __version__
from gmsense.bench import write_json_and_markdown
from gmsense.config import Settings
from gmsense.geo.register import read_register
from gmsense.outputs.restoration_report import accounting, write_restoration_report
from gmsense.restoration.run import run_restoration
from gmsense.sources.synthetic.restoration import WorldSpec, write_restoration_world
from gmsense.store import Store

#: Issue 19's targets.
TARGETS = {"status_accuracy": (">=", 0.90), "restored_area_error_median": ("<=", 0.10),
           "county_rate_error_pp_max": ("<=", 2.0), "runtime_1000_polygons_30_years_s": ("<=", 600.0)}
AREA_FLOOR_M2 = 5_000.0  # 0.5 ha: the smallest true restored area the relative error divides by
BENCH_SEEDS = [1001, 1002, 1003]
BC_BAP = "specrec_bc06_wildfire/bap_30m_minmax_normalized"
BC_BURN = "specrec_bc06_wildfire/wildfire_516.gpkg"
BAP_BAND_NAMES = ["blue", "green", "red", "nir", "swir16", "swir22"]  # as gmsense.bench.real


def account(register: Path, composites: Path, workdir: Path, settings: Settings,
            land_cover: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Import ``register`` into a fresh store in ``workdir``, run restoration over ``composites`` (with the
    ``land_cover`` map, as ``restoration run --land-cover``) and write the report; (report folder, timings
    in seconds and the run's summary)."""
    if land_cover is not None:
        settings = settings.with_overrides({"restoration.land_cover": str(land_cover)})
    t0 = time.perf_counter()
    store = Store(str(workdir / "bench.db"))
    store.upsert_register(read_register(register))
    t1 = time.perf_counter()
    summary = run_restoration(store, composites, settings)
    t2 = time.perf_counter()
    report = workdir / "report"
    write_restoration_report(store, report, settings, fmt="tables")
    t3 = time.perf_counter()
    return report, {"import_s": round(t1 - t0, 2), "run_s": round(t2 - t1, 2), "report_s": round(t3 - t2, 2),
                    "runtime_s": round(t3 - t0, 2), "failed": summary["failed"],
                    "reference_sources": summary["reference_sources"]}


def _status(value: Any) -> str:
    return "none" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def score(report: Path, truth: pd.DataFrame, polygons: pd.DataFrame) -> dict[str, Any]:
    """Score a report folder against the world's truth (per polygon-year) and scenarios (per polygon)."""
    est = pd.read_csv(report / "status_by_polygon_year.csv")
    merged = truth.merge(est[["register_id", "year", "status", "restored_m2", "ratio"]],
                         on=["register_id", "year"], how="left", suffixes=("_true", "_est"))
    merged["t"] = merged["status_true"].map(_status)
    merged["e"] = merged["status_est"].map(_status)
    scored = merged[(merged["t"] != "none") | (merged["e"] != "none")]
    last = int(truth["year"].max())
    latest = scored[scored["year"] == last]
    confusion = pd.crosstab(scored["t"], scored["e"]).to_dict(orient="index")
    scenario = scored.merge(polygons[["register_id", "scenario"]], on="register_id")
    by_scenario = {s: round(float((g["t"] == g["e"]).mean()), 3) for s, g in scenario.groupby("scenario")}
    # restored area, latest year
    now = merged[merged["year"] == last]
    has = now[now["restored_m2_true"] > 0]
    estimate = has["restored_m2_est"].fillna(0.0)
    errors = (estimate - has["restored_m2_true"]).abs() / np.maximum(has["restored_m2_true"], AREA_FLOOR_M2)
    # county rate, latest year: the report's accounting against the same function on the truth
    rates = []
    counties = pd.read_csv(report / "by_county.csv")
    true_counties = true_accounting(truth, "county")
    for county, rows in now.groupby("county"):
        mine = true_counties[(true_counties["group"] == str(county)) & (true_counties["year"] == last)]
        true_rate = float(mine["restoration_rate"].iloc[0]) if len(mine) and pd.notna(
            mine["restoration_rate"].iloc[0]) else None
        row = counties[(counties["group"].astype(str) == str(county)) & (counties["year"] == last)]
        est_rate = float(row["restoration_rate"].iloc[0]) if len(row) and pd.notna(row["restoration_rate"].iloc[0]) \
            else None
        error = None if true_rate is None or est_rate is None else round(abs(est_rate - true_rate) * 100, 2)
        low = float(row["rate_low"].iloc[0]) if len(row) and pd.notna(row["rate_low"].iloc[0]) else None
        high = float(row["rate_high"].iloc[0]) if len(row) and pd.notna(row["rate_high"].iloc[0]) else None
        miss = None if true_rate is None or low is None or high is None else \
            round(max(low - true_rate, true_rate - high, 0.0) * 100, 2)
        rates.append({"county": str(county), "polygons": len(rows), "true_rate": _round(true_rate),
                      "estimated_rate": _round(est_rate), "error_pp": error, "rate_low": _round(low),
                      "rate_high": _round(high), "range_miss_pp": miss})
    county_errors = [r["error_pp"] for r in rates if r["error_pp"] is not None]
    failure = scenario[(scenario["scenario"] == "failure")]
    return {
        "polygon_years": len(scored), "status_accuracy": _round((scored["t"] == scored["e"]).mean()),
        "status_accuracy_latest_year": _round((latest["t"] == latest["e"]).mean()), "latest_year": last,
        "status_accuracy_by_scenario": by_scenario,
        "confusion_truth_by_estimate": {t: {e: int(n) for e, n in row.items() if n} for t, row in confusion.items()},
        "restored_area_polygons": len(has),
        "restored_area_error_median": _round(float(np.median(errors))) if len(errors) else None,
        "restored_area_error_p90": _round(float(np.quantile(errors, 0.9))) if len(errors) else None,
        "restored_area_true_ha": round(float(has["restored_m2_true"].sum()) / 1e4, 2),
        "restored_area_estimated_ha": round(float(estimate.sum()) / 1e4, 2),
        "county_rate_error_pp_max": max(county_errors) if county_errors else None,
        "county_rate_error_pp_median": _round(float(np.median(county_errors))) if county_errors else None,
        "counties": rates,
        "county_range_miss_pp_max": max((r["range_miss_pp"] for r in rates if r["range_miss_pp"] is not None),
                                        default=None),
        "county_range_width_pp_median": _round(float(np.median([(r["rate_high"] - r["rate_low"]) * 100 for r in rates
                                                                 if r["rate_low"] is not None]))) if rates else None,
        "failure_polygon_years_estimated_restored": int((failure["e"] == "restored").sum()),
    }


def true_accounting(truth: pd.DataFrame, level: str | None) -> pd.DataFrame:
    """The report's accounting (:func:`gmsense.outputs.restoration_report.accounting`) of the truth
    table (per polygon and year: ``status``, ``restored_m2`` the area of its restored parts, ``area_m2``)."""
    table = truth.copy()
    table["status"] = table["status"].where(table["status"].notna(), None)
    table[level or "county"] = table[level or "county"].astype(str)
    return accounting(table, level, 0.4)


def _round(value: Any, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def run_seed(spec: WorldSpec, settings: Settings) -> dict[str, Any]:
    """Generate, account and score one world."""
    with tempfile.TemporaryDirectory(prefix="gmsense-rbench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        world = write_restoration_world(work / "world", spec)
        generated = time.perf_counter() - t0
        report, timing = account(world["register"], world["composites"], work, settings, world["land_cover"])
        truth = pd.read_csv(world["truth"])
        polygons = pd.read_csv(world["polygons"])
        figures = score(report, truth, polygons)
    return {"seed": spec.seed, "polygons": spec.polygons, "years": [spec.first_year, spec.last_year],
            "cover_mix": dict(spec.cover_mix), "composite_px": world["size_px"], "extent_km": world["extent_km"],
            "scenarios": polygons["scenario"].value_counts().to_dict(),
            "generation_s": round(generated, 2), **timing, **figures}


def pooled(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over all seeds: polygon-year accuracy weighted by polygon-years, the other figures' spread."""
    weights = np.array([s["polygon_years"] for s in per_seed], dtype=float)
    out: dict[str, Any] = {
        "status_accuracy": _round(float(np.average([s["status_accuracy"] for s in per_seed], weights=weights)))}
    for key in ("status_accuracy", "status_accuracy_latest_year", "restored_area_error_median",
                "county_rate_error_pp_max", "county_rate_error_pp_median", "runtime_s"):
        values = [s[key] for s in per_seed if s[key] is not None]
        out[f"{key}_spread"] = [min(values), max(values)] if values else None
    out["status_accuracy_latest_year"] = _round(float(np.mean([s["status_accuracy_latest_year"] for s in per_seed])))
    out["restored_area_error_median"] = _round(float(np.median([s["restored_area_error_median"] for s in per_seed
                                                                if s["restored_area_error_median"] is not None])))
    out["county_rate_error_pp_max"] = max(s["county_rate_error_pp_max"] for s in per_seed)
    out["county_rate_error_pp_median"] = _round(float(np.median([c["error_pp"] for s in per_seed for c in s["counties"]
                                                                 if c["error_pp"] is not None])))
    misses = [s["county_range_miss_pp_max"] for s in per_seed if s["county_range_miss_pp_max"] is not None]
    out["county_range_miss_pp_max"] = max(misses) if misses else None
    widths = [(c["rate_high"] - c["rate_low"]) * 100 for s in per_seed for c in s["counties"]
              if c["rate_low"] is not None]
    out["county_range_width_pp_median"] = _round(float(np.median(widths))) if widths else None
    out["runtime_s"] = round(float(np.mean([s["runtime_s"] for s in per_seed])), 2)
    polygons, years = per_seed[0]["polygons"], per_seed[0]["years"][1] - per_seed[0]["years"][0] + 1
    per_polygon_year = out["runtime_s"] / (polygons * years)
    out["runtime_1000_polygons_30_years_s"] = round(per_polygon_year * 1000 * 30, 1)
    out["runtime_1000_polygons_30_years_measured"] = polygons == 1000 and years == 30
    return out


def met(value: Any, op: str, target: float) -> str:
    if value is None:
        return "-"
    return "met" if (value >= target if op == ">=" else value <= target) else "NOT met"


# --------------------------------------------------------------------------------------------
# the real BC wildfire polygon


def bc_section(data: Path, settings: Settings) -> dict[str, Any]:
    """The BC wildfire polygon as a one-polygon register over the 30 m BAP composites."""
    try:
        with tempfile.TemporaryDirectory(prefix="gmsense-rbench-bc-") as tmp:
            work = Path(tmp)
            burn = gpd.read_file(data / BC_BURN)
            attrs = burn.drop(columns="geometry").iloc[0].to_dict()
            register = gpd.GeoDataFrame([{
                "register_id": "wildfire_516", "kind": "other", "mineral_class": "non_metal",
                "responsible_party": "none: historical", "province": "BC", "city": "-", "county": "-",
                "planned_measure": "natural regeneration after the 2005 fire",
                "geometry": burn.geometry.iloc[0]}], crs=burn.crs)
            register.to_file(work / "register.gpkg", layer="register")
            local = settings.local.model_copy(update={"band_names": BAP_BAND_NAMES})
            bap = settings.model_copy(update={"local": local})
            report, timing = account(work / "register.gpkg", data / BC_BAP, work, bap)
            table = pd.read_csv(report / "status_by_polygon_year.csv").sort_values("year")
    except Exception as exc:  # the section reports what failed; the synthetic figures stand
        return {"status": "FAIL", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    years = [{"year": int(r.year), "status": None if pd.isna(r.status) else r.status, "ratio": _round(r.ratio, 3),
              "polygon_ndvi": _round(r.polygon_ndvi, 3), "reference_ndvi": _round(r.reference_ndvi, 3),
              "restored_share": _round(r.restored_share, 3),
              "events": "" if pd.isna(r.events) else r.events} for r in table.itertuples()]
    by_year = {y["year"]: y["status"] for y in years}
    dist, rest = int(attrs.get("dist_start", 2005)), int(attrs.get("rest_start", 2006))
    later = [y for y, s in by_year.items() if y > rest and s == "under_restoration"]
    checks = {
        f"no status before {rest} (intact forest)": all(s is None for y, s in by_year.items() if y < rest),
        f"damaged in {rest}": by_year.get(rest) == "damaged",
        f"under_restoration after {rest}": bool(later),
        "never restored then reverted": all(s != "reverted" for s in by_year.values()),
    }
    return {"inputs": {"imagery": str(data / BC_BAP), "polygon": str(data / BC_BURN), "dist_start": dist,
                       "rest_start": rest, "band_names": BAP_BAND_NAMES},
            "per_year": years, "first_under_restoration": min(later) if later else None,
            "latest_status": years[-1]["status"] if years else None, "checks": checks,
            "status": "PLAUSIBLE" if all(checks.values()) else "NOT plausible",
            "runtime_s": timing["runtime_s"], "failed": timing["failed"]}


# --------------------------------------------------------------------------------------------


def run_restoration_bench(out: Path | None = None, *, seeds: list[int] | None = None, polygons: int = 200,
                          years: int = 30, last_year: int = 2024,
                          cover_mix: tuple[tuple[str, float], ...] | None = None,
                          settings: Settings | None = None, data: Path | None = None,
                          real: bool = True) -> dict[str, Any]:
    """Run the bench on every seed (and the BC polygon unless ``real`` is False); write ``out`` (JSON + .md)."""
    from gmsense.bench.real import default_real_data

    settings = settings or Settings()
    seeds = seeds or BENCH_SEEDS
    t0 = time.perf_counter()
    base = WorldSpec(polygons=polygons, first_year=last_year - years + 1, last_year=last_year)
    if cover_mix:
        base = WorldSpec(**{**base.__dict__, "cover_mix": cover_mix})
    per_seed = [run_seed(WorldSpec(**{**base.__dict__, "seed": seed}), settings) for seed in seeds]
    summary = pooled(per_seed)
    results: dict[str, Any] = {
        "bench": "restoration", "seeds": seeds, "polygons": polygons, "years": [base.first_year, base.last_year],
        "cover_mix": dict(base.cover_mix), "overall": summary, "per_seed": per_seed,
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "verdict": {k: met(summary.get(k), op, v) for k, (op, v) in TARGETS.items()},
        "config_hash": settings.config_hash(), "gmsense_version": __version__}
    if real:
        results["bc_wildfire"] = bc_section(Path(data) if data else default_real_data(), settings)
    results["total_s"] = round(time.perf_counter() - t0, 1)
    if out is not None:
        write_json_and_markdown(results, Path(out), markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    """The figures per seed and over all seeds, against the targets; the BC polygon's trajectory."""
    seeds = results["per_seed"]
    o = results["overall"]

    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    def spread(key: str) -> str:
        s = o.get(f"{key}_spread")
        return f" (seeds {fmt(s[0])}-{fmt(s[1])})" if s else ""

    lines = ["| metric | target | " + " | ".join(f"seed {s['seed']}" for s in seeds) + " | all seeds |",
             "|---|---|" + "---|" * (len(seeds) + 1)]

    def row(name: str, key: str, target: str = "-", verdict: str = "") -> None:
        lines.append(f"| {name} | {target} | " + " | ".join(fmt(s.get(key)) for s in seeds)
                     + f" | {fmt(o.get(key))}{spread(key)}{verdict} |")

    for key, name in (("status_accuracy", "status accuracy (polygon-years)"),
                      ("restored_area_error_median", "restored-area error, median over polygons (latest year)"),
                      ("county_rate_error_pp_max", "county restoration rate error, max (pp, latest year)")):
        op, target = TARGETS[key]
        row(name, key, f"{op} {target}", f" **{met(o.get(key), op, target)}**")
    row("status accuracy, latest year", "status_accuracy_latest_year")
    row("restored-area error, 90th percentile", "restored_area_error_p90")
    row("county rate error, median (pp)", "county_rate_error_pp_median")
    row("county: true rate's distance from the estimate's range (rate_low-rate_high), max (pp)",
        "county_range_miss_pp_max")
    row("county rate range width, median (pp)", "county_range_width_pp_median")
    row("polygon-years scored", "polygon_years")
    row("polygons with a true restored area (latest year)", "restored_area_polygons")
    row("runtime import + run + report (s)", "runtime_s")
    row("generation of the world (s)", "generation_s")
    op, target = TARGETS["runtime_1000_polygons_30_years_s"]
    measured = o["runtime_1000_polygons_30_years_measured"]
    thousand = o["runtime_1000_polygons_30_years_s"]
    lines.append(f"| 1,000 polygons x 30 years (s){'' if measured else ', EXTRAPOLATED linearly, not measured'} | "
                 f"{op} {target} | " + " | ".join("" for _ in seeds)
                 + f" | {fmt(thousand)} ({met(thousand, op, target)}) |")
    first = seeds[0]
    text = "\n".join(lines) + "\n\n"
    text += (f"{results['polygons']} polygons x {results['years'][1] - results['years'][0] + 1} years "
             f"({results['years'][0]}-{results['years'][1]}), composites {first['composite_px'][0]} x "
             f"{first['composite_px'][1]} px at 30 m ({first['extent_km'][0]} km), cover mix "
             + ", ".join(f"{k} {v:.0%}" for k, v in results["cover_mix"].items()) + "; seeds "
             + ", ".join(str(s) for s in results["seeds"]) + " (held out: used for no tuning).\n\n")
    scenarios = sorted({k for s in seeds for k in s["status_accuracy_by_scenario"]})
    text += "Status accuracy by scenario (polygon-years): | " + " | ".join(
        f"{k} {', '.join(fmt(s['status_accuracy_by_scenario'].get(k)) for s in seeds)}" for k in scenarios) + "\n\n"
    confusion = seeds[0]["confusion_truth_by_estimate"]
    names = ["none", "damaged", "under_restoration", "restored", "reverted"]
    text += f"Confusion (seed {seeds[0]['seed']}, rows truth, columns estimate):\n\n| truth \\ estimate | "
    text += " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    for t in names:
        text += f"| {t} | " + " | ".join(str(confusion.get(t, {}).get(e, 0)) for e in names) + " |\n"
    bc = results.get("bc_wildfire")
    if bc:
        text += "\n### BC wildfire polygon (real, 30 m BAP composites, no true status)\n\n"
        if "per_year" not in bc:
            text += f"FAIL: {bc.get('error')}\n"
        else:
            text += "| year | status | ratio | polygon NDVI | reference NDVI | restored share | events |\n"
            text += "|---|---|---|---|---|---|---|\n"
            for y in bc["per_year"]:
                text += (f"| {y['year']} | {y['status'] or '-'} | {fmt(y['ratio'])} | {fmt(y['polygon_ndvi'])} | "
                         f"{fmt(y['reference_ndvi'])} | {fmt(y['restored_share'])} | {y['events']} |\n")
            text += "\nChecks: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in bc["checks"].items())
            text += f". {bc['status']}.\n"
    return text
