"""Template refinement, a stage after the fit that any matcher can use: CFOG template matching on the pair the fit
has nearly aligned.

A matcher's matches (a dense matcher's above all) pin the transform down to a pixel or a few (the coarse 1/8 grid,
a weak fine stage, resampled SAR after a large rotation or rescaling). Template matching of oriented-gradient
channels (CFOG, :mod:`osreg.matchers.cfog`) is precise on a nearly aligned optical-SAR pair but blind to rotation
and scale, so the two complement each other: the fit of the matcher's matches resamples the input SAR into the
optical frame (one cubic warp), CFOG searches a small radius around every template there, and its matches, mapped
back to the input SAR's pixels, replace the matcher's when they agree with that fit and correct it by at least
``min_correction``. When they do not (too few templates, no consistent fit, or a fit that moves the matcher's
by more than the search radius, in the median over the optical image), the matcher's own matches are kept, and
also when the templates move it by less than ``min_correction`` (they confirm it). So the refinement moves a
result by at most its search radius and never replaces it by an unrelated one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from osreg.configs import DictConfig
from osreg.errors import InputError
from osreg.geometry import Estimate, GeometryConfig, apply_transform, estimate_transform, rectify, scale_matrix
from osreg.matchers.base import resize_by, resize_to_max_side, working_mask
from osreg.matchers.cfog import CFOGMatcher
from osreg.types import Matches, MatchResult

logger = logging.getLogger(__name__)

MIN_MATCHER_INLIERS = 8  # the matcher's result needs this many homography inliers to be refined
MIN_TEMPLATE_INLIERS = 12  # CFOG needs this many consistent matches to replace the matcher's


@dataclass(frozen=True)
class TemplateRefineConfig(DictConfig):
    """Settings of the template refinement stage.

    Attributes:
        radius: CFOG search radius (pixels at the refinement's resolution) around each template.
        min_correction: keep the matcher's own matches when the templates move its fit by less than this (median
            px over the image): they confirm it, and on 20 volkov training pairs the matcher's own matches were
            then the more precise in 4 of 6 cases (docs/tar.md).
        passes: most template passes (each rectifies the SAR again with the previous pass's homography).
        max_side: the refinement runs on the pair downscaled so that the optical image's longer side is at most
            this (0: full resolution).
    """

    radius: int = 12
    min_correction: float = 1.5
    passes: int = 2
    max_side: int = 1024

    def __post_init__(self) -> None:
        if self.radius < 2:
            raise InputError(f"template_radius must be at least 2 px, got {self.radius}")
        if self.passes < 1:
            raise InputError(f"template_passes must be at least 1, got {self.passes}")
        if self.min_correction < 0 or self.max_side < 0:
            raise InputError(f"template_min_correction and template_max_side must be >= 0, got "
                             f"{self.min_correction} and {self.max_side}")


def refine_after_fit(image0: np.ndarray, mask0: np.ndarray | None, image1: np.ndarray, mask1: np.ndarray | None,
                     matches: MatchResult, estimate: Estimate, config: TemplateRefineConfig
                     ) -> tuple[MatchResult, dict]:
    """The template refinement stage: refine ``matches`` on the pair rectified by their fit ``estimate``.

    Args:
        image0, mask0, image1, mask1: the pair the matcher was given (original pixels; masks may be None).
        matches: the matcher's result (original pixels).
        estimate: the robust fit of ``matches`` (optical px -> SAR px).
        config: the stage's settings.

    Returns:
        The template matches (with the matcher's ``info``) when they refine the fit, else ``matches`` itself;
        and a report (``{"template_refine": "applied" | "confirmed" | reason, ...}``, see
        :func:`refine_with_templates`).
    """
    if len(matches) < MIN_MATCHER_INLIERS:
        return matches, {"template_refine": "too few matches"}
    if estimate.H is None or estimate.n_inliers < MIN_MATCHER_INLIERS:
        return matches, {"template_refine": "no transform fits the matches"}
    small0, s = resize_to_max_side(image0.astype(np.float32, copy=False), config.max_side)
    small1, s1 = resize_by(image1.astype(np.float32, copy=False), s)
    m0 = working_mask(np.ones(image0.shape, bool) if mask0 is None else mask0, small0.shape)
    m1 = working_mask(np.ones(image1.shape, bool) if mask1 is None else mask1, small1.shape)
    W = scale_matrix(s1) @ estimate.H @ np.linalg.inv(scale_matrix(s))  # the fit at the refinement's resolution
    out, report = refine_with_templates(small0, m0, small1, m1, W, config.radius, config.passes,
                                        config.min_correction)
    if out is None:
        return matches, report
    refined = MatchResult(*out, dict(matches.info))
    return (refined.scaled(s, s1) if s != 1.0 or s1 != 1.0 else refined), report


def _grid_shift(H: np.ndarray, shape: tuple[int, int]) -> float:
    """Median displacement (pixels) the transform H makes on a 10x10 grid over an image of ``shape`` (the
    median, because a homography fitted to templates in part of the image may swing far at its corners)."""
    h, w = shape
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 10), np.linspace(0, h - 1, 10))
    g = np.c_[gx.ravel(), gy.ravel()]
    return float(np.median(np.linalg.norm(apply_transform(H, g) - g, axis=1)))


def _template_pass(cfog: CFOGMatcher, image0, mask0, d0: np.ndarray, image1, mask1, W: np.ndarray
                   ) -> tuple[Matches | None, np.ndarray | None, dict]:
    """One pass: rectify the SAR with W (optical px -> SAR px), match CFOG templates (optical channels ``d0``)
    within the matcher's search radius; returns the template matches in input SAR px and their homography (both
    None when they fail a check) and a report."""
    radius = cfog.config.search_radius
    r, rm = rectify(image1, mask1, W, image0.shape)
    # templates only where the whole search window lies on SAR data (the rectified SAR has no-data borders)
    reach = 2 * ((cfog.config.template_size + 1) // 2 + radius) + 1
    covered = cv2.erode(rm.astype(np.uint8), np.ones((reach, reach), np.uint8)) > 0
    t = cfog.match_described(image0, mask0 & covered, d0, cfog.describe(r))
    report: dict = {"template_matches": len(t.keypoints0)}
    if len(t.keypoints0) < MIN_TEMPLATE_INLIERS:
        return None, None, {"template_refine": "too few template matches", **report}
    fit = estimate_transform(t.keypoints0, t.keypoints1, GeometryConfig(model="homography", threshold_px=2.0))
    report["template_inliers"] = fit.n_inliers
    if fit.H is None or fit.n_inliers < MIN_TEMPLATE_INLIERS:
        return None, None, {"template_refine": "template matches are not consistent", **report}
    shift = _grid_shift(fit.H, image0.shape)
    report["template_shift_px"] = round(shift, 3)
    if shift > radius:
        return None, None, {"template_refine": "template matches disagree with the matcher", **report}
    # every template match goes on (not only the inliers of this fit): the pipeline's fit and verdict judge them
    return (t.keypoints0, apply_transform(W, t.keypoints1), t.confidence), W @ fit.H, report


def refine_with_templates(image0: np.ndarray, mask0: np.ndarray, image1: np.ndarray, mask1: np.ndarray,
                          W: np.ndarray, radius: int, passes: int = 2, min_correction: float = 0.0
                          ) -> tuple[Matches | None, dict]:
    """CFOG template matches on the pair rectified by W, when they refine it.

    Args:
        image0, mask0: optical image and validity mask.
        image1, mask1: SAR image and validity mask.
        W: the transform to refine (optical px -> SAR px).
        radius: CFOG search radius (pixels) around each template in the rectified SAR.
        passes: most template passes; each rectifies the SAR again with the previous pass's homography (a result
            several pixels off is only partly corrected by one pass), stopping once a pass moves it < 0.25 px.
        min_correction: return None ("confirmed") when the first pass moves W by less than this (median px over the
            grid): the templates confirm it, and the matcher's own matches may be the more precise.

    Returns:
        the template matches (keypoints0 optical px, keypoints1 SAR px, confidences), or None when W is kept; and a
        report: ``{"template_refine": "applied" | "confirmed" | reason, "template_passes": n,
        "template_correction_px": first pass's shift, ...}`` (the counts of the last pass).
    """
    # the fixed 24 px grid: its inlier threshold (MIN_TEMPLATE_INLIERS) was set for it, and denser templates far
    # from the truth agree by chance more often
    cfog = CFOGMatcher(search_radius=radius, max_side=0, min_grid_cells=0)
    d0 = cfog.describe(image0)  # the optical channels, the same in every pass
    out, W, report = _template_pass(cfog, image0, mask0, d0, image1, mask1, W)
    if out is None:
        return None, {**report, "template_passes": 0}
    correction = report["template_shift_px"]
    if correction < min_correction:
        # the templates confirm the matcher's result to within their own precision: keep its matches (and spare
        # the further passes)
        return None, {**report, "template_passes": 1, "template_correction_px": correction,
                      "template_refine": "confirmed"}
    done = 1
    while done < passes and report["template_shift_px"] >= 0.25:
        refined, W_next, last = _template_pass(cfog, image0, mask0, d0, image1, mask1, W)
        if refined is None:
            break  # a failed later pass keeps the previous pass's result
        out, W, report, done = refined, W_next, last, done + 1
    logger.debug("template refinement: %d passes, last %s", done, report)
    return out, {**report, "template_passes": done, "template_correction_px": correction, "template_refine": "applied"}
