"""Why are human-made patches labelled ``uncertain`` (or ``natural``)? Per human-made event of synthetic
scenes: the label of the patch over it and, for ``uncertain``, the trust layer's reason in a bucket
(outside the training data by size or by features, no natural agent, low confidence, a work's shape).
Tuning seeds only (200+; 1-8 are the benchmark's, 101-115 trained the shipped model).

    PYTHONPATH=. python scripts/diagnose_uncertain.py --model models/default --seeds 205,206 --out /tmp/unc.csv \\
        [--domains classic,boreal_forest+20m,...]

With the shipped model every world was seen in training; the benchmark's leave-one-world-out figures
refit without the world scanned, so expect fewer ``uncertain`` here than there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely import wkt

from gmsense.bench.accuracy import complete_truth
from gmsense.classify.model import load_model
from gmsense.classify.train import random_licences
from gmsense.config import Settings
from gmsense.pipeline import analyse_site
from gmsense.records import HUMAN_MADE_CLASSES
from gmsense.sources import SyntheticSource
from gmsense.sources.synthetic import synthesize
from gmsense.sources.synthetic._domains import VALIDATION_DOMAINS

MATCH_M = 15.0  # as the accuracy bench matches patches to events


def bucket(reason: str) -> str:
    """The kind of a trust reason (gmsense.classify.trust)."""
    if reason.startswith("outside training data: unusual"):
        return "novel features"
    if reason.startswith("outside training data"):
        return "novel size"
    if reason.startswith("called natural"):
        return "no natural agent"
    if reason.startswith("low confidence"):
        return "low confidence"
    if reason.startswith("a work's shape"):
        return "work shape, indirect agent only"
    return reason[:40] or "-"


def diagnose(model: Path, seeds: list[int], domains: list[str], leave_out: bool = False) -> pd.DataFrame:
    """Per human-made event: the label of the patch over it. ``leave_out``: each world scanned with the
    model refitted without that world's training rows, as the benchmark's leave-one-world-out does."""
    from gmsense.classify.train import domains_of, fit_classifier, read_training_table

    classifier = load_model(model)
    table = read_training_table(model) if leave_out else None
    rows = []
    for domain in domains:
        if table is not None:
            classifier = fit_classifier(table[domains_of(table) != domain], name=f"without {domain}")
        for seed in seeds:
            settings = Settings()
            seeded = settings.model_copy(update={"synthetic": settings.synthetic.model_copy(update={"seed": seed})})
            for site in random_licences(seed, 2, domain=domain):
                result = analyse_site(site, SyntheticSource(seeded), seeded, classifier=classifier)
                cube, truth = synthesize(site, site.buffered(seeded.sites.buffer_m), seeded.synthetic)
                truth = complete_truth(truth, cube, seeded)
                patches = gpd.GeoDataFrame(
                    {"label": [p.disturbance_class for p in result.patches],
                     "reason": [p.metrics.get("label_reason") or "" for p in result.patches],
                     "agent": [p.natural_agent or "" for p in result.patches],
                     "confidence": [p.confidence for p in result.patches]},
                    geometry=[wkt.loads(p.local_wkt) for p in result.patches], crs=result.stats["crs"],
                ).to_crs(site.crs)
                for _, event in truth[truth.disturbance_class.isin(HUMAN_MADE_CLASSES)].iterrows():
                    near = event.geometry.buffer(MATCH_M)
                    hits = patches[patches.intersects(near)]
                    row = {"domain": domain, "seed": seed, "site_id": site.site_id, "truth": event.disturbance_class}
                    if len(hits):
                        best = hits.iloc[int(np.argmax([g.intersection(near).area for g in hits.geometry]))]
                        row |= {"label": best.label, "bucket": bucket(best.reason) if best.label == "uncertain"
                                else None, "reason": best.reason, "agent": best.agent,
                                "confidence": best.confidence}
                    rows.append(row)
    return pd.DataFrame(rows, columns=["domain", "seed", "site_id", "truth", "label", "bucket", "reason", "agent",
                                       "confidence"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/default"))
    parser.add_argument("--seeds", default="205,206", help="comma-separated tuning seeds (200+)")
    parser.add_argument("--domains", default=",".join(VALIDATION_DOMAINS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--leave-out", action="store_true",
                        help="refit the model without each scanned world's rows (leave-one-world-out)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if any(s < 200 for s in seeds):
        parser.error("tuning seeds only: 200 and up (1-8 test the benchmark, 101-115 trained the model)")
    frame = diagnose(args.model, seeds, args.domains.split(","), args.leave_out)
    frame.to_csv(args.out, index=False)
    detected = frame[frame.label.notna()]
    print(detected.groupby("domain").label.value_counts().unstack(fill_value=0).to_string())
    print(detected[detected.label == "uncertain"].groupby(["domain", "bucket"]).size().to_string())
    natural = detected[detected.label == "natural"]
    if len(natural):
        print(natural.groupby(["domain", "truth", "agent"]).size().to_string())


if __name__ == "__main__":
    main()
