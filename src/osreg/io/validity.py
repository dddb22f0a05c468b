"""Which pixels of an input can be used, and whether there are enough of them.

- :func:`mask_edge_borders`: rotated products and PNG/JPEG exports often carry black (exact zero) borders with no
  nodata tag; the zero pixels connected to the image edge are masked, as GDAL's ``nearblack`` does.
- :func:`check_usable`: a constant image, or one with too few valid pixels, is refused with a message that says so.
- :func:`check_overlap_area`: the SAR resampled onto the optical grid must cover enough of it.
"""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np

from osreg.errors import ConstantImageError, ImageTooSmallError, NotEnoughDataError
from osreg.io.raster import Raster

logger = logging.getLogger(__name__)


def edge_connected(candidate: np.ndarray) -> np.ndarray:
    """The pixels of a boolean ``candidate`` map that are 8-connected to the image edge through candidate pixels."""
    c = candidate.astype(np.uint8)
    if not (c[0].any() or c[-1].any() or c[:, 0].any() or c[:, -1].any()):
        return np.zeros(candidate.shape, bool)
    n, labels = cv2.connectedComponents(c, connectivity=8)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]  # label 0 is the background (non-candidate pixels)
    return np.isin(labels, edge)


def mask_edge_borders(raster: Raster, role: str, value: float = 0.0) -> tuple[Raster, int]:
    """Mask the pixels equal to ``value`` in every band that are connected to the image edge (GDAL ``nearblack``
    with no tolerance).

    Only rasters that declare no nodata value are changed: a declared nodata value says which pixels are invalid,
    and then ``value`` is data.

    Returns:
        the raster with the border pixels masked, and how many pixels were masked.
    """
    if raster.nodata is not None:
        return raster, 0
    candidate = np.all(raster.data == np.asarray(value, dtype=raster.data.dtype), axis=0) & raster.mask
    border = edge_connected(candidate)
    n = int(border.sum())
    if n == 0:
        return raster, 0
    logger.info("%s image: masked %d px of edge-connected borders of value %g (no nodata declared)", role, n, value)
    return dataclasses.replace(raster, mask=raster.mask & ~border), n


def _bbox(mask: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0
    return int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def check_usable(raster: Raster, role: str, method: str, min_size: int) -> None:
    """Refuse an image a method cannot register.

    Raises:
        ImageTooSmallError: a side shorter than ``min_size``.
        ConstantImageError: every valid pixel has the same value.
        NotEnoughDataError: the valid pixels span less than ``min_size`` in either direction, or number fewer than
            ``min_size`` squared.
    """
    where = f" {raster.path}" if raster.path else ""
    if min(raster.height, raster.width) < min_size:
        raise ImageTooSmallError(f"{role} image{where} is {raster.width}x{raster.height} px; method '{method}' needs "
                                 f"at least {min_size}x{min_size} px")
    values = raster.data[:, raster.mask]
    if values.size and np.all(values.max(axis=1) == values.min(axis=1)):
        v = values[:, 0]
        shown = f"{float(v[0]):g}" if len(v) == 1 else "(" + ", ".join(f"{float(x):g}" for x in v) + ")"
        raise ConstantImageError(f"{role} image{where} is constant (every valid pixel is {shown}): there is nothing "
                                 "to match")
    w, h = _bbox(raster.mask)
    n = int(raster.mask.sum())
    if min(w, h) < min_size or n < min_size * min_size:
        raise NotEnoughDataError(f"too little valid data in {role} image{where}: its {n} valid px span {w}x{h} px; "
                                 f"method '{method}' needs at least {min_size}x{min_size} px")


def check_overlap_area(valid: np.ndarray, method: str, min_size: int) -> None:
    """Refuse a georeferenced pair whose common valid area on the optical grid is too small to register.

    Args:
        valid: ``(H, W)`` bool, where both the optical image and the SAR resampled onto its grid are valid.

    Raises:
        NotEnoughDataError: the overlap spans less than ``min_size`` in either direction, or is smaller than
            ``min_size`` squared.
    """
    w, h = _bbox(valid)
    n = int(valid.sum())
    if min(w, h) < min_size or n < min_size * min_size:
        raise NotEnoughDataError(f"too little overlap to register: the valid SAR covers {n} px of the optical grid, "
                                 f"spanning {w}x{h} px; method '{method}' needs at least {min_size}x{min_size} px")
