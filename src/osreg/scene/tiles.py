"""Tie points at full resolution: windows of the optical scene matched against the SAR pre-aligned by the coarse
transform, by any matcher.

A task (:func:`match_windows`) gets a :class:`WindowContext` and a few window centres, builds its matcher once and
reads only its windows, so tasks can run in this process or on the workers of a Dask cluster.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from osreg.geometry import apply_transform
from osreg.io.raster import Raster
from osreg.io.windows import RasterSource
from osreg.matchers import MethodSetup, build_matcher
from osreg.preprocess import Limits, PreprocessConfig, prepare_optical, prepare_sar
from osreg.scene.field import WorkingFrame
from osreg.scene.sample import CoarseMask, sample_sar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowContext:
    """Everything a window task needs (small and picklable: sources are file descriptions, not pixels).

    Attributes:
        optical, sar: the scene's rasters.
        frame: working frame -> SAR pixels.
        H: the coarse transform, optical px -> working px.
        method: the matcher of the windows (without a search: the windows are pre-aligned).
        preprocess: preprocessing with the SAR scale resolved on the scene.
        optical_limits, sar_limits: the scene's stretch limits.
        window: window side (optical pixels).
        optical_border, sar_border: black borders found on the decimated scene (None: none).
    """

    optical: RasterSource
    sar: RasterSource
    frame: WorkingFrame
    H: np.ndarray
    method: MethodSetup
    preprocess: PreprocessConfig
    optical_limits: Limits | None
    sar_limits: Limits | None
    window: int
    optical_border: CoarseMask | None = None
    sar_border: CoarseMask | None = None


@dataclass(frozen=True)
class WindowMatches:
    """The matches of one window.

    Attributes:
        index: the window's index in the scene's list.
        keypoints0: ``(N, 2)`` optical pixels.
        keypoints1: ``(N, 2)`` positions in the pre-aligned frame (optical pixels; the working-frame position is
            ``H`` of it).
        confidence: ``(N,)``.
    """

    index: int
    keypoints0: np.ndarray
    keypoints1: np.ndarray
    confidence: np.ndarray


def read_window_pair(ctx: WindowContext, col0: int, row0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                        np.ndarray]:
    """The preprocessed optical window at ``(col0, row0)`` and the SAR resampled into it through ``H``, with their
    validity masks."""
    n = ctx.window
    opt = ctx.optical.read((col0, row0, n, n))
    mask0 = opt.mask if ctx.optical_border is None else opt.mask & ctx.optical_border.window(col0, row0, n, n)
    x, y = np.meshgrid(np.arange(col0, col0 + n, dtype=np.float64), np.arange(row0, row0 + n, dtype=np.float64))
    q = apply_transform(ctx.H, np.stack([x.ravel(), y.ravel()], axis=1)).reshape(n, n, 2)
    data, mask1 = sample_sar(ctx.sar, ctx.frame, q[..., 0], q[..., 1], ctx.sar_border)
    sar = Raster(np.nan_to_num(data, nan=0.0), mask1, nodata=None, path=ctx.sar.path)
    opt = Raster(opt.data, mask0, nodata=opt.nodata, path=ctx.optical.path)
    name = ctx.method.name
    return (prepare_optical(opt, ctx.preprocess, name, ctx.optical_limits), mask0,
            prepare_sar(sar, ctx.preprocess, name, ctx.sar_limits), mask1)


def match_windows(ctx: WindowContext, centres: np.ndarray, indices: np.ndarray) -> list[WindowMatches]:
    """Match the windows centred on ``centres`` ``(M, 2)`` (optical pixels); one result per window, possibly
    empty."""
    matcher = build_matcher(ctx.method, georeferenced=True)
    out = []
    half = ctx.window // 2
    for (cx, cy), idx in zip(np.asarray(centres, float), indices):
        col0, row0 = int(round(cx)) - half, int(round(cy)) - half
        img0, mask0, img1, mask1 = read_window_pair(ctx, col0, row0)
        if mask0.mean() < 0.5 or mask1.mean() < 0.5:
            out.append(WindowMatches(int(idx), np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)))
            continue
        res = matcher.match(img0, img1, mask0, mask1)
        off = np.array([col0, row0], float)
        out.append(WindowMatches(int(idx), res.keypoints0 + off, res.keypoints1 + off, res.confidence))
    return out


def window_centres(width: int, height: int, spacing: int, window: int) -> np.ndarray:
    """Centres of the tie-point windows on a regular grid over the optical scene (``(M, 2)``, x then y), whole
    windows inside the scene."""
    half = window // 2
    def axis(n: int) -> np.ndarray:
        if n < window:
            return np.zeros(0)
        k = max(1, int((n - window) // spacing) + 1)
        start = half + ((n - window) - (k - 1) * spacing) / 2
        return start + spacing * np.arange(k)
    xs, ys = axis(width), axis(height)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


__all__ = ["WindowContext", "WindowMatches", "match_windows", "read_window_pair", "window_centres"]
