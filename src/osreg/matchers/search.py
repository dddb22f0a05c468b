"""The rotation/scale search: a stage that wraps any matcher.

Most matchers are not rotation invariant, and none is scale invariant across optical and SAR. :class:`SearchStage`
turns the SAR through a set of (rotation, scale) hypotheses at a low working resolution, scores each by the
inliers of a loose similarity fit to the wrapped matcher's quick matches (:meth:`Matcher.coarse_match`, reusing
the optical image's :meth:`Matcher.describe_reference`), resamples the SAR into the optical frame with the best
one (one cubic warp of the input SAR, refined by a few quick passes on the rectified pair), and runs the wrapped
matcher (:meth:`Matcher.match_working`) on the rectified pair. Matches are mapped back to the input SAR's pixels.

Any matcher can be wrapped: SIFT, CFOG, RIFT, TAR, PromptMID. Dense matchers make it cheap by overriding
``describe_reference`` / ``coarse_match`` with a coarse-only pass; the others are scored with their full matcher.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from osreg.configs import DictConfig
from osreg.errors import InputError
from osreg.geometry import GeometryConfig, apply_transform, estimate_transform, rectify, scale_matrix
from osreg.matchers.base import Matcher, Stage
from osreg.types import MatchResult

logger = logging.getLogger(__name__)

MIN_SEARCH_INLIERS = 8  # a search hypothesis needs this many coarse inliers to rectify the SAR
SEARCH_FIT_PX = 8.0  # inlier threshold of the loose similarity fit that scores a hypothesis, px at search_side


@dataclass(frozen=True)
class SearchConfig(DictConfig):
    """Settings of the rotation/scale search stage.

    Attributes:
        rotations: rotations of the SAR (degrees, counter-clockwise on screen) searched; multiples of 90 are exact,
            others resample onto a canvas that holds the whole turned image.
        scales: rescalings of the SAR searched.
        search_side: working resolution of the hypothesis search (longer side of the optical image, px).
        rectify_iterations: quick passes that refine the rectification of the SAR before the final pass.
        accept_inliers: stop the search at the first hypothesis whose loose similarity fit has at least this many
            inliers, making up at least ``accept_ratio`` of its matches (hypotheses are tried from the identity
            outwards); 0 always scores every hypothesis.
        accept_ratio: see ``accept_inliers``.
        prescreen_side: when the identity is not accepted, first score every hypothesis at this lower working
            resolution and keep the ``prescreen_keep`` best (by inliers) for scoring at ``search_side``; 0 scores
            every hypothesis at ``search_side``. Hypotheses that enlarge an already large SAR cost the most and
            are the ones a prescreen usually drops.
        prescreen_keep: hypotheses kept by the prescreen (the identity, scored first, is always one of the
            candidates).
    """

    rotations: tuple[float, ...] = (0, 45, 90, 135, 180, 225, 270, 315)
    scales: tuple[float, ...] = (0.7, 1.0, 1.4)
    search_side: int = 256
    rectify_iterations: int = 2
    accept_inliers: int = 0
    accept_ratio: float = 0.5
    prescreen_side: int = 0
    prescreen_keep: int = 6

    def __post_init__(self) -> None:
        # a single value is a one-element search (``tar[rotations=0,scales=1]`` on the command line disables it)
        for name in ("rotations", "scales"):
            v = getattr(self, name)
            if isinstance(v, (int, float)):
                object.__setattr__(self, name, (v,))
            elif not v:
                raise InputError(f"{name} must list at least one value, got {v!r}")
        if any(s <= 0 for s in self.scales):
            raise InputError(f"scales must be positive, got {self.scales}")
        if self.search_side < 32:
            raise InputError(f"search_side must be at least 32 px, got {self.search_side}")
        if self.rectify_iterations < 0:
            raise InputError(f"rectify_iterations must be >= 0, got {self.rectify_iterations}")
        if self.accept_inliers < 0 or not 0.0 <= self.accept_ratio <= 1.0:
            raise InputError(f"accept_inliers must be >= 0 and accept_ratio in [0, 1], got {self.accept_inliers} "
                             f"and {self.accept_ratio}")
        if self.prescreen_side < 0 or self.prescreen_keep < 1:
            raise InputError(f"prescreen_side must be >= 0 and prescreen_keep >= 1, got {self.prescreen_side} and "
                             f"{self.prescreen_keep}")
        if self.prescreen_side and self.prescreen_side >= self.search_side:
            raise InputError(f"prescreen_side ({self.prescreen_side} px) must be below search_side "
                             f"({self.search_side} px), or 0 to switch the prescreen off")

    @property
    def n_hypotheses(self) -> int:
        return len(self.rotations) * len(self.scales)

    def hypothesis_order(self) -> list[tuple[float, float]]:
        """Every (rotation, scale) pair, nearest the identity first: by angular distance from 0 degrees, then by
        distance of log-scale from 1."""
        pairs = [(r, s) for r in self.rotations for s in self.scales]
        return sorted(pairs, key=lambda h: (min(h[0] % 360, -h[0] % 360), abs(np.log(h[1]))))


def pad_to_multiple(img: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad image and mask at the bottom and right to a multiple of ``k`` (coordinates are unchanged)."""
    h, w = img.shape
    ph, pw = (-h) % k, (-w) % k
    return np.pad(img, ((0, ph), (0, pw))), np.pad(mask, ((0, ph), (0, pw)))


def resize_with_matrix(img: np.ndarray, mask: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize by s; returns image, mask, and S (old px -> new px, pixel centres at integers)."""
    if s == 1.0:
        return img, mask, np.eye(3)
    h, w = img.shape
    nw, nh = max(8, round(w * s)), max(8, round(h * s))
    sx, sy = nw / w, nh / h
    out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    m = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
    return out, m, scale_matrix(sx, sy)


def rotate_with_matrix(img: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate by ``angle`` degrees counter-clockwise on screen; returns image, mask, R (old px -> new px).

    Multiples of 90 degrees are exact (``np.rot90``); other angles resample onto a canvas holding the whole image.
    """
    h, w = img.shape
    if angle % 90 == 0:
        k = int(angle // 90) % 4
        R = {0: np.eye(3),
             1: np.array([[0, 1, 0], [-1, 0, w - 1], [0, 0, 1.0]]),
             2: np.array([[-1, 0, w - 1], [0, -1, h - 1], [0, 0, 1.0]]),
             3: np.array([[0, -1, h - 1], [1, 0, 0], [0, 0, 1.0]])}[k]
        return np.ascontiguousarray(np.rot90(img, k)), np.ascontiguousarray(np.rot90(mask, k)), R
    R = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0), [0, 0, 1]])
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1.0]]) @ R.T
    R[:2, 2] -= corners[:, :2].min(0)
    nw, nh = (np.ceil(corners[:, :2].max(0) - corners[:, :2].min(0)).astype(int) + 1).tolist()
    out = cv2.warpAffine(img, R[:2], (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    m = cv2.warpAffine(mask.astype(np.uint8), R[:2], (nw, nh), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    return out, m, R


class SearchStage(Stage):
    """A matcher wrapped in the rotation/scale search (see the module doc). It answers to the matcher contract
    itself, at the wrapped matcher's working resolution, so it can stand wherever a matcher can.

    Args:
        inner: the matcher to wrap.
        config: the search settings.
    """

    def __init__(self, inner: Matcher, config: SearchConfig | None = None) -> None:
        super().__init__(inner, config if config is not None else SearchConfig())

    def hypotheses(self, image0: np.ndarray, mask0: np.ndarray, image1: np.ndarray, mask1: np.ndarray
                   ) -> list[dict[str, Any]]:
        """Score (rotation, scale) hypotheses of the SAR at search resolution by the inliers of a loose similarity
        fit (``SEARCH_FIT_PX``) to their quick matches, nearest the identity first; stops early at an accepted
        hypothesis (see :class:`SearchConfig`). With a prescreen, the first hypothesis and the prescreen's best
        are scored.

        Args:
            image0, mask0, image1, mask1: the pair at working resolution (masks all-True arrays when absent).

        Returns:
            one dict per hypothesis scored, in order: ``rotation``, ``scale``, ``inliers``, ``matches`` and
            ``footprint`` (optical px -> px of the SAR so turned and scaled, at working resolution; None without a
            fit).
        """
        level = SearchLevel(self.inner, image0, mask0, self.config.search_side, self.config.search_side)
        results: list[dict] = []
        for rot, sc in self._candidates(image0, mask0, image1, mask1):
            r = level.score(image1, mask1, rot, sc)
            if r is None:
                continue
            results.append(r)
            if (self.config.accept_inliers and r["inliers"] >= self.config.accept_inliers
                    and r["inliers"] >= self.config.accept_ratio * r["matches"]):
                logger.debug("search: accepted rotation %s, scale %s (%d of %d matches) after %d hypotheses",
                             rot, sc, r["inliers"], r["matches"], len(results))
                break
        return results

    def _candidates(self, img0, mask0, img1, mask1):
        """The hypotheses to score at search resolution, in search order: the one nearest the identity, then (only
        when the search asks for more, i.e. that one was not accepted) the rest, or the prescreen's best of them."""
        order = self.config.hypothesis_order()
        yield order[0]
        rest = order[1:]
        if self.config.prescreen_side and len(rest) > self.config.prescreen_keep:
            low = SearchLevel(self.inner, img0, mask0, self.config.prescreen_side, self.config.search_side)
            scores = {h: low.score(img1, mask1, *h) for h in rest}
            ranked = sorted(rest, key=lambda h: (-1, -1) if scores[h] is None else
                            (scores[h]["inliers"], scores[h]["matches"]), reverse=True)
            kept = set(ranked[:self.config.prescreen_keep])
            rest = [h for h in rest if h in kept]
            logger.debug("search: prescreen at %d px kept %s", self.config.prescreen_side, rest)
        yield from rest

    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        mask0 = np.ones(image0.shape, bool) if mask0 is None else mask0
        mask1 = np.ones(image1.shape, bool) if mask1 is None else mask1
        info: dict = {}
        if self.config.n_hypotheses > 1:
            scores = self.hypotheses(image0, mask0, image1, mask1)
            best = max(scores, key=lambda r: (r["inliers"], r["matches"])) if scores else None
            info["hypothesis"] = None if best is None else {"rotation": best["rotation"], "scale": best["scale"],
                                                            "inliers": best["inliers"]}
            info["hypotheses_scored"] = len(scores)
        else:  # a single hypothesis: apply it as given
            best = {"rotation": self.config.rotations[0], "scale": self.config.scales[0], "footprint": None,
                    "inliers": 0}
        r1, rm1, R = rotate_with_matrix(image1, mask1, best["rotation"] if best else 0)
        i1, m1, S = resize_with_matrix(r1, rm1, best["scale"] if best else 1.0)
        T = S @ R  # original SAR px -> hypothesis px
        F = best["footprint"] if best and best["inliers"] >= MIN_SEARCH_INLIERS else None
        if best and best["rotation"] % 360 == 0 and best["scale"] == 1.0:
            F = None  # already in the optical frame: any resampling would only blur the SAR
        if F is not None:
            # rectify: resample the SAR into the optical frame (optical px -> hypothesis px is F), refine F on the
            # rectified pair, and rectify again, so that the final pass sees a nearly aligned pair. Every
            # rectification is one cubic warp of the input SAR (optical px -> input px is T^-1 F): chained
            # resampling blurs the speckle texture the networks rely on.
            Ti = np.linalg.inv(T)
            for _ in range(self.config.rectify_iterations):
                r, rm = rectify(image1, mask1, Ti @ F, image0.shape)
                quick = self.inner.coarse_match(image0, mask0, r, rm)
                est = estimate_transform(quick.keypoints0, quick.keypoints1,
                                         GeometryConfig(model="homography", threshold_px=6.0))
                if est.H is None or est.n_inliers < MIN_SEARCH_INLIERS:
                    break
                F = F @ est.H
            i1, m1 = rectify(image1, mask1, Ti @ F, image0.shape)
            T = np.linalg.inv(Ti @ F)  # original SAR px -> rectified px
            info["rectified"] = True
        final = self.inner.match_working(image0, i1.astype(np.float32), mask0, m1)
        k1 = apply_transform(np.linalg.inv(T), final.keypoints1) if len(final) else final.keypoints1
        return MatchResult(final.keypoints0, k1, final.confidence, {**final.info, "search": info})


class SearchLevel:
    """The optical image of a search at one working resolution (``side`` px on its longer side), with its
    reference features computed once; :meth:`score` scores a hypothesis of the SAR against it.

    Args:
        matcher: the wrapped matcher (its :meth:`~Matcher.describe_reference` and :meth:`~Matcher.coarse_match`).
        img0, mask0: the optical image and mask at the matcher's working resolution.
        side: this level's working resolution.
        search_side: the search's own resolution; the loose fit's threshold is ``SEARCH_FIT_PX`` there and in
            proportion at a prescreen's lower resolution.
    """

    def __init__(self, matcher: Matcher, img0: np.ndarray, mask0: np.ndarray, side: int, search_side: int) -> None:
        self.matcher = matcher
        self.s0 = min(1.0, side / max(img0.shape))
        self.i0, self.m0, _ = resize_with_matrix(img0, mask0, self.s0)
        self.reference = matcher.describe_reference(self.i0, self.m0)  # the same for every hypothesis
        self.threshold = SEARCH_FIT_PX * side / search_side
        self._turned: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def score(self, img1: np.ndarray, mask1: np.ndarray, rot: float, sc: float) -> dict | None:
        """Inliers of the loose similarity fit to the quick matches of the SAR turned by ``rot`` and scaled by
        ``sc``, and its footprint (optical px -> px of the SAR so turned and scaled, at working resolution); None
        when the SAR would be too small to match at this resolution."""
        if rot not in self._turned:
            self._turned[rot] = rotate_with_matrix(img1, mask1, rot)[:2]
        i1, m1, _ = resize_with_matrix(*self._turned[rot], self.s0 * sc)
        if min(i1.shape) < 32:
            return None
        quick = self.matcher.coarse_match(self.i0, self.m0, i1, m1, reference=self.reference)
        est = estimate_transform(quick.keypoints0, quick.keypoints1,
                                 GeometryConfig(model="similarity", threshold_px=self.threshold))
        S0 = np.diag([self.s0, self.s0, 1.0])
        footprint = None if est.H is None else np.linalg.inv(S0) @ est.H @ S0
        return {"rotation": rot, "scale": sc, "inliers": est.n_inliers, "matches": len(quick), "footprint": footprint}
