"""The one place for geodiff's exceptions.

Every error derives from :class:`GeodiffError`; each subclass also inherits the matching builtin
(``ValueError``, ``OSError``, ...) so callers can catch either. Messages say what went wrong *and what to do*.
The CLI prints ``str(error)`` and exits with ``error.exit_code`` instead of a traceback.
"""

from __future__ import annotations


class GeodiffError(Exception):
    """Base class of all geodiff errors."""

    exit_code = 1


class InvalidBBoxError(GeodiffError, ValueError):
    """A bounding box is malformed, inverted, degenerate or out of range."""

    exit_code = 2


class AreaTooLargeError(GeodiffError, ValueError):
    """The requested grid has more pixels than allowed."""

    exit_code = 2


class InvalidParameterError(GeodiffError, ValueError):
    """A parameter value (resolution, steps, device, ...) is not usable."""

    exit_code = 2


class UnsupportedFileError(GeodiffError, ValueError):
    """A file type geodiff cannot read."""

    exit_code = 2


class CorruptFileError(GeodiffError, OSError):
    """A file exists but cannot be parsed."""

    exit_code = 3


class InputNotFoundError(GeodiffError, FileNotFoundError):
    """An input file or folder does not exist."""

    exit_code = 3


class EmptyAreaError(GeodiffError, ValueError):
    """The source has no mappable features inside the bounding box."""

    exit_code = 4


class OverpassError(GeodiffError, ConnectionError):
    """The Overpass API could not be reached, timed out or returned an error."""

    exit_code = 5


class ModelError(GeodiffError, ValueError):
    """A model folder is missing, incomplete or incompatible with the request."""

    exit_code = 6


class ConfigError(GeodiffError, ValueError):
    """A configuration file is missing keys or has invalid values."""

    exit_code = 2


class DataError(GeodiffError, ValueError):
    """A training-data folder or dataset is malformed."""

    exit_code = 3


class OutputError(GeodiffError, OSError):
    """An output could not be written completely (disk full, folder not writable, target changed meanwhile).

    Nothing is left under the output's name and an existing file there is kept.
    """

    exit_code = 7


class GeodiffWarning(UserWarning):
    """Something looks wrong but the result may still be usable (e.g. an OSM file that may be truncated)."""
