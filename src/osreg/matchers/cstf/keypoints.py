"""Scale-invariant keypoints for optical and SAR images: scale-normalised Harris extrema over a Gaussian scale space.

Both modalities go through the same detector on the preprocessed image (the SAR log-scaled and stretched): at each
scale ``sigma`` the image is smoothed, its gradients (times ``sigma``, the scale normalisation) form a structure
tensor integrated over ``2 sigma``, and the Harris response is kept where it is a maximum over space (3x3) and over
the neighbouring scales. Speckle mostly makes responses at the finest scales, so SAR keypoints concentrate on the
coarser scales, where the structures shared with the optical image live. Each keypoint has a scale (its ``sigma``)
and an orientation (the dominant gradient direction of its tensor, modulo 180 degrees: contrast reverses between the
modalities). Keypoints are spread over the image: the strongest in each cell of a grid first.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Keypoints:
    """Attributes:
    xy: ``(N, 2)`` pixel coordinates.
    scale: ``(N,)`` detection sigma (pixels).
    angle: ``(N,)`` orientation in radians, in ``[0, pi)``.
    score: ``(N,)`` scale-normalised Harris response.
    """

    xy: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.xy)

    @classmethod
    def empty(cls) -> Keypoints:
        return cls(np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros(0))

    def subset(self, keep) -> Keypoints:
        return Keypoints(self.xy[keep], self.scale[keep], self.angle[keep], self.score[keep])


def scale_levels(sigma0: float, per_octave: int, octaves: int) -> np.ndarray:
    return sigma0 * 2.0 ** (np.arange(per_octave * octaves + 1) / per_octave)


def detect(img: np.ndarray, mask: np.ndarray | None, max_keypoints: int, scales: tuple[float, int, int] = (1.6, 3, 3),
           border: int = 8, cell: int = 32) -> Keypoints:
    """Keypoints of a ``(H, W)`` image in ``[0, 1]`` inside ``mask`` (None: all valid), at most ``max_keypoints``."""
    img = img.astype(np.float32)
    h, w = img.shape
    sig = scale_levels(*scales)
    resp, tensor = [], []
    g, prev = img, 0.0
    for s in sig:
        g = cv2.GaussianBlur(g, (0, 0), float(np.sqrt(s * s - prev * prev)))  # the scale space, incrementally
        prev = float(s)
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) * (s / 8.0)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) * (s / 8.0)
        k = 2 * int(round(2 * s)) + 1  # tensor integration over about 2 sigma (a box: constant cost per pixel)
        jxx = cv2.blur(gx * gx, (k, k))
        jyy = cv2.blur(gy * gy, (k, k))
        jxy = cv2.blur(gx * gy, (k, k))
        tr = jxx + jyy
        resp.append(jxx * jyy - jxy * jxy - 0.04 * tr * tr)
        tensor.append((jxx, jyy, jxy))  # the orientation is computed at the kept keypoints only
    R = np.stack(resp)
    kernel = np.ones((3, 3), np.uint8)
    spatial_max = np.stack([cv2.dilate(r, kernel) for r in R])
    up = np.concatenate([R[1:], np.full((1, h, w), -np.inf, np.float32)])
    down = np.concatenate([np.full((1, h, w), -np.inf, np.float32), R[:-1]])
    peak = (R >= spatial_max) & (R > up) & (R > down) & (R > 0)
    valid = np.ones((h, w), bool) if mask is None else mask.astype(bool)
    b = max(border, 1)
    valid = cv2.erode(valid.astype(np.uint8), np.ones((2 * b + 1, 2 * b + 1), np.uint8)).astype(bool)
    peak &= valid[None]
    k, y, x = np.nonzero(peak)
    if len(k) == 0:
        return Keypoints.empty()
    score = R[k, y, x]
    # spread over the image: per grid cell the strongest first, then the second strongest of every cell, ...
    cell_id = (y // cell) * (w // cell + 1) + (x // cell)
    order = np.lexsort((-score, cell_id))
    rank = np.empty(len(order), int)
    first = np.r_[True, cell_id[order][1:] != cell_id[order][:-1]]
    starts = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    rank[order] = np.arange(len(order)) - starts
    pick = np.lexsort((-score, rank))[:max_keypoints]
    kk, yy, xx = k[pick], y[pick], x[pick]
    txx, tyy, txy = (np.zeros(len(pick), np.float32) for _ in range(3))
    for i in np.unique(kk):  # the tensor at the kept keypoints, one scale at a time
        at = kk == i
        jxx, jyy, jxy = tensor[i]
        txx[at], tyy[at], txy[at] = jxx[yy[at], xx[at]], jyy[yy[at], xx[at]], jxy[yy[at], xx[at]]
    theta = (0.5 * np.arctan2(2 * txy, txx - tyy)) % np.pi
    return Keypoints(np.stack([x[pick], y[pick]], 1).astype(np.float64), sig[k[pick]], theta.astype(np.float64),
                     score[pick].astype(np.float64))


__all__ = ["Keypoints", "detect", "scale_levels"]
