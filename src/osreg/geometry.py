"""Robust transform estimation (MAGSAC++ through OpenCV's USAC) and transform helpers.

Transforms are 3x3 matrices mapping optical pixel coordinates to SAR pixel coordinates (pixel centres at
integers), applied to homogeneous column vectors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from osreg.errors import InputError

logger = logging.getLogger(__name__)

MODELS = ("similarity", "affine", "homography")
MIN_SAMPLES = {"similarity": 3, "affine": 3, "homography": 4}


@dataclass(frozen=True)
class GeometryConfig:
    """Attributes:
    model: "similarity", "affine" or "homography".
    threshold_px: inlier threshold (MAGSAC++ sigma upper bound) in SAR pixels.
    confidence: RANSAC confidence.
    max_iters: iteration cap.
    seed: seed of the sampler, so that the same matches always give the same transform.
    """

    model: str = "affine"
    threshold_px: float = 3.0
    confidence: float = 0.9999
    max_iters: int = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"unknown transform model {self.model!r}; expected one of {', '.join(MODELS)}")


@dataclass(frozen=True)
class Estimate:
    """A robust fit.

    Attributes:
        H: 3x3 optical->SAR pixel transform, or None when no transform could be fitted.
        inliers: ``(N,)`` bool mask over the matches.
        residuals: ``(N,)`` transfer error of every match under H (NaN when H is None).
        model: the model that was fitted.
    """

    H: np.ndarray | None
    inliers: np.ndarray
    residuals: np.ndarray
    model: str

    @property
    def n_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def rmse(self) -> float:
        """Root mean square transfer error of the inliers (NaN without inliers)."""
        if self.H is None or self.n_inliers == 0:
            return float("nan")
        return float(np.sqrt(np.mean(self.residuals[self.inliers] ** 2)))


def apply_transform(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 3x3 transform to ``(N, 2)`` points."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    p = np.c_[xy, np.ones(len(xy))] @ np.asarray(H, dtype=np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return p[:, :2] / p[:, 2:3]


def scale_matrix(s: float, sy: float | None = None) -> np.ndarray:
    """Original px -> px of an image resized by ``s`` (``sy`` along y if different), pixel centres at integers:
    ``x_s = s (x + 0.5) - 0.5``."""
    sy = s if sy is None else sy
    return np.array([[s, 0, 0.5 * s - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def translation(dx: float, dy: float) -> np.ndarray:
    """The 3 x 3 transform p -> p + (dx, dy)."""
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])


def transfer_error(H: np.ndarray, xy0: np.ndarray, xy1: np.ndarray) -> np.ndarray:
    """Distance between ``H(xy0)`` and ``xy1``."""
    return np.linalg.norm(apply_transform(H, xy0) - np.asarray(xy1, dtype=np.float64).reshape(-1, 2), axis=1)


def rectify(img: np.ndarray, mask: np.ndarray, F: np.ndarray, shape0: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Resample img into the optical frame: pixel p of the result shows img at F(p)."""
    size = (shape0[1], shape0[0])
    out = cv2.warpPerspective(img, F, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderValue=0)
    out = np.clip(out, 0.0, 1.0)
    m = cv2.warpPerspective(mask.astype(np.uint8), F, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderValue=0) > 0
    return out.astype(np.float32), m


def _usac_params(cfg: GeometryConfig) -> cv2.UsacParams:
    p = cv2.UsacParams()
    p.sampler = cv2.SAMPLING_UNIFORM
    p.score = cv2.SCORE_METHOD_MAGSAC
    p.loMethod = cv2.LOCAL_OPTIM_SIGMA
    p.loIterations = 10
    p.loSampleSize = 14
    p.final_polisher = cv2.MAGSAC
    p.final_polisher_iterations = 10
    p.threshold = float(cfg.threshold_px)
    p.confidence = float(cfg.confidence)
    p.maxIterations = int(cfg.max_iters)
    p.randomGeneratorState = int(cfg.seed)
    return p


def fit_similarity(xy0: np.ndarray, xy1: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping xy0 to xy1."""
    m0, m1 = xy0.mean(0), xy1.mean(0)
    a, b = xy0 - m0, xy1 - m1
    cov = b.T @ a / len(a)
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    D = np.diag([1.0, d])
    R = u @ D @ vt
    var0 = (a**2).sum() / len(a)
    scale = (s * np.diag(D)).sum() / max(var0, 1e-12)
    H = np.eye(3)
    H[:2, :2] = scale * R
    H[:2, 2] = m1 - scale * R @ m0
    return H


def fit_affine(xy0: np.ndarray, xy1: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(Weighted) least-squares affine 3x3 mapping xy0 to xy1."""
    X = np.c_[xy0, np.ones(len(xy0))]
    sw = np.sqrt(np.ones(len(xy0)) if weights is None else weights)[:, None]
    A, *_ = np.linalg.lstsq(X * sw, xy1 * sw, rcond=None)
    return np.vstack([A.T, [0, 0, 1]])


def estimate_transform(xy0: np.ndarray, xy1: np.ndarray, cfg: GeometryConfig = GeometryConfig()) -> Estimate:
    """Fit the configured model robustly with MAGSAC++.

    Similarity has no USAC solver in OpenCV: its consensus set comes from MAGSAC++ on the affine model, then a
    least-squares similarity is refitted and the inliers re-thresholded (twice).

    Returns an :class:`Estimate` with ``H=None`` when there are too few matches or no fit was found.
    """
    xy0 = np.asarray(xy0, dtype=np.float64).reshape(-1, 2)
    xy1 = np.asarray(xy1, dtype=np.float64).reshape(-1, 2)
    n = len(xy0)
    none = Estimate(None, np.zeros(n, bool), np.full(n, np.nan), cfg.model)
    if n < MIN_SAMPLES[cfg.model] + 1:
        return none
    src, dst = xy0.astype(np.float32), xy1.astype(np.float32)
    params = _usac_params(cfg)
    try:
        if cfg.model == "homography":
            M, mask = cv2.findHomography(src, dst, params)
        else:
            M, mask = cv2.estimateAffine2D(src, dst, params)
    except cv2.error as exc:  # degenerate samples (all points collinear, duplicates)
        logger.debug("USAC failed: %s", exc)
        return none
    if M is None or mask is None:
        return none
    H = np.eye(3)
    if M.shape == (3, 3):
        H = M.astype(np.float64)
    else:
        H[:2] = M
    inliers = mask.ravel().astype(bool)
    if cfg.model == "similarity":
        for _ in range(2):
            if inliers.sum() < 2:
                return none
            H = fit_similarity(xy0[inliers], xy1[inliers])
            inliers = transfer_error(H, xy0, xy1) < cfg.threshold_px
    if not np.all(np.isfinite(H)):
        return none
    res = transfer_error(H, xy0, xy1)
    return Estimate(H, inliers & np.isfinite(res), res, cfg.model)


def decompose(H: np.ndarray) -> dict[str, float]:
    """Rotation (degrees), scales and shear of the linear part of a transform, and its perspective strength."""
    A = np.asarray(H, dtype=np.float64)
    A = A / A[2, 2]
    L = A[:2, :2]
    sx = float(np.hypot(L[0, 0], L[1, 0]))
    rot = float(np.degrees(np.arctan2(L[1, 0], L[0, 0])))
    det = float(np.linalg.det(L))
    sy = det / sx if sx > 0 else 0.0
    shear = float((L[0, 0] * L[0, 1] + L[1, 0] * L[1, 1]) / max(det, 1e-12))
    return {
        "rotation_deg": rot,
        "scale_x": sx,
        "scale_y": float(sy),
        "shear": shear,
        "determinant": det,
        "perspective": float(np.hypot(A[2, 0], A[2, 1])),
        "tx": float(A[0, 2]),
        "ty": float(A[1, 2]),
    }
