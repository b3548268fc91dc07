"""gmsense: satellite monitoring of vegetation damage on mineral exploration and mining licences.

The library a notebook uses is the one every scan runs::

    import gmsense
    cube = gmsense.open_imagery("imagery/")              # the cube contract (DESIGN.md)
    result = gmsense.analyse(cube, licence_polygon)      # default model, as `gmsense scan`
    result.patches.plot(column="disturbance_class")      # a GeoDataFrame in the cube's CRS

The public names are imported on first use, so ``import gmsense`` (and the command line) stays
quick.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("gmsense")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from gmsense.api import Result, analyse, load_model, open_imagery
    from gmsense.config import Settings, load_settings
    from gmsense.geo.sites import Site, read_sites

__all__ = ["Result", "Settings", "Site", "__version__", "analyse", "load_model", "load_settings",
           "open_imagery", "read_sites"]

_LAZY = {"Result": "gmsense.api", "analyse": "gmsense.api", "load_model": "gmsense.api",
         "open_imagery": "gmsense.api", "Settings": "gmsense.config", "load_settings": "gmsense.config",
         "Site": "gmsense.geo.sites", "read_sites": "gmsense.geo.sites"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gmsense' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
