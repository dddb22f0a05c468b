"""The rotation/scale search shared by the dense matchers: hypothesis order, early stop, config checks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import textured

from osreg.errors import InputError
from osreg.matchers.search import DenseMatcherConfig, SearchConfig, SearchMatcher


class GridMatcher(SearchMatcher):
    """Coarse matches on a 6x6 grid that are consistent under every hypothesis (a stand-in for a network)."""

    name = "grid"

    def __init__(self, **cfg) -> None:
        self.cfg = SearchConfig(**cfg)
        self.max_side = self.cfg.max_side
        self.coarse_calls = 0

    def _grid(self, img0, img1):
        g = np.stack(np.meshgrid(np.linspace(4, 0.9 * img0.shape[1], 6), np.linspace(4, 0.9 * img0.shape[0], 6)),
                     -1).reshape(-1, 2)
        return g, g * (img1.shape[1] / img0.shape[1]), np.ones(len(g))

    def _coarse(self, img0, mask0, img1, mask1, features0=None):
        self.coarse_calls += 1
        return self._grid(img0, img1)

    def _final(self, img0, mask0, img1, mask1):
        return self._grid(img0, img1)


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
    exhaustive = GridMatcher()  # accept_inliers=0: every hypothesis is scored
    res = exhaustive.match(img, img)
    assert res.info["hypotheses_scored"] == exhaustive.coarse_calls == 24
    early = GridMatcher(accept_inliers=20, accept_ratio=0.9)
    res = early.match(img, img)
    assert res.info["hypotheses_scored"] == early.coarse_calls == 1
    assert res.info["hypothesis"] == {"rotation": 0, "scale": 1.0, "inliers": 36}
    # a threshold above the number of matches never stops the search
    assert GridMatcher(accept_inliers=37).match(img, img).info["hypotheses_scored"] == 24


def test_template_refinement_sharpens_the_final_matches():
    import cv2

    from osreg.geometry import GeometryConfig, apply_transform, estimate_transform

    img = textured((256, 256), seed=5)
    shift = np.array([3.4, -2.3])  # SAR px = optical px + shift; the grid matches claim the identity
    sar = cv2.warpAffine(img, np.array([[1, 0, shift[0]], [0, 1, shift[1]]]), (256, 256), flags=cv2.INTER_CUBIC)
    centre = np.array([[128.0, 128.0]])

    def error(res):
        est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="homography"))
        return float(np.linalg.norm(apply_transform(est.H, centre) - (centre + shift)))

    plain = GridMatcher(rotations=0, scales=1).match(img, sar)
    assert "template_refine" not in plain.info
    assert error(plain) == pytest.approx(np.hypot(*shift), abs=1e-6)
    refined = GridMatcher(rotations=0, scales=1, template_refine=True).match(img, sar)
    assert refined.info["template_refine"] == "applied"
    assert refined.info["template_passes"] >= 1
    assert error(refined) < 0.3


def test_bad_search_config_is_refused():
    with pytest.raises(InputError, match=r"accept_inliers must be >= 0 and accept_ratio in \[0, 1\], got -1 and 0.5"):
        SearchConfig(accept_inliers=-1)
    with pytest.raises(InputError, match=r"got 10 and 1.5"):
        SearchConfig(accept_inliers=10, accept_ratio=1.5)
    with pytest.raises(InputError, match=r"rotations must list at least one value, got \(\)"):
        SearchConfig(rotations=())
    with pytest.raises(InputError, match=r"template_radius must be at least 2 px, got 0"):
        SearchConfig(template_radius=0)
    # the dense-matching settings shared by TAR and PromptMID are checked once, for both
    from osreg.matchers.promptmid.config import PromptMIDConfig
    from osreg.matchers.tar.config import TARConfig

    for cls in (DenseMatcherConfig, TARConfig, PromptMIDConfig):
        with pytest.raises(InputError, match="fine_window must be odd, got 6"):
            cls(fine_window=6)


class TurnedMatcher(GridMatcher):
    """Consistent grid matches only when the hypothesis gives the SAR the optical image's landscape shape (a SAR
    given turned by a quarter, so rotations 90 and 270 at any scale), scattered matches otherwise."""

    def _coarse(self, img0, mask0, img1, mask1, features0=None):
        self.coarse_calls += 1
        k0, k1, c = self._grid(img0, img1)
        if (img1.shape[1] > img1.shape[0]) != (img0.shape[1] > img0.shape[0]):
            k1 = np.random.default_rng(self.coarse_calls).uniform(0, min(img1.shape), k1.shape)
        return k0, k1, c


def test_prescreen_scores_the_rest_at_low_resolution_and_keeps_the_best():
    img = textured((192, 320), seed=3)
    sar = np.ascontiguousarray(np.rot90(img))  # 320 x 192: only quarter turns restore the optical's shape
    m = TurnedMatcher(search_side=192, prescreen_side=96, prescreen_keep=3, rectify_iterations=0)
    res = m.match(img, sar)
    # the first hypothesis (identity) at search resolution, all 23 others at 96 px, the 3 kept at 192 px
    assert m.coarse_calls == 1 + 23 + 3
    assert res.info["hypotheses_scored"] == 1 + 3
    assert res.info["hypothesis"]["rotation"] in (90, 270) and res.info["hypothesis"]["inliers"] == 36
    # without the prescreen every hypothesis is scored at search resolution, and the choice is the same kind
    full = TurnedMatcher(search_side=192, rectify_iterations=0)
    assert full.match(img, sar).info["hypothesis"]["rotation"] in (90, 270) and full.coarse_calls == 24
    # an accepted first hypothesis never starts the prescreen
    upright = TurnedMatcher(search_side=192, prescreen_side=96, prescreen_keep=3, accept_inliers=20)
    assert upright.match(img, img).info["hypotheses_scored"] == upright.coarse_calls == 1


@pytest.mark.parametrize("options,message", [
    ({"prescreen_side": 256}, r"^prescreen_side \(256 px\) must be below search_side \(256 px\), or 0 to switch"),
    ({"prescreen_keep": 0}, r"^prescreen_side must be >= 0 and prescreen_keep >= 1, got 0 and 0$"),
])
def test_prescreen_config_errors(options, message):
    with pytest.raises(InputError, match=message):
        SearchConfig(**options)
