"""Register polygons (mine land) on protected land: rule ``protected_land`` for the register.

:func:`check_register_layers` checks every register polygon of the store against the store's
current protected-land layers (gmsense.geo.layers) and replaces the stored results
(``register_layer_flags``): each overlap is a flag whose severity is the layer kind's
(``rules.protected_land_severity``), with the overlapping area in m2 computed in the polygon's local
UTM zone and the layer version checked. ``gmsense register import`` and ``gmsense layers add|remove``
run it, so the results always follow the register and the layers.
"""

from __future__ import annotations

import pyproj
from shapely import wkt

from gmsense.config import RulesSettings
from gmsense.flags import evaluate_register
from gmsense.geo.layers import LayerSet
from gmsense.store import Store


def register_layer_flags(store: Store, rules: RulesSettings, layers: LayerSet | None = None) -> dict[str, list]:
    """Register id -> its protected_land FlagRecords (gmsense.flags.evaluate_register), against
    ``layers`` (default: the store's current layers)."""
    layers = store.layer_set() if layers is None else layers
    out: dict[str, list] = {}
    if not layers:
        return out
    for row in store.register_rows():
        geometry = wkt.loads(row.local_wkt)
        local = layers.localised(pyproj.CRS.from_user_input(row.local_crs), geometry)
        flags = evaluate_register(row.register_id, geometry, local, rules, (row.attrs or {}).get("mineral_class"))
        if flags:
            out[row.register_id] = flags
    return out


def check_register_layers(store: Store, rules: RulesSettings) -> int:
    """Check the whole register against the current layers and store the result; how many overlaps."""
    return store.save_register_layer_flags(register_layer_flags(store, rules))
