"""Is a registration trustworthy? Checks on the robust fit that do not need ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from osreg.descriptors import oriented_gradient_channels
from osreg.geometry import Estimate, apply_transform


@dataclass(frozen=True)
class VerdictConfig:
    """Attributes:
    min_inliers: fewest inliers of a trusted fit.
    min_inlier_ratio: smallest inlier fraction of all matches.
    max_rmse_px: largest inlier RMSE (SAR pixels).
    min_coverage: smallest fraction of the valid optical area spanned by the inliers' convex hull.
    max_scale: largest scale change (and its inverse the smallest) between the images' working grids.
    max_anisotropy: largest ratio of the two singular values of the linear part.
    min_alignment_peak: how much better (mean per-pixel correlation of dense oriented-gradient channels) the
        images must agree at the estimated transform than at the best of 8 shifts of 3 px around it. This checks
        the result against the pixels themselves, independently of the matches; skipped when no images are
        given. Calibrated on CFOG and RIFT results for 16 pairs (volkov_s1s2_10m 003-073, osmnet 1-4, both
        benchmark protocols): correct registrations scored >= 0.0078, wrong ones <= 0.0047.
    """

    min_inliers: int = 15
    min_inlier_ratio: float = 0.05
    max_rmse_px: float = 2.0
    min_coverage: float = 0.10
    max_scale: float = 8.0
    max_anisotropy: float = 3.0
    min_alignment_peak: float = 0.006


CHECKS = ("fit", "inliers", "inlier_ratio", "residuals", "coverage", "degenerate", "scale", "overlap",
          "alignment_peak", "search")  # the names of the checks of judge(), in its order


@dataclass(frozen=True)
class Verdict:
    """``good`` is True when no check failed; ``reasons`` says which failed, in words; ``failed_checks`` names them
    (one of :data:`CHECKS` per reason, in the same order); ``confidence`` in [0, 1]."""

    good: bool
    reasons: tuple[str, ...]
    confidence: float
    coverage: float
    alignment_peak: float = float("nan")
    failed_checks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return "good" if self.good else "failed"


def _coverage(points: np.ndarray, valid: np.ndarray) -> float:
    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(points.astype(np.float32))
    area = float(cv2.contourArea(hull))
    return area / max(float(valid.sum()), 1.0)


def _folds(H: np.ndarray, shape: tuple[int, int]) -> bool:
    """True when the image corners map to a non-convex or reversed quadrilateral."""
    h, w = shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)
    q = apply_transform(H, corners)
    if not np.all(np.isfinite(q)):
        return True
    cross = []
    for i in range(4):
        a, b, c = q[i], q[(i + 1) % 4], q[(i + 2) % 4]
        cross.append((b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]))
    return not (all(x > 0 for x in cross) or all(x < 0 for x in cross))


def alignment_peak(
    image0: np.ndarray, mask0: np.ndarray, image1: np.ndarray, mask1: np.ndarray, H: np.ndarray,
    shift: int = 3, max_side: int = 512,
) -> tuple[float, float]:
    """Sharpness of the dense similarity at a transform: similarity at H minus the best of 8 shifts around it.

    The SAR image is warped onto the optical grid by H; similarity is the mean over their common valid area of
    the per-pixel correlation (across orientations) of the two images' oriented-gradient channels. A true
    registration is a local maximum; a wrong one is not special.

    Returns ``(similarity at H, similarity at H minus the best shifted one)``; NaNs when the overlap is too
    small to judge.
    """
    h, w = image0.shape
    s = min(1.0, max_side / max(h, w))
    S = np.diag([s, s, 1.0])
    Hs = S @ H @ np.linalg.inv(S)
    if s < 1:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image0 = cv2.resize(image0, size, interpolation=cv2.INTER_AREA)
        mask0 = cv2.resize(mask0.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        h1, w1 = image1.shape
        s1 = (max(1, round(w1 * s)), max(1, round(h1 * s)))
        image1 = cv2.resize(image1, s1, interpolation=cv2.INTER_AREA)
        mask1 = cv2.resize(mask1.astype(np.uint8), s1, interpolation=cv2.INTER_NEAREST) > 0
        h, w = image0.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(image1.astype(np.float32), Hs, (w, h), flags=flags)
    wmask = cv2.warpPerspective(mask1.astype(np.uint8), Hs, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    valid = cv2.erode((mask0 & (wmask > 0)).astype(np.uint8), np.ones((2 * shift + 7,) * 2, np.uint8)) > 0
    if valid.sum() < 0.05 * h * w:
        return float("nan"), float("nan")
    # per-pixel correlation across orientations: remove each pixel's channel mean so that a random alignment
    # scores about 0 instead of the large positive baseline of non-negative channels
    d0 = oriented_gradient_channels(image0)
    d1 = oriented_gradient_channels(warped)
    d0 -= d0.mean(axis=0, keepdims=True)
    d1 -= d1.mean(axis=0, keepdims=True)
    d0 /= np.linalg.norm(d0, axis=0, keepdims=True) + 1e-6
    d1 /= np.linalg.norm(d1, axis=0, keepdims=True) + 1e-6

    def score(dx: int, dy: int) -> float:
        moved = np.roll(d1, (dy, dx), axis=(1, 2))
        return float((d0 * moved).sum(axis=0)[valid].mean())

    centre = score(0, 0)
    ring = [score(dx, dy) for dx in (-shift, 0, shift) for dy in (-shift, 0, shift) if dx or dy]
    return centre, centre - max(ring)


def judge(
    estimate: Estimate,
    keypoints0: np.ndarray,
    valid0: np.ndarray,
    cfg: VerdictConfig = VerdictConfig(),
    images: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    search: dict | None = None,
) -> Verdict:
    """Judge a fit.

    Args:
        estimate: the robust fit.
        keypoints0: ``(N, 2)`` optical keypoints of all matches.
        valid0: optical validity mask ``(H, W)`` (the area that could be matched).
        images: ``(optical image, SAR image, SAR mask)`` as the matcher saw them, for the alignment-peak check.
        search: what a global search reports of itself (``MatchResult.info["search"]``): a result it chose among
            many hypotheses without confirming it (``confirmed`` false: no candidate reached its ``accept_inliers``)
            is not trusted, since the more hypotheses are tried, the likelier a wrong one passes the other checks.
    """
    n = len(keypoints0)
    failed: list[tuple[str, str]] = []  # (check, reason)

    def fail(check: str, reason: str) -> None:
        failed.append((check, reason))

    if estimate.H is None:
        return Verdict(False, (f"no transform could be fitted to {n} matches",), 0.0, 0.0, failed_checks=("fit",))
    n_in = estimate.n_inliers
    if n_in < cfg.min_inliers:
        fail("inliers", f"too few inliers: {n_in} (at least {cfg.min_inliers} needed)")
    ratio = n_in / max(n, 1)
    if ratio < cfg.min_inlier_ratio:
        fail("inlier_ratio", f"inlier ratio {ratio:.1%} is below {cfg.min_inlier_ratio:.0%}")
    rmse = estimate.rmse
    if not np.isfinite(rmse) or rmse > cfg.max_rmse_px:
        fail("residuals", f"inlier residual RMSE {rmse:.2f} px exceeds {cfg.max_rmse_px} px")
    cov = _coverage(keypoints0[estimate.inliers], valid0)
    if cov < cfg.min_coverage:
        fail("coverage", f"inliers span only {cov:.0%} of the image (at least {cfg.min_coverage:.0%}): matches are "
             "bunched in one area and the transform elsewhere is extrapolated")
    L = estimate.H[:2, :2] / estimate.H[2, 2]
    sv = np.linalg.svd(L, compute_uv=False)
    det = float(np.linalg.det(L))
    if det <= 0:
        fail("degenerate", "degenerate transform: it mirrors the image")
    elif sv[0] / max(sv[1], 1e-12) > cfg.max_anisotropy:
        fail("degenerate", f"degenerate transform: stretch ratio {sv[0] / sv[1]:.1f} exceeds {cfg.max_anisotropy}")
    scale = float(np.sqrt(abs(det)))
    if not (1 / cfg.max_scale <= scale <= cfg.max_scale):
        fail("scale", f"implausible scale change {scale:.3f} (allowed 1/{cfg.max_scale:g} to {cfg.max_scale:g})")
    if estimate.model == "homography" and _folds(estimate.H, valid0.shape):
        fail("degenerate", "degenerate transform: the image outline folds over")
    peak = float("nan")
    if images is not None and not failed:
        centre, peak = alignment_peak(images[0], valid0, images[1], images[2], estimate.H)
        if not np.isfinite(peak):
            fail("overlap", "the registered images overlap too little to verify the result")
        elif centre <= 0 or peak < cfg.min_alignment_peak:
            fail("alignment_peak", f"the images do not agree better at the estimated transform than 3 px away from it "
                 f"(alignment peak {peak:.3f}, at least {cfg.min_alignment_peak} needed)")
    if search and search.get("confirmed") is False and not failed:
        fail("search", f"the rotation/scale search confirmed none of its {search.get('hypotheses_verified', 0)} "
             f"hypotheses with {search.get('accept_inliers', '?')} inliers; the best of them is not trusted")
    fit_quality = float(np.exp(-((rmse / 2.0) ** 2))) if np.isfinite(rmse) else 0.0
    conf = (1 - np.exp(-n_in / 20)) * min(1.0, cov / 0.3) * fit_quality
    if failed:
        conf = min(conf, 0.49)
    return Verdict(not failed, tuple(r for _, r in failed), float(np.clip(conf, 0, 1)), float(cov), peak,
                   tuple(c for c, _ in failed))
