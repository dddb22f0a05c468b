"""Sampling a SAR raster at given positions, reading only the window they need."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from osreg.io.windows import RasterSource
from osreg.scene.field import WorkingFrame


@dataclass(frozen=True)
class CoarseMask:
    """A validity mask known at reduced resolution (e.g. the black borders found on the decimated scene), looked up
    at full-resolution pixels (nearest).

    Attributes:
        mask: ``(h, w)`` bool at reduced resolution.
        scale_x, scale_y: reduced pixels per full-resolution pixel.
    """

    mask: np.ndarray
    scale_x: float
    scale_y: float

    def window(self, col0: int, row0: int, w: int, h: int) -> np.ndarray:
        """The mask over a full-resolution window (False outside)."""
        mh, mw = self.mask.shape
        cols = np.floor((np.arange(col0, col0 + w) + 0.5) * self.scale_x).astype(int)
        rows = np.floor((np.arange(row0, row0 + h) + 0.5) * self.scale_y).astype(int)
        inside = ((rows >= 0) & (rows < mh))[:, None] & ((cols >= 0) & (cols < mw))[None, :]
        return self.mask[np.ix_(np.clip(rows, 0, mh - 1), np.clip(cols, 0, mw - 1))] & inside


def sample_sar(sar: RasterSource, frame: WorkingFrame, wx: np.ndarray, wy: np.ndarray,
               border: CoarseMask | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The SAR bands at working-frame positions ``(h, w)``, bilinear; NaN and invalid outside the valid SAR.

    Only the window covering the positions is read. Where the SAR is much finer than the positions' spacing it is
    read decimated (area average) so that the result does not alias and the window stays small.

    Returns:
        ``(bands, h, w)`` float32 data (NaN where invalid) and the ``(h, w)`` validity mask.
    """
    h, w = wx.shape
    out = np.full((sar.count, h, w), np.nan, np.float32)
    valid = np.zeros((h, w), bool)
    sx, sy = frame.to_sar(wx.astype(np.float64), wy.astype(np.float64))
    ok = np.isfinite(sx) & np.isfinite(sy)
    if not ok.any():
        return out, valid
    x0, x1 = max(0, math.floor(sx[ok].min()) - 1), min(sar.width, math.ceil(sx[ok].max()) + 2)
    y0, y1 = max(0, math.floor(sy[ok].min()) - 1), min(sar.height, math.ceil(sy[ok].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return out, valid
    # SAR pixels per output pixel along the block: decimate the read where the SAR is finer
    span = max((sx[ok].max() - sx[ok].min()) / max(w - 1, 1), (sy[ok].max() - sy[ok].min()) / max(h - 1, 1))
    factor = max(1, int(np.floor(span / 1.5))) if min(h, w) > 1 else 1
    src = sar.read((x0, y0, x1 - x0, y1 - y0), factor=factor)
    m = src.mask
    if border is not None:
        full = border.window(x0, y0, x1 - x0, y1 - y0)
        m = m & (full if factor == 1 else cv2.resize(full.astype(np.uint8), (m.shape[1], m.shape[0]),
                                                       interpolation=cv2.INTER_NEAREST).astype(bool))
    fx = ((x1 - x0) / m.shape[1], (y1 - y0) / m.shape[0])  # full pixels per read pixel
    mx = np.ascontiguousarray(((sx - x0 + 0.5) / fx[0] - 0.5).astype(np.float32))
    my = np.ascontiguousarray(((sy - y0 + 0.5) / fx[1] - 0.5).astype(np.float32))
    mx[~ok] = -10
    my[~ok] = -10
    weight = cv2.remap(m.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    valid = weight > 0.999
    for b in range(sar.count):
        band = np.where(m, src.data[b], 0).astype(np.float32)
        v = cv2.remap(band, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[b] = np.where(valid, v, np.nan)
    return out, valid


__all__ = ["CoarseMask", "sample_sar"]
