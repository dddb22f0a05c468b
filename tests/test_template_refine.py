"""Template refinement of a dense matcher's result: it sharpens a nearly right result and never replaces one it
cannot confirm."""

from __future__ import annotations

import cv2
import numpy as np
from conftest import textured

from osreg.geometry import GeometryConfig, apply_transform, estimate_transform
from osreg.matchers.template_refine import refine_with_templates

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


def _grid_error(k0, k1):
    est = estimate_transform(k0, k1, GeometryConfig(model="homography", threshold_px=2.0))
    g = np.stack(np.meshgrid(np.linspace(40, N - 40, 8), np.linspace(40, N - 40, 8)), -1).reshape(-1, 2)
    return float(np.median(np.linalg.norm(apply_transform(est.H, g) - apply_transform(TRUTH, g), axis=1)))


def test_refinement_recovers_a_result_a_few_pixels_off():
    opt, m0, sar, m1 = _pair()
    coarse = _matches_off_by((2.6, -2.2))
    assert 3.2 < _grid_error(*coarse[:2]) < 3.6
    (k0, k1, conf), report = refine_with_templates(opt, m0, sar, m1, coarse, radius=8)
    assert report["template_refine"] == "applied"
    assert report["template_inliers"] >= 12
    assert len(k0) == len(k1) == len(conf) == report["template_matches"]
    assert _grid_error(k0, k1) < 0.5


def test_refinement_keeps_matches_it_cannot_confirm():
    opt, m0, sar, m1 = _pair()
    far = _matches_off_by((14.0, 9.0))  # farther off than the search radius: CFOG cannot see the truth
    out, report = refine_with_templates(opt, m0, sar, m1, far, radius=8)
    assert report["template_refine"] != "applied"
    assert all(a is b for a, b in zip(out, far))


def test_refinement_of_too_few_matches_is_a_no_op():
    opt, m0, sar, m1 = _pair()
    empty = (np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))
    out, report = refine_with_templates(opt, m0, sar, m1, empty, radius=8)
    assert out is empty
    assert report == {"template_refine": "too few matches"}


def test_refinement_that_only_confirms_keeps_the_matchers_matches():
    opt, m0, sar, m1 = _pair()
    close = _matches_off_by((0.5, -0.4))
    out, report = refine_with_templates(opt, m0, sar, m1, close, radius=8, min_correction=1.5)
    assert report["template_refine"] == "confirmed"
    assert report["template_passes"] == 1  # a confirmation spares the further passes
    assert 0.4 < report["template_correction_px"] < 1.0
    assert all(a is b for a, b in zip(out, close))
    # the same threshold lets a real correction through
    _, report = refine_with_templates(opt, m0, sar, m1, _matches_off_by((2.6, -2.2)), radius=8, min_correction=1.5)
    assert report["template_refine"] == "applied"
    assert report["template_correction_px"] > 3.0
