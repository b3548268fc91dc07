"""The licence register: licences kept in the store with their history (``gmsense licences ...``).

``gmsense licences import FILE`` reads a licence file as ``--sites`` does (gmsense.geo.sites.read_sites:
the same validation, repair and messages) and stores every licence as a *version*. A licence whose
boundary or any attribute differs from its latest version gets a new version (``valid_from`` the
import time; the previous version's ``valid_to`` is set to it); an identical one adds nothing. A
licence missing from a later file is kept as it is (a register extract is often partial); with
``--retire-missing`` it gets a new version whose ``status`` is ``ended`` (change ``retired``).

Two versions are the same licence content when their attributes are equal and their boundaries are
equal to about 0.1 mm (:func:`licence_digest`: the polygon normalised, coordinates in EPSG:4326
rounded to 1e-9 degrees; :func:`same_licence`), so the same file re-exported in another CRS or with its rings starting
at another vertex is not a change.

**Active.** ``gmsense scan --all-active`` scans the licences whose *latest* version is active in
the scan window [start, end] (:func:`inactive_reason`): its ``status`` is not one of
:data:`INACTIVE_STATUSES` (``revoked``, ``ended``; any other status, ``suspended`` included, is
active: disturbance while suspended is exactly what a flag must catch); it did not end before the
window starts (``licence_end`` absent or on/after ``start``; no ``--start`` means no lower bound);
and it does not start after the window ends (``licence_start`` absent or on/before ``end``, which is
today when ``--end`` is not given).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pyproj
import shapely
from shapely import wkt
from shapely.geometry.base import BaseGeometry

from gmsense.geo.sites import Site, reproject_geometry

#: A latest version with one of these statuses (case-insensitive) is not active.
INACTIVE_STATUSES: tuple[str, ...] = ("revoked", "ended")
#: The status a licence retired by ``licences import --retire-missing`` gets in its last version.
RETIRED_STATUS = "ended"
#: Boundary coordinates are compared at this precision (degrees, about 0.1 mm).
_DIGEST_GRID_DEG = 1e-9


def json_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as the store keeps them (a JSON round trip: tuples become lists, dates strings)."""
    return json.loads(json.dumps(attrs, default=str))


def licence_digest(geometry_wgs84: BaseGeometry, attrs: dict[str, Any]) -> str:
    """What makes two versions of a licence the same: boundary (to about 0.1 mm) and attributes."""
    grid = shapely.normalize(shapely.set_precision(geometry_wgs84, _DIGEST_GRID_DEG))
    blob = json.dumps([grid.wkb_hex, json_attrs(attrs)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def same_licence(row: Any, geometry_wgs84: BaseGeometry, attrs: dict[str, Any], digest: str) -> bool:
    """Whether a stored version (gmsense.store.LicenceVersionRow) has this content: the same digest, or
    the same attributes and a boundary whose every vertex lies within the digest's precision of the
    stored one (coordinates that round to either side of the digest's grid)."""
    if row.digest == digest:
        return True
    if json_attrs(row.attrs or {}) != json_attrs(attrs):
        return False
    stored = shapely.normalize(wkt.loads(row.geometry_wkt))
    return bool(stored.equals_exact(shapely.normalize(geometry_wgs84), 10 * _DIGEST_GRID_DEG))


def site_digest(site: Site) -> str:
    return licence_digest(site.geometry_wgs84, site.attrs)


def is_inactive_status(status: Any) -> bool:
    return str(status or "").strip().lower() in INACTIVE_STATUSES


def inactive_reason(attrs: dict[str, Any], start: str | None, end: str | None,
                    today: dt.date | None = None) -> str | None:
    """Why a licence (its latest version's ``attrs``) is not active in the window ``start``-``end``
    (ISO dates; None: open at the start, today at the end); None when it is active."""
    status = attrs.get("status")
    if is_inactive_status(status):
        return f"status {status}"
    window_end = end or (today or dt.date.today()).isoformat()
    licence_start, licence_end = attrs.get("licence_start"), attrs.get("licence_end")
    if start and isinstance(licence_end, str) and licence_end[:10] < start:
        return f"licence ended {licence_end[:10]}, before the window starts ({start})"
    if isinstance(licence_start, str) and licence_start[:10] > window_end:
        return f"licence starts {licence_start[:10]}, after the window ends ({window_end})"
    return None


def version_site(row: Any) -> Site:
    """The licence of a stored version (gmsense.store.LicenceVersionRow), in its local UTM zone as
    it was read from the file: a scan of it sees exactly what a scan of the file would."""
    return Site(row.licence_id, wkt.loads(row.local_wkt), pyproj.CRS.from_user_input(row.local_crs),
                dict(row.attrs or {}))


@dataclass(frozen=True)
class LicenceDiff:
    """What changed from one version of a licence to another. Areas in m² (in the newer version's
    local UTM zone): ``added_m2`` is ground inside the newer boundary only, ``removed_m2`` inside the
    older one only; their sum is the symmetric difference."""

    licence_id: str
    from_version: int
    to_version: int
    attributes: dict[str, tuple[Any, Any]]  # name -> (old value or None, new value or None)
    area_from_m2: float
    area_to_m2: float
    added_m2: float
    removed_m2: float

    @property
    def area_change_m2(self) -> float:
        return self.area_to_m2 - self.area_from_m2

    @property
    def symmetric_difference_m2(self) -> float:
        return self.added_m2 + self.removed_m2

    @property
    def boundary_changed(self) -> bool:
        return self.symmetric_difference_m2 > 0.01  # m²: below the digest's precision, noise


def attribute_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Attributes whose value differs (absent on one side: None there), by name."""
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)}


def diff_versions(old: Any, new: Any) -> LicenceDiff:
    """The difference between two stored versions (gmsense.store.LicenceVersionRow) of one licence."""
    crs = pyproj.CRS.from_user_input(new.local_crs)
    new_geom = wkt.loads(new.local_wkt)
    old_geom = wkt.loads(old.local_wkt)
    old_crs = pyproj.CRS.from_user_input(old.local_crs)
    if old_crs != crs:
        old_geom = reproject_geometry(old_geom, old_crs, crs)
    return LicenceDiff(
        licence_id=new.licence_id, from_version=old.version, to_version=new.version,
        attributes=attribute_changes(old.attrs or {}, new.attrs or {}),
        area_from_m2=float(old_geom.area), area_to_m2=float(new_geom.area),
        added_m2=float(new_geom.difference(old_geom).area), removed_m2=float(old_geom.difference(new_geom).area))
