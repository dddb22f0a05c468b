"""The rotation/scale search stage around any matcher: hypothesis order, early stop, prescreen, config checks; and
the template refinement stage after the fit."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import demo_rotated_case, grid_error, textured

from osreg.errors import InputError
from osreg.geometry import GeometryConfig, apply_transform, estimate_transform
from osreg.matchers.base import Matcher
from osreg.matchers.dense_config import DenseMatcherConfig
from osreg.matchers.search import SearchConfig, SearchStage, rotate_with_matrix
from osreg.types import MatchResult


class GridMatcher(Matcher):
    """Matches on a 6x6 grid that are consistent under every hypothesis (a stand-in for a network); counts its quick
    (coarse) passes."""

    name = "grid"

    def __init__(self, max_side: int = 512) -> None:
        self.config = DenseMatcherConfig(max_side=max_side)
        self.coarse_calls = 0

    def _grid(self, img0, img1):
        g = np.stack(np.meshgrid(np.linspace(4, 0.9 * img0.shape[1], 6), np.linspace(4, 0.9 * img0.shape[0], 6)),
                     -1).reshape(-1, 2)
        return MatchResult(g, g * (img1.shape[1] / img0.shape[1]), np.ones(len(g)))

    def coarse_match(self, image0, mask0, image1, mask1, reference=None):
        self.coarse_calls += 1
        return self._grid(image0, image1)

    def match_working(self, image0, image1, mask0, mask1):
        return self._grid(image0, image1)


def searched(inner: Matcher, **options) -> SearchStage:
    return SearchStage(inner, SearchConfig(**options))


def test_hypothesis_order_starts_at_identity_and_covers_every_pair():
    order = SearchConfig().hypothesis_order()
    assert order[0] == (0, 1.0)
    assert len(order) == len(set(order)) == 24
    # the other scales of the identity turn, then the nearest turns (45 and 315 degrees) at scale 1
    assert {r for r, _ in order[1:3]} == {0}
    assert order[3:5] == [(45, 1.0), (315, 1.0)]
    assert {r for r, _ in order[-3:]} == {180}


def test_early_stop_accepts_the_first_consistent_hypothesis():
    img = textured((96, 96), seed=3)
    inner = GridMatcher()
    res = searched(inner).match(img, img)  # accept_inliers=0: every hypothesis is scored
    assert res.info["search"]["hypotheses_scored"] == inner.coarse_calls == 24
    inner = GridMatcher()
    res = searched(inner, accept_inliers=20, accept_ratio=0.9).match(img, img)
    assert res.info["search"]["hypotheses_scored"] == inner.coarse_calls == 1
    assert res.info["search"]["hypothesis"] == {"rotation": 0, "scale": 1.0, "inliers": 36}
    # a threshold above the number of matches never stops the search
    assert searched(GridMatcher(), accept_inliers=37).match(img, img).info["search"]["hypotheses_scored"] == 24


def test_the_search_makes_a_template_matcher_rotation_invariant():
    """CFOG is blind to rotation; wrapped in the search stage it registers the demo pair turned by a quarter."""
    from osreg.matchers.cfog import CFOGMatcher

    opt, sar, mask, D = demo_rotated_case(0, 1.0)
    turned, tmask, R = rotate_with_matrix(sar, mask, 90)

    def error(res):
        est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="homography"))
        return np.inf if est.H is None else float(np.median(grid_error(est.H, R @ D)))

    assert error(CFOGMatcher().match(opt, turned.copy(), None, tmask.copy())) > 20
    stage = searched(CFOGMatcher(), rotations=(0, 90, 180, 270), scales=1.0)
    res = stage.match(opt, turned.copy(), None, tmask.copy())
    assert res.info["search"]["hypothesis"]["rotation"] == 270  # turning the SAR back
    assert error(res) < 2.0


def test_template_refinement_stage_sharpens_any_matchers_fit():
    """The stage after the fit: grid matches that claim the identity on a pair shifted by (3.4, -2.3) px."""
    import cv2

    from osreg.core import register_arrays
    from osreg.matchers.template_refine import TemplateRefineConfig

    img = textured((256, 256), seed=5)
    shift = np.array([3.4, -2.3])  # SAR px = optical px + shift; the grid matches claim the identity
    sar = cv2.warpAffine(img, np.array([[1, 0, shift[0]], [0, 1, shift[1]]]), (256, 256), flags=cv2.INTER_CUBIC)
    centre = np.array([[128.0, 128.0]])
    geometry = GeometryConfig(model="homography")

    def error(res):
        return float(np.linalg.norm(apply_transform(res.estimate.H, centre) - (centre + shift)))

    plain = register_arrays(img, sar, None, None, GridMatcher(), geometry)
    assert plain.refine_report == {}
    assert error(plain) == pytest.approx(np.hypot(*shift), abs=1e-6)
    refined = register_arrays(img, sar, None, None, GridMatcher(), geometry, template_refine=TemplateRefineConfig())
    assert refined.refine_report["template_refine"] == "applied"
    assert refined.refine_report["template_passes"] >= 1
    assert error(refined) < 0.3
    assert refined.timings["refine_s"] > 0


def test_bad_search_config_is_refused():
    with pytest.raises(InputError, match=r"accept_inliers must be >= 0 and accept_ratio in \[0, 1\], got -1 and 0.5"):
        SearchConfig(accept_inliers=-1)
    with pytest.raises(InputError, match=r"got 10 and 1.5"):
        SearchConfig(accept_inliers=10, accept_ratio=1.5)
    with pytest.raises(InputError, match=r"rotations must list at least one value, got \(\)"):
        SearchConfig(rotations=())
    with pytest.raises(InputError, match=r"scales must be positive, got \(0.0, 1.0\)"):
        SearchConfig(scales=(0.0, 1.0))
    from osreg.matchers.template_refine import TemplateRefineConfig

    with pytest.raises(InputError, match=r"template_radius must be at least 2 px, got 0"):
        TemplateRefineConfig(radius=0)
    # the dense-matching settings shared by TAR and PromptMID are checked once, for both
    from osreg.matchers.promptmid.config import PromptMIDConfig
    from osreg.matchers.tar.config import TARConfig

    for cls in (DenseMatcherConfig, TARConfig, PromptMIDConfig):
        with pytest.raises(InputError, match="fine_window must be odd, got 6"):
            cls(fine_window=6)


class TurnedMatcher(GridMatcher):
    """Consistent grid matches only when the hypothesis gives the SAR the optical image's landscape shape (a SAR
    given turned by a quarter, so rotations 90 and 270 at any scale), scattered matches otherwise."""

    def coarse_match(self, image0, mask0, image1, mask1, reference=None):
        self.coarse_calls += 1
        res = self._grid(image0, image1)
        if (image1.shape[1] > image1.shape[0]) != (image0.shape[1] > image0.shape[0]):
            k1 = np.random.default_rng(self.coarse_calls).uniform(0, min(image1.shape), res.keypoints1.shape)
            res = MatchResult(res.keypoints0, k1, res.confidence)
        return res


def test_prescreen_scores_the_rest_at_low_resolution_and_keeps_the_best():
    img = textured((192, 320), seed=3)
    sar = np.ascontiguousarray(np.rot90(img))  # 320 x 192: only quarter turns restore the optical's shape
    inner = TurnedMatcher()
    res = searched(inner, search_side=192, prescreen_side=96, prescreen_keep=3, rectify_iterations=0).match(img, sar)
    # the first hypothesis (identity) at search resolution, all 23 others at 96 px, the 3 kept at 192 px
    assert inner.coarse_calls == 1 + 23 + 3
    info = res.info["search"]
    assert info["hypotheses_scored"] == 1 + 3
    assert info["hypothesis"]["rotation"] in (90, 270) and info["hypothesis"]["inliers"] == 36
    # without the prescreen every hypothesis is scored at search resolution, and the choice is the same kind
    full = TurnedMatcher()
    res = searched(full, search_side=192, rectify_iterations=0).match(img, sar)
    assert res.info["search"]["hypothesis"]["rotation"] in (90, 270) and full.coarse_calls == 24
    # an accepted first hypothesis never starts the prescreen
    upright = TurnedMatcher()
    stage = searched(upright, search_side=192, prescreen_side=96, prescreen_keep=3, accept_inliers=20)
    assert stage.match(img, img).info["search"]["hypotheses_scored"] == upright.coarse_calls == 1


@pytest.mark.parametrize("options,message", [
    ({"prescreen_side": 256}, r"^prescreen_side \(256 px\) must be below search_side \(256 px\), or 0 to switch"),
    ({"prescreen_keep": 0}, r"^prescreen_side must be >= 0 and prescreen_keep >= 1, got 0 and 0$"),
])
def test_prescreen_config_errors(options, message):
    with pytest.raises(InputError, match=message):
        SearchConfig(**options)
