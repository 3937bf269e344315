"""One error root for the whole library.

Every error the library raises on purpose derives from :class:`SegEarthGeoError`;
subclasses also derive from the matching builtin so that callers who catch
``ValueError`` or ``OSError`` keep working. Messages say what to do next and the
original cause is chained (``raise ... from exc``).
"""

from __future__ import annotations


class SegEarthGeoError(Exception):
    """Root of every error raised on purpose by segearth-geo."""


class UsageError(SegEarthGeoError, ValueError):
    """The caller asked for something that cannot be done (bad prompt, bad band list, bad bbox…)."""


class RasterError(SegEarthGeoError, OSError):
    """A raster is missing, unreadable, corrupt or has an unsupported layout."""


class OutputError(SegEarthGeoError, OSError):
    """An output cannot be written (exists without overwrite, unwritable folder, unknown format)."""


class OutputNameError(OutputError, UsageError):
    """The output named on the command line cannot be used as given (exists without overwrite, unknown
    extension, a folder); a usage error (exit code 2), unlike a folder that cannot be written (exit code 1)."""


class ModelError(SegEarthGeoError, RuntimeError):
    """A model or checkpoint cannot be found, loaded or run."""


class CheckpointError(ModelError):
    """A checkpoint file is missing, malformed, or does not match the model (keys, shapes, unsafe pickle)."""


class DatasetError(SegEarthGeoError, OSError):
    """A dataset folder or annotation file is missing or malformed."""


class Cancelled(SegEarthGeoError):
    """The job was cancelled by the caller; nothing was written."""
