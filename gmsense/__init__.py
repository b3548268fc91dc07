"""gmsense: satellite monitoring of vegetation damage on mineral exploration and mining licences."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gmsense")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
