"""The matcher contract shared by every method.

A matcher takes two preprocessed single-band float32 images in ``[0, 1]`` (image 0 = optical, image 1 = SAR)
with optional validity masks, and returns a :class:`~osreg.types.MatchResult` in original-image pixel
coordinates (pixel centres at integers). No match is a normal, correctly shaped result. Constructors never use
the network; weights come from installed packages or an explicit path.

Every matcher holds its frozen config as ``self.config`` (with a ``max_side`` field, its working resolution) and
implements :meth:`Matcher.match_working` on images already at that resolution. Stages that wrap a matcher (the
rotation/scale search, :mod:`osreg.matchers.search`) use the public pieces of the contract:
:meth:`Matcher.working_pair`, :meth:`Matcher.match_working`, :meth:`Matcher.bind_reference`, and the optional :meth:`Matcher.describe_reference` / :meth:`Matcher.coarse_match`
that a dense matcher overrides to make hypothesis scoring cheap.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

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


@dataclass(frozen=True)
class WorkingPair:
    """A pair at a matcher's working resolution.

    Attributes:
        image0, image1: ``(H, W)`` float32 images at working resolution.
        mask0, mask1: eroded validity masks at working resolution (None: all valid).
        scale0, scale1: working px per original px of each image.
    """

    image0: np.ndarray
    image1: np.ndarray
    mask0: np.ndarray | None
    mask1: np.ndarray | None
    scale0: float
    scale1: float

    def to_original(self, result: MatchResult) -> MatchResult:
        """Drop matches that fall on invalid pixels and map the rest to original-image pixels."""
        result = _drop_masked(result, self.mask0, self.mask1)
        if self.scale0 != 1.0 or self.scale1 != 1.0:
            result = result.scaled(self.scale0, self.scale1)
        return result


class Matcher(abc.ABC):
    """Base class: input checks, working resolution, masks; subclasses implement :meth:`match_working`.

    Attributes:
        name: the method name used on the command line.
        min_size: smallest image side (pixels, at working resolution) the method can work with.
        config: the matcher's frozen config; its ``max_side`` is the working resolution: the optical image is
            downscaled so that its longer side is at most this (None: never) and the SAR image by the same factor.
        concurrent: whether the function :meth:`bind_reference` returns may run on several threads at once (a
            stage then verifies several candidates side by side, with the results of a serial run); False unless a
            matcher is known to keep no state between calls.
    """

    name: ClassVar[str] = ""
    min_size: ClassVar[int] = 32
    concurrent: ClassVar[bool] = False
    config: Any

    @property
    def max_side(self) -> int | None:
        return getattr(self.config, "max_side", None)

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
        pair = self.working_pair(image0, image1, mask0, mask1)
        if _featureless(pair.image0, pair.mask0) or _featureless(pair.image1, pair.mask1):
            # no evidence, no match: networks (and zero padding) would otherwise match blank images by position
            return MatchResult.empty(featureless=True)
        result = pair.to_original(self.match_working(pair.image0, pair.image1, pair.mask0, pair.mask1))
        logger.debug("%s: %d matches", self.name, len(result))
        return result

    def working_pair(self, image0: np.ndarray, image1: np.ndarray, mask0: np.ndarray | None = None,
                     mask1: np.ndarray | None = None) -> WorkingPair:
        """Check a pair and bring it to the working resolution (one scale factor for both images, set by the
        optical image, so that the relative scale of the pair never changes); masks are eroded so that features
        on the edge of no-data (artificial edges) are not used. :meth:`prepare_pair` is applied last."""
        for i, img in enumerate((image0, image1)):
            if not isinstance(img, np.ndarray) or img.ndim != 2:
                shape = getattr(img, "shape", type(img).__name__)
                raise InputError(f"{self.name}: image{i} must be a 2-D (H, W) array, got {shape}")
        small0, s0 = resize_to_max_side(image0.astype(np.float32, copy=False), self.max_side)
        small1, s1 = resize_by(image1.astype(np.float32, copy=False), s0)
        for role, img, orig in (("optical", small0, image0), ("SAR", small1, image1)):
            if min(img.shape) < self.min_size:
                raise ImageTooSmallError(
                    f"{role} image is {orig.shape[1]}x{orig.shape[0]} px; method '{self.name}' needs at least "
                    f"{self.min_size}x{self.min_size} px"
                )
        m0 = None if mask0 is None else working_mask(mask0, small0.shape)
        m1 = None if mask1 is None else working_mask(mask1, small1.shape)
        small0, small1 = self.prepare_pair(small0, small1, m0, m1)
        return WorkingPair(small0, small1, m0, m1, s0, s1)

    def prepare_pair(self, image0: np.ndarray, image1: np.ndarray, mask0: np.ndarray | None,
                     mask1: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Method-specific conditioning of a working pair, applied once per :meth:`match` before any stage (e.g.
        PromptMID's SAR2SAR prior). The default returns the images unchanged."""
        return image0, image1

    @abc.abstractmethod
    def match_working(self, image0: np.ndarray, image1: np.ndarray, mask0: np.ndarray | None,
                      mask1: np.ndarray | None) -> MatchResult:
        """Match a pair at working resolution (coordinates in these images; masks may be None)."""

    def bind_reference(self, image0: np.ndarray, mask0: np.ndarray | None
                       ) -> Callable[[np.ndarray, np.ndarray | None], MatchResult]:
        """A function ``(image1, mask1) -> MatchResult`` that matches image 0 (at working resolution) with any image
        1 as :meth:`match_working` does, for a stage that matches one optical image with many rectified SAR images.
        The default calls :meth:`match_working`; a matcher that can reuse what it computes from image 0 alone
        overrides it (CFOG keeps its templates' spectra)."""
        return lambda image1, mask1: self.match_working(image0, image1, mask0, mask1)

    def with_reach(self, px: int) -> Matcher:
        """This matcher looking at most ``px`` working pixels away from where a point lies in the other image, for a
        stage that has already brought the pair within a few pixels (a shorter reach leaves less room for a wrong
        match). The default is the matcher itself: a method without a search window has no reach to shorten."""
        return self

    def describe_reference(self, image0: np.ndarray, mask0: np.ndarray) -> Any:
        """Features of the optical image that :meth:`coarse_match` can reuse for every hypothesis of a search
        (None: nothing to reuse, the default)."""
        return None

    def coarse_match(self, image0: np.ndarray, mask0: np.ndarray, image1: np.ndarray, mask1: np.ndarray,
                     reference: Any = None) -> MatchResult:
        """Quick matches of a pair at working resolution, used to score search hypotheses and refine a
        rectification. The default is the full matcher (:meth:`match_working`); dense matchers override it with a
        coarse-only pass that reuses ``reference`` (from :meth:`describe_reference`)."""
        return self.match_working(image0, image1, mask0, mask1)


class Stage(Matcher):
    """A matcher that wraps another (a search): it answers to the contract under the wrapped method's name, at its
    working resolution, with its pair conditioning; subclasses implement :meth:`match_working` with ``self.inner``.

    Args:
        inner: the wrapped matcher.
        config: the stage's settings.
    """

    def __init__(self, inner: Matcher, config: Any) -> None:
        self.inner = inner
        self.config = config
        self.name = inner.name  # type: ignore[misc]
        self.min_size = inner.min_size  # type: ignore[misc]

    @property
    def max_side(self) -> int | None:
        return self.inner.max_side

    def prepare_pair(self, image0, image1, mask0, mask1):
        return self.inner.prepare_pair(image0, image1, mask0, mask1)


def working_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A validity mask at working resolution ``shape``, eroded by 2 px."""
    m = np.asarray(mask, dtype=np.uint8)
    if m.shape != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    # erode so that features on the edge of nodata (artificial edges) are not used
    m = cv2.erode(m, np.ones((5, 5), np.uint8))
    return m.astype(bool)


def _featureless(img: np.ndarray, mask: np.ndarray | None) -> bool:
    """True when the valid pixels of an image are (nearly) constant, or there are none."""
    v = img if mask is None else img[mask]
    return v.size == 0 or float(v.max() - v.min()) <= 1e-6


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
