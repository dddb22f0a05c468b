"""The matcher contract shared by every method.

A matcher takes two preprocessed single-band float32 images in ``[0, 1]`` (image 0 = optical, image 1 = SAR)
with optional validity masks, and returns a :class:`~osreg.types.MatchResult` in original-image pixel
coordinates (pixel centres at integers). No match is a normal, correctly shaped result. Constructors never use
the network; weights come from installed packages or an explicit path.
"""

from __future__ import annotations

import abc
import logging
from typing import ClassVar

import cv2
import numpy as np

from osreg.errors import ImageTooSmallError, InputError
from osreg.types import MatchResult

logger = logging.getLogger(__name__)


def resize_to_max_side(img: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so that the longer side is at most ``max_side``; returns the image and the scale used."""
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img, 1.0
    s = max_side / max(h, w)
    out = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    # the scale actually applied along x (rounding makes x and y differ by < 1 px over the image)
    return out, out.shape[1] / w


def resize_by(img: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    """Resize by a factor (area interpolation when shrinking); returns the image and the x scale applied."""
    if s == 1.0:
        return img, 1.0
    h, w = img.shape[:2]
    out = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return out, out.shape[1] / w


class Matcher(abc.ABC):
    """Base class: input checks, working resolution, masks; subclasses implement :meth:`_match`.

    Attributes:
        name: the method name used on the command line.
        min_size: smallest image side (pixels, at working resolution) the method can work with.
        max_side: the optical image is downscaled so that its longer side is at most this (None: never); the SAR
            image is scaled by the same factor.
    """

    name: ClassVar[str] = ""
    min_size: ClassVar[int] = 32
    max_side: int | None = 1024

    def match(
        self,
        image0: np.ndarray,
        image1: np.ndarray,
        mask0: np.ndarray | None = None,
        mask1: np.ndarray | None = None,
    ) -> MatchResult:
        """Match image 0 (optical) to image 1 (SAR).

        Args:
            image0, image1: ``(H, W)`` float32 images in ``[0, 1]``.
            mask0, mask1: ``(H, W)`` bool, True where pixels are valid; None means all valid.

        Returns:
            Matches in original-image pixel coordinates, possibly empty.

        Raises:
            InputError: an image is not a 2-D array.
            ImageTooSmallError: an image is smaller than the method needs.
        """
        for i, img in enumerate((image0, image1)):
            if not isinstance(img, np.ndarray) or img.ndim != 2:
                shape = getattr(img, "shape", type(img).__name__)
                raise InputError(f"{self.name}: image{i} must be a 2-D (H, W) array, got {shape}")
        # one scale factor for both images, set by the optical (reference) image, so that the relative scale of
        # the pair is never changed by the working resolution
        small0, s0 = resize_to_max_side(image0.astype(np.float32, copy=False), self.max_side)
        small1, s1 = resize_by(image1.astype(np.float32, copy=False), s0)
        for role, img, orig in (("optical", small0, image0), ("SAR", small1, image1)):
            if min(img.shape) < self.min_size:
                raise ImageTooSmallError(
                    f"{role} image is {orig.shape[1]}x{orig.shape[0]} px; method '{self.name}' needs at least "
                    f"{self.min_size}x{self.min_size} px"
                )
        m0 = None if mask0 is None else _resize_mask(mask0, small0.shape)
        m1 = None if mask1 is None else _resize_mask(mask1, small1.shape)
        result = self._match(small0, small1, m0, m1)
        result = _drop_masked(result, m0, m1)
        if s0 != 1.0 or s1 != 1.0:
            result = result.scaled(s0, s1)
        logger.debug("%s: %d matches", self.name, len(result))
        return result

    @abc.abstractmethod
    def _match(
        self, image0: np.ndarray, image1: np.ndarray, mask0: np.ndarray | None, mask1: np.ndarray | None
    ) -> MatchResult:
        """Match images at working resolution (coordinates in these images)."""


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask, dtype=np.uint8)
    if m.shape != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    # erode so that features on the edge of nodata (artificial edges) are not used
    m = cv2.erode(m, np.ones((5, 5), np.uint8))
    return m.astype(bool)


def _lookup(mask: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    c = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
    r = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
    return mask[r, c]


def _drop_masked(result: MatchResult, m0: np.ndarray | None, m1: np.ndarray | None) -> MatchResult:
    if len(result) == 0 or (m0 is None and m1 is None):
        return result
    keep = np.ones(len(result), dtype=bool)
    if m0 is not None:
        keep &= _lookup(m0, result.keypoints0)
    if m1 is not None:
        keep &= _lookup(m1, result.keypoints1)
    return result.subset(keep)


def mutual_nearest_neighbours(
    desc0: np.ndarray, desc1: np.ndarray, ratio: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual nearest neighbours by L2 distance, with an optional Lowe ratio test.

    Args:
        desc0: ``(N, D)`` float32 descriptors; desc1: ``(M, D)``.
        ratio: keep a match only if best / second-best distance is below this.

    Returns:
        ``(idx0, idx1, confidence)``; confidence is ``1 - best/second`` (1 when there is no second).
    """
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    d0 = np.ascontiguousarray(desc0, dtype=np.float32)
    d1 = np.ascontiguousarray(desc1, dtype=np.float32)
    # squared distances from one BLAS product; two row-minimum passes give best and second best
    dist2 = (d0 * d0).sum(1)[:, None] + (d1 * d1).sum(1)[None, :]
    dist2 -= 2.0 * (d0 @ d1.T)
    np.maximum(dist2, 0.0, out=dist2)
    rows = np.arange(len(d0))
    nn01 = dist2.argmin(1)
    nn10 = dist2.argmin(0)
    best = dist2[rows, nn01].copy()
    if len(d1) >= 2:
        dist2[rows, nn01] = np.inf
        second = dist2.min(1)
        r = np.sqrt(best) / np.maximum(np.sqrt(second), 1e-12)
    else:
        r = np.zeros(len(d0))
    keep = nn10[nn01] == rows
    if ratio is not None:
        keep &= r < ratio
    return rows[keep], nn01[keep], np.clip(1.0 - r[keep], 0.0, 1.0)
