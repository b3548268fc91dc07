"""Figures: a patch trajectory plot is written and shows what it should."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from gmsense.outputs.report import save_figure, trajectory_figure
from gmsense.records import RecoveryObservation


def test_trajectory_plot(tmp_path: Path) -> None:
    obs = [RecoveryObservation(s, "ndvi", 6, p, 0.82, p - 0.82)
           for s, p in [(2018, 0.81), (2019, 0.35), (2020, 0.45), (2021, 0.6), (2022, 0.7)]]
    fig = trajectory_figure(obs, title="HLJ-EXP-001-P0001 trench", disturbance_season=2019, status="recovering")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["reference ring", "patch", "pre-disturbance level", "80% recovered"]
    assert "recovery ratio 0.76" in ax.get_title()
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.81, 0.35, 0.45, 0.6, 0.7])
    path = save_figure(fig, tmp_path / "t.png")
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[0] > 300
    assert image.std() > 10, "not a blank image"
    assert not plt.get_fignums(), "figure closed"
