"""Evaluation protocols: centre crops and the seeded deformations (full circle; the TAR paper's)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from osreg.geometry import apply_transform


@dataclass(frozen=True)
class Deformation:
    """A deformation applied to the SAR: ``D`` maps old SAR px to new SAR px."""

    D: np.ndarray
    rotation_deg: float
    scale: float
    perspective: float


def pair_seed(seed: int, name: str) -> int:
    """A stable per-pair seed (independent of iteration order and Python's hash randomisation)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**32)


def sample_deformation(width: int, height: int, rng: np.random.Generator, max_perspective: float = 0.02
                       ) -> Deformation:
    """Rotation uniform over the full circle, scale log-uniform in [0.5, 2], mild perspective.

    The perspective terms move the image corners by up to ``max_perspective`` of the image size. The output canvas
    is translated so that the whole deformed image stays on it.
    """
    theta = rng.uniform(0, 360)
    scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    p = rng.uniform(-max_perspective, max_perspective, size=2) / np.array([width, height])
    c = np.array([[1, 0, -(width - 1) / 2], [0, 1, -(height - 1) / 2], [0, 0, 1.0]])
    R = cv2.getRotationMatrix2D((0, 0), theta, scale)
    A = np.vstack([R, [0, 0, 1]])
    P = np.array([[1, 0, 0], [0, 1, 0], [p[0], p[1], 1.0]])
    D = P @ A @ c
    corners = apply_transform(D, np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float))
    lo = corners.min(0)
    T = np.array([[1, 0, -lo[0]], [0, 1, -lo[1]], [0, 0, 1.0]])
    return Deformation(T @ D, float(theta), scale, float(np.abs(p).max() * max(width, height)))


def sample_paper_deformation(width: int, height: int, rng: np.random.Generator) -> Deformation:
    """The test deformation of the TAR paper: rotation uniform in [-35, 35] degrees and scale uniform in [0.7, 1.3]
    about the image centre, then a shift uniform within +-10 % of the image size in each direction. The canvas keeps
    the image's size: content moved off it is lost (its mask says so), as in the paper's protocol."""
    theta = rng.uniform(-35, 35)
    scale = float(rng.uniform(0.7, 1.3))
    shift = rng.uniform(-0.1, 0.1, size=2) * np.array([width, height])
    c = np.array([(width - 1) / 2, (height - 1) / 2])
    A = np.vstack([cv2.getRotationMatrix2D((float(c[0]), float(c[1])), theta, scale), [0, 0, 1]])
    A[:2, 2] += shift
    return Deformation(A, float(theta % 360), scale, 0.0)


def canvas_size(D: np.ndarray, width: int, height: int) -> tuple[int, int]:
    corners = apply_transform(D, np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], float))
    hi = np.ceil(corners.max(0)).astype(int) + 1
    return int(hi[0]), int(hi[1])


def warp_image(img: np.ndarray, mask: np.ndarray, D: np.ndarray, size: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Warp an image and its mask by D onto a canvas that holds all of it (or of ``size`` (w, h))."""
    h, w = img.shape
    size = size or canvas_size(D, w, h)
    out = cv2.warpPerspective(img, D, size, flags=cv2.INTER_LINEAR, borderValue=0)
    m = cv2.warpPerspective(mask.astype(np.uint8), D, size, flags=cv2.INTER_NEAREST, borderValue=0) > 0
    return out, m


def centre_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)`` of a centred crop of at most ``size`` pixels."""
    w, h = min(size, width), min(size, height)
    return (width - w) // 2, (height - h) // 2, w, h


def crop_around(width: int, height: int, cx: float, cy: float, w: int, h: int) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)`` of a w x h window centred near (cx, cy), kept inside the image."""
    w, h = min(w, width), min(h, height)
    x0 = int(np.clip(round(cx - (w - 1) / 2), 0, width - w))
    y0 = int(np.clip(round(cy - (h - 1) / 2), 0, height - h))
    return x0, y0, w, h
