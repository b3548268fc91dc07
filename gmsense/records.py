"""Plain result records that travel from workers to the store (picklable, no database objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The disturbance classes of the data contract (DESIGN.md), one definition for the package.
#: Human-made damage: what flags, reports and the benchmark count and reclamation is owed for.
HUMAN_MADE_CLASSES = ("trench", "pad", "track", "clearing")
#: What a classifier (rules or model) assigns to a patch, what labels train and reviewers choose.
PATCH_CLASSES = (*HUMAN_MADE_CLASSES, "natural")
#: Every value ``disturbance_class`` may take in an export (``uncertain``: a weak or undecided call).
DISTURBANCE_CLASSES = (*PATCH_CLASSES, "uncertain")
#: The agents a ``natural`` patch may name (DESIGN.md: ``natural_agent``).
NATURAL_AGENTS = ("fire", "flood", "windthrow", "dieback", "harvest", "drought")


#: A detection first detected more than this many growing seasons from a stored patch's first
#: detection is another disturbance of its ground, not that patch again: the detector finds a later
#: break of the same pixels only from the second season after the first on
#: (gmsense.detect.change.later_breaks), and a rescan moves a patch's first detection by a season at most.
SAME_DISTURBANCE_SEASONS = 1


def same_disturbance(stored_first: str, new_first: str) -> bool:
    """Whether a detection first detected on ``new_first`` can be the disturbance of a stored patch
    first detected on ``stored_first`` (ISO dates; the growing season is the calendar year). A
    missing date says nothing against it."""
    if not stored_first or not new_first:
        return True
    return abs(int(new_first[:4]) - int(stored_first[:4])) <= SAME_DISTURBANCE_SEASONS


@dataclass
class RecoveryObservation:
    """One growing season of a patch's trajectory against its reference ring (index units)."""

    season: int
    index: str
    n_obs: int
    patch_value: float
    ring_value: float
    relative: float  # patch_value - ring_value


@dataclass
class PatchRecord:
    """A detected patch, before the store gives it an id.

    ``geometry_wkt`` is EPSG:4326 (lon, lat); ``local_wkt`` is in ``local_crs`` (metres), the
    CRS the imagery was analysed in. Dates are ISO strings ``YYYY-MM-DD``.
    """

    site_id: str
    geometry_wkt: str
    local_wkt: str
    local_crs: str
    disturbance_class: str
    confidence: float
    first_detected: str
    confirmed_on: str
    last_seen: str
    area_m2: float
    inside_licence: bool
    area_outside_m2: float
    recovery_status: str
    recovery_ratio: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    recovery: list[RecoveryObservation] = field(default_factory=list)
    natural_agent: str | None = None  # natural patches: the agent that explains them (gmsense.classify.trust)


@dataclass
class FlagRecord:
    """A finding a regulator must look at. ``patch_index`` points into ``SiteResult.patches``."""

    rule: str
    severity: str  # info | warning | critical
    message: str
    patch_index: int | None
    evidence: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # tells apart several licence-level flags of one rule (e.g. one per approved work)


@dataclass
class SiteResult:
    """Everything one licence's scan produced."""

    site_id: str
    patches: list[PatchRecord]
    flags: list[FlagRecord]
    stats: dict[str, Any] = field(default_factory=dict)
    breaks: Any = None  # per-pixel breaks (xarray.Dataset on the cube's grid) when asked for


#: Restoration status of a register polygon in a year (DESIGN.md, "Registers and jurisdictions").
RESTORATION_STATUSES = ("damaged", "under_restoration", "restored", "reverted")


@dataclass
class RestorationRecord:
    """One register polygon in one year (gmsense.restoration): the mean NDVI of the polygon's observed
    pixels and the median of their reference NDVI, the ``ratio`` (relative cover), the
    ``restored_share`` of the polygon's area (0-1), and the status (one of
    :data:`RESTORATION_STATUSES`; None before the polygon was first seen damaged, or without a
    ratio). ``events``: what began this year, comma-separated (``started``, ``finished``,
    ``reverted``). ``image_id``: the composite(s) the year was read from. ``observed_share``: the
    share of the polygon's pixels observed that year (below 1, the rest of the ratio comes from the
    observed years around it; 0: the status is carried from them); ``reference_source`` and
    ``soil_ndvi``: the polygon's reference (gmsense.restoration.reference) and bare-ground NDVI."""

    register_id: str
    year: int
    status: str | None
    polygon_ndvi: float | None
    reference_ndvi: float | None
    ratio: float | None
    restored_share: float | None
    n_pixels: int
    n_reference: int
    events: str = ""
    image_id: str | None = None
    observed_share: float | None = None
    reference_source: str | None = None
    soil_ndvi: float | None = None
