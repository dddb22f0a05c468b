"""The registration core every entry point calls: match -> fit -> (template refinement) -> verdict, on arrays.

``osreg register`` and ``osreg match`` (through :mod:`osreg.pipeline`), the benchmark, and later the tiles of a scene
and the tasks of a batch all call :func:`register_arrays`; nothing else re-implements these steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from osreg.geometry import Estimate, GeometryConfig, estimate_transform
from osreg.matchers.base import Matcher
from osreg.matchers.template_refine import TemplateRefineConfig, refine_after_fit
from osreg.types import MatchResult
from osreg.verdict import Verdict, VerdictConfig, judge

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArrayRegistration:
    """The outcome of :func:`register_arrays`, trusted or not.

    Attributes:
        matches: the final matches (keypoints0 in image 0 px, keypoints1 in image 1 px).
        estimate: the robust fit (image 0 px -> image 1 px) of those matches.
        verdict: the trust checks.
        timings: seconds per step (``match_s``, ``estimate_s``, ``refine_s``, ``verdict_s``).
        refine_report: what the template refinement did (empty when it was off).
    """

    matches: MatchResult
    estimate: Estimate
    verdict: Verdict
    timings: dict[str, float] = field(default_factory=dict)
    refine_report: dict = field(default_factory=dict)


def register_arrays(
    image0: np.ndarray,
    image1: np.ndarray,
    mask0: np.ndarray | None,
    mask1: np.ndarray | None,
    matcher: Matcher,
    geometry: GeometryConfig = GeometryConfig(),
    verdict: VerdictConfig = VerdictConfig(),
    template_refine: TemplateRefineConfig | None = None,
) -> ArrayRegistration:
    """Register image 1 (SAR) to image 0 (optical): match, fit, refine (optional), judge.

    Args:
        image0, image1: ``(H, W)`` float32 images in ``[0, 1]`` (preprocessed).
        mask0, mask1: ``(H, W)`` bool validity masks (None: all valid).
        matcher: any matcher, possibly wrapped in the search stage.
        geometry: the robust fit.
        verdict: the trust checks.
        template_refine: the template refinement stage after the fit (None: off).

    Raises:
        InputError: an image the matcher cannot use (too small, not 2-D).
    """
    t = time.perf_counter()
    matches = matcher.match(image0, image1, mask0, mask1)
    match_s = time.perf_counter() - t
    result = fit_and_judge(image0, image1, mask0, mask1, matches, geometry, verdict, template_refine)
    result.timings["match_s"] = match_s
    logger.info("%s: %d matches, %d inliers, verdict %s%s", matcher.name, len(result.matches),
                result.estimate.n_inliers, result.verdict.label,
                "" if result.verdict.good else " (" + "; ".join(result.verdict.reasons) + ")")
    return result


def fit_and_judge(
    image0: np.ndarray,
    image1: np.ndarray,
    mask0: np.ndarray | None,
    mask1: np.ndarray | None,
    matches: MatchResult,
    geometry: GeometryConfig = GeometryConfig(),
    verdict: VerdictConfig = VerdictConfig(),
    template_refine: TemplateRefineConfig | None = None,
) -> ArrayRegistration:
    """The steps of :func:`register_arrays` after matching (also for a run whose matcher could not run, with
    ``MatchResult.empty()``)."""
    mask0 = np.ones(image0.shape, bool) if mask0 is None else mask0
    mask1 = np.ones(image1.shape, bool) if mask1 is None else mask1
    timings: dict[str, float] = {}
    t = time.perf_counter()
    est = estimate_transform(matches.keypoints0, matches.keypoints1, geometry)
    timings["estimate_s"] = time.perf_counter() - t
    report: dict = {}
    if template_refine is not None:
        t = time.perf_counter()
        refined, report = refine_after_fit(image0, mask0, image1, mask1, matches, est, template_refine)
        if refined is not matches:
            matches = refined
            est = estimate_transform(matches.keypoints0, matches.keypoints1, geometry)
        timings["refine_s"] = time.perf_counter() - t
    t = time.perf_counter()
    v = judge(est, matches.keypoints0, mask0, verdict, images=(image0, image1, mask1),
              search=matches.info.get("search"))
    timings["verdict_s"] = time.perf_counter() - t
    return ArrayRegistration(matches, est, v, timings, report)


__all__ = ["ArrayRegistration", "fit_and_judge", "register_arrays"]
