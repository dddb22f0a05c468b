"""CFOG: channel features of orientated gradients with FFT-accelerated template matching.

After Ye et al., "Fast and robust matching for multimodal remote sensing image registration" (TGRS 2019):
a dense descriptor of oriented gradient magnitudes (absolute, so that the contrast reversals between optical
and SAR do not matter), smoothed in space and across orientations and normalised per pixel; similarity is the
sum of squared differences of those channels, computed for all shifts at once with FFTs. Templates on a grid of
textured points of the optical image are searched for within ``search_radius`` of the same position in the SAR
image (the images must already be roughly aligned, e.g. by georeferencing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy import fft as sfft

from osreg.descriptors import oriented_gradient_channels
from osreg.matchers.base import Matcher
from osreg.types import MatchResult


@dataclass(frozen=True)
class CFOGConfig:
    """Attributes:
    n_orientations: orientation channels over 180 degrees.
    sigma: spatial Gaussian smoothing of the channels (pixels).
    template_size: template side (pixels, odd values are rounded up to even).
    search_radius: largest shift searched in each direction (pixels).
    grid_step: spacing of candidate template centres (pixels).
    max_points: most templates matched.
    max_side: working resolution.
    """

    n_orientations: int = 9
    sigma: float = 0.8
    template_size: int = 48
    search_radius: int = 24
    grid_step: int = 24
    max_points: int = 256
    max_side: int = 1024


def _select_points(img: np.ndarray, mask: np.ndarray | None, cfg: CFOGConfig, margin: int) -> np.ndarray:
    """Template centres: in each grid cell, the pixel of strongest corner response (Harris)."""
    h, w = img.shape
    resp = cv2.cornerHarris(img.astype(np.float32), 5, 3, 0.04)
    resp = np.maximum(resp, 0)
    if mask is not None:
        resp = np.where(mask, resp, 0)
    pts, scores = [], []
    step = cfg.grid_step
    for y0 in range(margin, h - margin - 1, step):
        for x0 in range(margin, w - margin - 1, step):
            cell = resp[y0 : min(y0 + step, h - margin), x0 : min(x0 + step, w - margin)]
            if cell.size == 0:
                continue
            r, c = np.unravel_index(np.argmax(cell), cell.shape)
            if cell[r, c] <= 0:
                continue
            pts.append((x0 + c, y0 + r))
            scores.append(cell[r, c])
    if not pts:
        return np.zeros((0, 2), int)
    pts = np.array(pts)
    order = np.argsort(-np.array(scores))[: cfg.max_points]
    return pts[order]


def _subpixel(v_m: float, v_0: float, v_p: float) -> float:
    den = v_m - 2 * v_0 + v_p
    if den <= 1e-12:
        return 0.0
    return float(np.clip(0.5 * (v_m - v_p) / den, -0.5, 0.5))


class CFOGMatcher(Matcher):
    name = "cfog"
    min_size = 64

    def __init__(self, **options) -> None:
        self.config = CFOGConfig(**options)
        self.max_side = self.config.max_side

    def _match(self, image0, image1, mask0, mask1) -> MatchResult:
        cfg = self.config
        half = (cfg.template_size + 1) // 2
        r = cfg.search_radius
        h1, w1 = image1.shape
        d0 = oriented_gradient_channels(image0, cfg.n_orientations, cfg.sigma)
        d1 = oriented_gradient_channels(image1, cfg.n_orientations, cfg.sigma)
        pts = _select_points(image0, mask0, cfg, half)
        # a template needs its whole search window inside image 1
        ok = (
            (pts[:, 0] - half - r >= 0)
            & (pts[:, 1] - half - r >= 0)
            & (pts[:, 0] + half + r <= w1)
            & (pts[:, 1] + half + r <= h1)
        ) if len(pts) else np.zeros(0, bool)
        pts = pts[ok]
        if len(pts) == 0:
            return MatchResult.empty(n_templates=0)
        t = 2 * half
        L = t + 2 * r
        n_shift = 2 * r + 1
        tmpl = np.stack([d0[:, y - half : y + half, x - half : x + half] for x, y in pts])  # P,C,t,t
        srch = np.stack([d1[:, y - half - r : y + half + r, x - half - r : x + half + r] for x, y in pts])  # P,C,L,L
        size = sfft.next_fast_len(L)
        fs = sfft.rfft2(srch, s=(size, size), axes=(-2, -1), workers=1)
        ft = sfft.rfft2(tmpl, s=(size, size), axes=(-2, -1), workers=1)
        corr = sfft.irfft2((fs * np.conj(ft)).sum(axis=1), s=(size, size), axes=(-2, -1), workers=1)
        corr = corr[:, :n_shift, :n_shift]
        # sum over the window of |S|^2 at every shift (integral image), |T|^2 is a constant per template
        s2 = (srch * srch).sum(axis=1)
        ii = np.pad(s2.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        win = ii[:, t:, t:] - ii[:, :-t, t:] - ii[:, t:, :-t] + ii[:, :-t, :-t]
        t2 = (tmpl * tmpl).sum(axis=(1, 2, 3))
        ssd = win[:, :n_shift, :n_shift] - 2 * corr + t2[:, None, None]
        ssd = np.maximum(ssd, 0.0)
        k0, k1, conf = [], [], []
        yy, xx = np.mgrid[:n_shift, :n_shift]
        for i, (x, y) in enumerate(pts):
            s = ssd[i]
            iy, ix = np.unravel_index(np.argmin(s), s.shape)
            if iy in (0, n_shift - 1) or ix in (0, n_shift - 1):
                continue  # the best shift is on the border of the search window: not a real peak
            far = (np.abs(yy - iy) > 2) | (np.abs(xx - ix) > 2)
            second = s[far].min()
            best = s[iy, ix]
            c = (second - best) / max(second, 1e-12)
            dx = ix + _subpixel(s[iy, ix - 1], best, s[iy, ix + 1]) - r
            dy = iy + _subpixel(s[iy - 1, ix], best, s[iy + 1, ix]) - r
            k0.append((x, y))
            k1.append((x + dx, y + dy))
            conf.append(c)
        if not k0:
            return MatchResult.empty(n_templates=len(pts))
        info = {"n_templates": len(pts), "config": asdict(cfg)}
        return MatchResult(np.array(k0, float), np.array(k1, float), np.clip(np.array(conf), 0, 1), info)
