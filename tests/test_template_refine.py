"""Template refinement of a fit: it sharpens a nearly right result and never replaces one it cannot confirm."""

from __future__ import annotations

import cv2
import numpy as np
from conftest import textured

from osreg.geometry import GeometryConfig, apply_transform, estimate_transform
from osreg.matchers.template_refine import TemplateRefineConfig, refine_after_fit, refine_with_templates
from osreg.types import MatchResult

N = 320
# optical px -> SAR px: a slight rotation and scale and a sub-pixel translation
TRUTH = np.array([[0.998, -0.035, 5.3], [0.035, 0.998, -3.7], [0.0, 0.0, 1.0]])


def _pair():
    opt = textured((N, N), seed=3)
    # the SAR: contrast-reversed, warped by TRUTH, with multiplicative speckle
    sar = cv2.warpPerspective(1.0 - opt, TRUTH, (N, N), flags=cv2.INTER_CUBIC)
    rng = np.random.default_rng(1)
    sar = np.clip(sar * rng.gamma(8.0, 1 / 8.0, sar.shape), 0, 1).astype(np.float32)
    mask1 = cv2.warpPerspective(np.ones((N, N), np.uint8), TRUTH, (N, N), flags=cv2.INTER_NEAREST) > 0
    return opt, np.ones((N, N), bool), sar, mask1


def _matches_off_by(offset):
    """Matches a coarse matcher could return: the true positions moved by ``offset`` (px) in the SAR."""
    g = np.stack(np.meshgrid(np.arange(40, N - 40, 16.0), np.arange(40, N - 40, 16.0)), -1).reshape(-1, 2)
    return g, apply_transform(TRUTH, g) + np.asarray(offset), np.ones(len(g))


def _fit(matches):
    return estimate_transform(matches[0], matches[1], GeometryConfig(model="homography", threshold_px=3.0)).H


def _grid_error(k0, k1):
    est = estimate_transform(k0, k1, GeometryConfig(model="homography", threshold_px=2.0))
    g = np.stack(np.meshgrid(np.linspace(40, N - 40, 8), np.linspace(40, N - 40, 8)), -1).reshape(-1, 2)
    return float(np.median(np.linalg.norm(apply_transform(est.H, g) - apply_transform(TRUTH, g), axis=1)))


def test_refinement_recovers_a_result_a_few_pixels_off():
    opt, m0, sar, m1 = _pair()
    coarse = _matches_off_by((2.6, -2.2))
    assert 3.2 < _grid_error(*coarse[:2]) < 3.6
    out, report = refine_with_templates(opt, m0, sar, m1, _fit(coarse), radius=8)
    k0, k1, conf = out
    assert report["template_refine"] == "applied"
    assert report["template_inliers"] >= 12
    assert len(k0) == len(k1) == len(conf) == report["template_matches"]
    assert _grid_error(k0, k1) < 0.5


def test_refinement_keeps_a_fit_it_cannot_confirm():
    opt, m0, sar, m1 = _pair()
    far = _matches_off_by((14.0, 9.0))  # farther off than the search radius: CFOG cannot see the truth
    out, report = refine_with_templates(opt, m0, sar, m1, _fit(far), radius=8)
    assert out is None
    assert report["template_refine"] in ("template matches disagree with the matcher",
                                         "template matches are not consistent", "too few template matches")


def test_refinement_that_only_confirms_keeps_the_fit():
    opt, m0, sar, m1 = _pair()
    close = _matches_off_by((0.5, -0.4))
    out, report = refine_with_templates(opt, m0, sar, m1, _fit(close), radius=8, min_correction=1.5)
    assert out is None
    assert report["template_refine"] == "confirmed"
    assert report["template_passes"] == 1  # a confirmation spares the further passes
    assert 0.4 < report["template_correction_px"] < 1.0
    # the same threshold lets a real correction through
    _, report = refine_with_templates(opt, m0, sar, m1, _fit(_matches_off_by((2.6, -2.2))), radius=8,
                                      min_correction=1.5)
    assert report["template_refine"] == "applied"
    assert report["template_correction_px"] > 3.0


def test_stage_after_the_fit_keeps_or_replaces_the_matches():
    """refine_after_fit: too few matches or no fit are no-ops that return the very same result; an applied
    refinement returns template matches in original pixels, also when it runs at a lower resolution."""
    opt, m0, sar, m1 = _pair()
    geometry = GeometryConfig(model="homography")
    empty = MatchResult.empty()
    out, report = refine_after_fit(opt, m0, sar, m1, empty, estimate_transform(empty.keypoints0, empty.keypoints1,
                                                                               geometry), TemplateRefineConfig())
    assert out is empty and report == {"template_refine": "too few matches"}
    coarse = MatchResult(*_matches_off_by((2.6, -2.2)), info={"method": "test"})
    est = estimate_transform(coarse.keypoints0, coarse.keypoints1, geometry)
    for max_side in (0, 256):  # full resolution, and the pair downscaled to 256 px
        out, report = refine_after_fit(opt, m0, sar, m1, coarse, est, TemplateRefineConfig(radius=8,
                                                                                           max_side=max_side))
        assert report["template_refine"] == "applied" and out.info == {"method": "test"}
        assert _grid_error(out.keypoints0, out.keypoints1) < (0.5 if max_side == 0 else 1.0), max_side
