"""Phenology groups: a reference that shares a pixel's calendar.

The detector compares each pixel with its own history after removing the per-date scene median
(:mod:`gmsense.detect.context`). On a plain of fields with several crop calendars that median
follows no field: a field sown two weeks later than most keeps a within-season anomaly that a
one-harmonic model cannot follow, its residual spread doubles (0.08 NDVI against the 0.04 floor)
and the drop threshold (four spreads) grows past what a track or a trench can give.

So the licence's sample is cut into groups of pixels with the same seasonal curve: per pixel, the
median of its anomaly (index less the scene median) in :data:`CURVE_BINS` bins of the growing
season over the first ``baseline_seasons`` seasons of the series (seasons nothing can be detected
in, so a disturbance the detector could report never shapes its own group); k-means on the
sample's curves (at most :data:`MAX_GROUPS`), groups whose curves differ by less than
:data:`MERGE_RMS` merged. A pixel belongs to the group whose curve is nearest its own, and is
compared with the per-date median of that group's sample pixels instead of the scene's.

A group's median is only used when it earns it, since a reference made of few pixels can follow
one event and cancel it (the way a tile's median cancelled a clearing covering the tile):

- at least :data:`MIN_GROUP_SAMPLES` sample pixels;
- it lowers the members' median residual spread (the detector's own robust seasonal fit over the
  grouping seasons) by at least :data:`MIN_SPREAD_GAIN`: forest, grass and water at the spread
  floor keep the scene median;
- its level relative to the scene (per season, the median over the season's dates) moves by at most
  :data:`MAX_LEVEL_RANGE` between seasons: a calendar repeats; a group whose level steps is a
  clearing, a burn or a flood that happened to share a curve, and is not a reference.

Everything here is taken from the licence-wide sample, in a canonical order of its pixels, so it
does not depend on how a scan cuts the licence into tiles; a pixel's group depends only on its
own series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import ClusterError, kmeans2

from gmsense._numeric import nan_median
from gmsense.config import DetectSettings, SeasonSettings
from gmsense.cube.ops import season_year
from gmsense.detect.model import design_matrix, robust_fit

#: Bins of the growing season a pixel's curve is summarised in (about 19 days each in May-September).
CURVE_BINS = 8
#: Most groups k-means is asked for: a plain rarely has more crop calendars than this.
MAX_GROUPS = 6
#: Groups whose curves differ by less than this root mean square (index units, NDVI) are one.
MERGE_RMS = 0.03
#: Sample pixels a group needs to be a reference (of up to MAX_SAMPLED).
MIN_GROUP_SAMPLES = 50
#: Share by which a group's median must lower its members' residual spread to be used.
MIN_SPREAD_GAIN = 0.25
#: Most a used group's per-season level (relative to the scene median) may move, index units.
MAX_LEVEL_RANGE = 0.1
#: Most pixels of the licence's sample the groups are made from (an even, canonical subset).
MAX_SAMPLED = 8_000
#: Most members a group's spread is tested on (evenly, in the subset's order).
MAX_SPREAD_TESTED = 1_000
#: Clear bins a curve needs (of CURVE_BINS); pixels with fewer sit in no group.
MIN_CURVE_BINS = CURVE_BINS // 2
_SEED = 0
_DAYS_PER_MONTH = 30.44


@dataclass(frozen=True)
class PhenologyGroups:
    """The licence's phenology groups: ``seasons`` (the seasons whose curves assign a pixel),
    ``centroids`` (G, CURVE_BINS) curves, ``fill`` (CURVE_BINS,) for a pixel's missing bins, and
    ``offsets`` (T, G): the group's per-date median less the scene median on ``times``, index units
    (0 for a group that is not used)."""

    seasons: np.ndarray
    centroids: np.ndarray
    fill: np.ndarray
    times: np.ndarray
    offsets: np.ndarray

    def offsets_at(self, times: np.ndarray) -> np.ndarray:
        """``offsets`` on ``times`` (T', G); 0 on a date the groups lack."""
        times = np.asarray(times, dtype="datetime64[ns]")
        out = np.zeros((times.size, self.offsets.shape[1]))
        where = np.minimum(np.searchsorted(self.times, times), max(self.times.size - 1, 0))
        found = (self.times[where] == times) if self.times.size else np.zeros(times.size, dtype=bool)
        out[found] = self.offsets[where[found]]
        return out


def season_bin(times: np.ndarray, season: SeasonSettings | None) -> np.ndarray:
    """The curve bin (0..CURVE_BINS-1) of each date: its position in the growing season (months
    ``start_month``..``end_month``, across New Year too); calendar months 5-9 without ``season``."""
    season = season or SeasonSettings()
    stamps = np.asarray(times, dtype="datetime64[ns]")
    month = stamps.astype("datetime64[M]").astype("int64") % 12 + 1
    day = (stamps.astype("datetime64[D]") - stamps.astype("datetime64[M]")).astype("int64")
    length = ((season.end_month - season.start_month) % 12 + 1) * _DAYS_PER_MONTH
    position = ((month - season.start_month) % 12) * _DAYS_PER_MONTH + day
    return np.clip((position / length * CURVE_BINS).astype("int64"), 0, CURVE_BINS - 1)


def grouping_seasons(years: np.ndarray, baseline_seasons: int) -> np.ndarray:
    """The first ``baseline_seasons`` seasons of ``years`` (the detector's first baseline)."""
    return np.unique(years)[:baseline_seasons]


def curves(anomaly: np.ndarray, bins: np.ndarray, in_grouping: np.ndarray) -> np.ndarray:
    """(P, CURVE_BINS) median anomaly per bin over the grouping dates, from ``anomaly`` (T, P),
    NaN where missing (a bin with no clear date stays NaN)."""
    out = np.full((anomaly.shape[1], CURVE_BINS), np.nan)
    for b in range(CURVE_BINS):
        rows = np.flatnonzero(in_grouping & (bins == b))
        if rows.size:
            out[:, b] = nan_median(anomaly[rows])
    return out


def nearest_group(shapes: np.ndarray, groups: PhenologyGroups) -> np.ndarray:
    """Each curve's group (P,), -1 for a curve with fewer than MIN_CURVE_BINS clear bins."""
    enough = np.isfinite(shapes).sum(axis=1) >= MIN_CURVE_BINS
    filled = np.where(np.isfinite(shapes), shapes, groups.fill[None, :])
    distance = ((filled[:, None, :] - groups.centroids[None, :, :]) ** 2).sum(axis=-1)
    return np.where(enough, distance.argmin(axis=1), -1)


@dataclass(frozen=True)
class GroupsOnDates:
    """:class:`PhenologyGroups` laid on the dates of an index: each date's curve ``bins`` (T,),
    whether it is a grouping date (``in_grouping``, T,) and the offsets ``table`` (T, G + 1; the last
    column 0, for pixels in no group)."""

    groups: PhenologyGroups
    bins: np.ndarray
    in_grouping: np.ndarray
    table: np.ndarray

    @classmethod
    def of(cls, groups: PhenologyGroups, times: np.ndarray, season: SeasonSettings | None) -> GroupsOnDates:
        table = np.concatenate([groups.offsets_at(times), np.zeros((len(times), 1))], axis=1)
        return cls(groups, season_bin(times, season), np.isin(season_year(times, season), groups.seasons), table)

    def pixel_offsets(self, anomaly: np.ndarray) -> np.ndarray:
        """(T, P): each pixel's group offset, from ``anomaly`` (T, P; the index less the scene
        median, NaN where missing or not kept); 0 for pixels in no group."""
        member = nearest_group(curves(anomaly, self.bins, self.in_grouping), self.groups)
        return self.table[:, member]  # member -1 takes the zero column


def _kmeans(curves_: np.ndarray, n_groups: int) -> np.ndarray:
    """Centroids of ``curves_`` (n, CURVE_BINS) by k-means (scipy, k-means++ from a fixed seed:
    the same curves give the same centroids); one group fewer while a group comes out empty."""
    for k in range(n_groups, 1, -1):
        try:
            centroids, _ = kmeans2(curves_, k, iter=20, minit="++", missing="raise", seed=_SEED)
        except ClusterError:
            continue
        return centroids
    return curves_.mean(axis=0, keepdims=True)


def _merge_close(centroids: np.ndarray) -> np.ndarray:
    """Centroids with every pair closer than MERGE_RMS merged (the later one dropped)."""
    centroids = centroids.copy()
    while len(centroids) > 1:
        distance = np.sqrt(((centroids[:, None] - centroids[None]) ** 2).mean(axis=-1))
        np.fill_diagonal(distance, np.inf)
        i, j = np.unravel_index(np.argmin(distance), distance.shape)
        if distance[i, j] >= MERGE_RMS:
            break
        centroids = np.delete(centroids, max(i, j), axis=0)
    return centroids


def _members_spread(anomaly: np.ndarray, doy: np.ndarray, settings: DetectSettings) -> float:
    """Median residual spread of the detector's robust seasonal fit over ``anomaly`` (T, P)."""
    observed = np.isfinite(anomaly)
    _, sigma, _ = robust_fit(design_matrix(doy, settings.harmonics), anomaly, observed, settings)
    return float(np.median(sigma))


def fit_groups(values: np.ndarray, times: np.ndarray, scene_offset: np.ndarray, keep: np.ndarray,
               settings: DetectSettings, season: SeasonSettings | None) -> PhenologyGroups | None:
    """The phenology groups of a licence from its sample ``values`` (T, n; NaN where not clear) on
    ``times``, the scene median ``scene_offset`` (T,) and the dates to ``keep`` (not haze dips);
    None when no group earns its place (module docstring) or the series is too short."""
    if settings.harmonics == 0 or values.shape[1] < MIN_GROUP_SAMPLES:
        return None
    times = np.asarray(times, dtype="datetime64[ns]")
    years = season_year(times, season)
    seasons = grouping_seasons(years, settings.baseline_seasons)
    in_grouping = np.isin(years, seasons) & keep
    if np.unique(years).size <= seasons.size or not in_grouping.any():
        return None
    anomaly = values.astype("float64") - scene_offset[:, None]
    anomaly[~keep] = np.nan
    # An even, canonical subset of the sample (ordered by a fixed projection of each pixel's series,
    # so the same pixels are chosen whatever the order of the tiles' samples): groups, medians and
    # spreads are settled long before 40,000 pixels.
    series_key = np.nan_to_num(anomaly, nan=9.0).T @ np.random.default_rng(_SEED).random(times.size)
    order = np.argsort(series_key, kind="stable")
    anomaly = anomaly[:, order[::max(1, order.size // MAX_SAMPLED)]]
    shapes = curves(anomaly, season_bin(times, season), in_grouping)
    usable = np.isfinite(shapes).sum(axis=1) >= MIN_CURVE_BINS
    if usable.sum() < MIN_GROUP_SAMPLES:
        return None
    seen = np.isfinite(shapes[usable])
    fill = np.where(seen, shapes[usable], 0.0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)  # 0: a bin never seen
    filled = np.where(np.isfinite(shapes), shapes, fill[None, :])[usable]
    centroids = _merge_close(_kmeans(filled, min(MAX_GROUPS, np.unique(filled, axis=0).shape[0])))
    groups = PhenologyGroups(seasons, centroids, fill, times, np.zeros((times.size, len(centroids))))
    member = nearest_group(shapes, groups)
    doy = (times.astype("datetime64[D]") - times.astype("datetime64[Y]")).astype(int) + 1.0
    grouping_t = np.flatnonzero(in_grouping)
    offsets = np.zeros_like(groups.offsets)
    for g in range(len(groups.centroids)):
        members = anomaly[:, member == g]
        if members.shape[1] < MIN_GROUP_SAMPLES:
            continue
        median = np.nan_to_num(nan_median(members.T))  # 0 on dates none of the group saw
        tested = members[grouping_t][:, ::max(1, members.shape[1] // MAX_SPREAD_TESTED)]
        before = _members_spread(tested, doy[grouping_t], settings)
        after = _members_spread(tested - median[grouping_t, None], doy[grouping_t], settings)
        levels = [np.median(median[(years == y) & keep]) for y in np.unique(years) if ((years == y) & keep).any()]
        if after <= (1 - MIN_SPREAD_GAIN) * before and max(levels) - min(levels) <= MAX_LEVEL_RANGE:
            offsets[:, g] = median
    if not offsets.any():
        return None
    return PhenologyGroups(seasons, groups.centroids, fill, times, offsets)
