"""The osreg exception hierarchy.

Every error a user can cause is an :class:`InputError` (also a :class:`ValueError`); file problems are
additionally :class:`OSError`. A registration that ran but cannot be trusted raises
:class:`RegistrationFailedError`, which carries the report explaining why.
"""

from __future__ import annotations

from typing import Any


class OsregError(Exception):
    """Base class of every error osreg raises on purpose."""


class InputError(OsregError, ValueError):
    """The input (images, options) cannot be used as given."""


class RasterReadError(InputError, OSError):
    """A raster file is missing or cannot be read."""


class NoOverlapError(InputError):
    """Two georeferenced rasters do not cover a common area."""


class NodataError(InputError):
    """A raster holds no valid pixel."""


class ImageTooSmallError(InputError):
    """An image is smaller than a matcher needs."""


class UnknownMethodError(InputError):
    """A matcher name that osreg does not know."""


class BandCountError(InputError):
    """A raster's band count cannot be turned into what a matcher takes."""


class ConstantImageError(InputError):
    """Every valid pixel of an image has the same value: there is nothing to match."""


class NotEnoughDataError(InputError):
    """Too few valid pixels (or too little overlap) to register."""


class MethodOptionError(InputError):
    """An option a method does not have, or a value of the wrong type."""


class CheckpointError(InputError):
    """A file is not a checkpoint osreg can load (wrong content, or objects other than tensors and plain data)."""


class OutputLocationError(InputError, OSError):
    """An output path that cannot be written (under a file, in an unwritable folder, a folder where a file is
    expected)."""


class OutputExistsError(OsregError, FileExistsError):
    """An output file exists and ``overwrite`` was not given."""


class WeightsNotFoundError(OsregError, FileNotFoundError):
    """Model weights could not be found where osreg looked."""


class RegistrationFailedError(OsregError):
    """The registration ran but its result is not trustworthy.

    Attributes:
        report: the report dictionary (the same content as ``report.json``).
        reasons: the human-readable reasons for the failure verdict.
    """

    def __init__(self, reasons: list[str], report: dict[str, Any] | None = None) -> None:
        self.reasons = list(reasons)
        self.report = report or {}
        super().__init__("registration is not trustworthy: " + "; ".join(self.reasons))
