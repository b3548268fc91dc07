"""Downloads of the review app: the flags of the queue's filters, or the patches of the licences
they select, as GeoJSON (EPSG:4326), GeoPackage or CSV, built by gmsense.outputs.export."""

from __future__ import annotations

import tempfile
from pathlib import Path

from gmsense.outputs.export import flags_frame, patches_frame, write_frame
from gmsense.review import service
from gmsense.store import Store

#: Filters that select licences (the rest select flags).
SITE_FILTERS = ("province", "city", "county", "mineral_class", "licence_type", "site_id")


def export_bytes(store: Store, what: str, fmt: str, flt: service.QueueFilter) -> bytes:
    """``flags``: every flag the filter selects (all pages); ``patches``: every patch of the
    licences the filter's licence fields select."""
    if what == "flags":
        ids = {item["id"] for item in service.queue(store, flt, 1, page_size=10**9).items}
        frame = flags_frame(store)
        frame = frame[frame["flag_id"].isin(ids)]
    else:
        sites = {r.site_id for r in store.site_rows()
                 if all(not getattr(flt, k) or str(((r.attrs or {}) | {"site_id": r.site_id}).get(k) or "")
                        == getattr(flt, k) for k in SITE_FILTERS)}
        frame = patches_frame(store)
        frame = frame[frame["site_id"].isin(sites)]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_frame(frame, Path(tmp) / f"{what}.{fmt}", fmt, layer=what)
        return path.read_bytes()
