"""Errors a user can act on.

Every error raised for bad input derives from :class:`GmsenseError`; the command line prints its
message on one line (no traceback) and exits with :attr:`GmsenseError.exit_code`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3


class GmsenseError(Exception):
    """Base class: something the user can fix. The message says what is wrong and how to fix it."""

    exit_code = EXIT_FAILED


class InputError(GmsenseError):
    """The user's input (a file, a flag, a setting) is wrong."""

    exit_code = EXIT_BAD_INPUT


class SitesError(InputError):
    """Licence areas could not be read or validated."""


class ImageryError(InputError):
    """Imagery is missing, unreadable or does not fit the licence."""


class NoObservationsError(ImageryError):
    """The imagery holds no clear observation of an area (outside the footprint, all no-data or
    cloud). A tile of a licence with this answers empty; a whole licence with it fails."""


class ConfigError(InputError):
    """A settings file or override is invalid."""


class StoreError(GmsenseError):
    """The results store cannot be opened or written."""
