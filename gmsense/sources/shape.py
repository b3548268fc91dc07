"""What a source will deliver for a licence over a period, known before any pixel is read: pixel
size, dates, bands. The scan planner (gmsense.batch.planner) sizes its work units from it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from gmsense.config import SeasonSettings

#: Sentinel-2 A+B revisit, days (about 73 acquisitions a year).
SENTINEL2_REVISIT_DAYS = 5.0
#: Landsat 8 + 9 revisit, days (about 46 acquisitions a year).
LANDSAT_REVISIT_DAYS = 8.0


@dataclass(frozen=True)
class ImageryShape:
    """The imagery of one licence over one period, as the cube will hold it.

    ``resolution_m``: pixel side, metres. ``dates``: acquisitions in the period; ``season_dates``:
    those in the growing-season window (what the analysis works on). ``bands``: reflectance bands
    of the cube, ``band_bytes`` bytes per value as loaded (float32: 4); ``mask_bytes``: bytes per
    pixel and date of the masks loaded with them (the boolean ``clear``: 1; synthetic scenes add a
    uint8 ``scl``). ``lazy``: the cube is read lazily, so only the season's dates are ever in
    memory. ``read_pixel_dates_per_s``: how fast the source delivers pixels x dates on one core
    (None: unknown, not counted in time estimates).
    """

    resolution_m: float
    dates: int
    season_dates: int
    bands: int = 6
    band_bytes: int = 4
    mask_bytes: int = 1
    lazy: bool = False
    read_pixel_dates_per_s: float | None = None

    @property
    def loaded_dates(self) -> int:
        """Dates in memory at once while a unit is analysed."""
        return self.season_dates if self.lazy else self.dates

    @property
    def bytes_per_pixel_date(self) -> int:
        """Bytes one pixel of one date takes as loaded: bands and masks."""
        return self.bands * self.band_bytes + self.mask_bytes


def count_season(times: np.ndarray, season: SeasonSettings) -> int:
    """How many of ``times`` (datetime64) fall in the growing-season months."""
    months = np.asarray(times, dtype="datetime64[M]").astype("int64") % 12 + 1
    return int(((months >= season.start_month) & (months <= season.end_month)).sum())


def shape_from_times(times: np.ndarray, season: SeasonSettings, resolution_m: float, **fields: object) -> ImageryShape:
    """The shape of imagery with acquisitions ``times`` (datetime64); ``fields``: the other
    :class:`ImageryShape` fields."""
    times = np.asarray(times, dtype="datetime64[D]")
    return ImageryShape(resolution_m, int(times.size), count_season(times, season), **fields)  # type: ignore[arg-type]


def shape_from_cadence(first: date, last: date, revisit_days: float, season: SeasonSettings, resolution_m: float,
                       **fields: object) -> ImageryShape:
    """The shape of imagery acquired every ``revisit_days`` days from ``first`` to ``last``
    (inclusive), all year round; ``fields``: the other :class:`ImageryShape` fields."""
    span = max((last - first).days, 0)
    times = np.datetime64(first, "D") + np.arange(0.0, span + 1e-9, revisit_days).astype("int64")
    return shape_from_times(times, season, resolution_m, **fields)
