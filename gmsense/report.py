"""Figures for reports and the review app (matplotlib, Agg backend; no screen needed).

``trajectory_figure`` draws a patch's recovery: the patch and its reference ring per season, the
pre-disturbance baseline, the 80 % recovery line and the status. Readable in black and white
(line styles and markers, not colour alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gmsense.records import RecoveryObservation
from gmsense.recovery import recovery_metrics


def trajectory_figure(observations: Sequence[RecoveryObservation], *, title: str, disturbance_season: int,
                      status: str | None = None, target: float = 0.8) -> Figure:
    """Patch vs reference ring per season, with the baseline and the 80 % recovery level."""
    seasons = np.array([o.season for o in observations])
    patch = np.array([o.patch_value for o in observations])
    ring = np.array([o.ring_value for o in observations])
    relative = patch - ring
    index_name = observations[0].index.upper() if observations else "INDEX"
    fig, ax = plt.subplots(figsize=(6.0, 3.2), dpi=120)
    ax.plot(seasons, ring, linestyle="--", marker="s", color="0.45", label="reference ring")
    ax.plot(seasons, patch, linestyle="-", marker="o", color="black", label="patch")
    metrics = recovery_metrics(seasons, relative, disturbance_season)
    if metrics["baseline"] is not None:
        # Levels in patch terms: the ring of each season plus the baseline / 80 % relative offset.
        ax.plot(seasons, ring + metrics["baseline"], linestyle=":", color="black", label="pre-disturbance level")
        level80 = metrics["trough"] + target * metrics["magnitude"]
        ax.plot(seasons, ring + level80, linestyle="-.", color="0.3", label=f"{target:.0%} recovered")
    ax.axvline(disturbance_season, color="0.6", linewidth=0.8)
    ax.set_xlabel("growing season")
    ax.set_ylabel(f"median {index_name}")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    ratio = metrics["recovery_ratio"]
    subtitle = f"status: {status}" if status else ""
    if ratio is not None:
        subtitle += f"   recovery ratio {ratio:.2f}"
    ax.set_title(f"{title}\n{subtitle}".strip(), fontsize=9)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` (PNG, PDF or SVG by suffix) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
