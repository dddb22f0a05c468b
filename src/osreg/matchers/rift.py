"""RIFT: radiation-variation insensitive feature transform (Li, Hu & Ai, TIP 2020), rotation-invariant variant.

1. A log-Gabor filter bank (``n_scales`` x ``n_orients``) applied in the frequency domain.
2. Phase congruency per orientation (Kovesi's measure with noise compensation and frequency-spread weighting),
   and its maximum / minimum moments: edge strength ``M`` and corner strength ``m``.
3. Keypoints: FAST on ``M`` (edges) and on ``m`` (corners), strongest first.
4. Descriptor: the maximum index map (MIM, the orientation of largest log-Gabor amplitude summed over scales)
   in a patch around the keypoint, histogrammed over a grid of cells. Rotation invariance (as in RIFT2): the
   patch is sampled on a grid turned by the keypoint's dominant orientation, and the amplitude vectors are
   circularly shifted by the same angle before taking the arg-max. The dominant orientation comes from the
   phase-congruency moments and is only defined modulo 180 degrees (edges have no sign across modalities), so
   image 1 gets a second descriptor turned by 180 degrees and the closer of the two is used.
5. Mutual nearest neighbours with a loose ratio test; outliers are left to the robust geometry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from osreg.matchers.base import Matcher, mutual_nearest_neighbours
from osreg.types import MatchResult


@dataclass(frozen=True)
class RIFTConfig:
    """Attributes:
    n_scales, n_orients: log-Gabor bank size.
    min_wavelength, mult, sigma_onf: log-Gabor bank shape (Kovesi's parameters).
    noise_k: noise threshold in standard deviations.
    max_keypoints: most keypoints per image.
    patch_size: descriptor patch side (pixels); grid_cells: cells per side; samples: samples per side.
    ratio: Lowe ratio for matching.
    rotation_invariant: normalise patches by their dominant orientation (off: the original RIFT sampling, for
        images known to be north-up, e.g. after georeferencing).
    max_side: working resolution.
    """

    n_scales: int = 4
    n_orients: int = 6
    min_wavelength: float = 3.0
    mult: float = 1.6
    sigma_onf: float = 0.75
    noise_k: float = 3.0
    max_keypoints: int = 1500
    patch_size: int = 72
    grid_cells: int = 6
    samples: int = 36
    ratio: float = 1.0
    rotation_invariant: bool = True
    max_side: int = 768


@dataclass(frozen=True)
class PhaseCongruency:
    """``M``, ``m``: max/min moments (H, W); ``orient``: principal axis (radians, [0, pi)); ``amp``:
    (n_orients, H, W) log-Gabor amplitude summed over scales."""

    M: np.ndarray
    m: np.ndarray
    orient: np.ndarray
    amp: np.ndarray


def _log_gabor_bank(h: int, w: int, cfg: RIFTConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    theta = np.arctan2(-fy, fx)
    # low-pass to avoid the corners of the spectrum (Kovesi: cut-off 0.45, order 15)
    lowpass = 1.0 / (1.0 + (radius / 0.45) ** 30)
    radial = []
    for s in range(cfg.n_scales):
        f0 = 1.0 / (cfg.min_wavelength * cfg.mult**s)
        g = np.exp(-(np.log(radius / f0) ** 2) / (2 * np.log(cfg.sigma_onf) ** 2)) * lowpass
        g[0, 0] = 0.0
        radial.append(g)
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    spread_sigma = np.pi / cfg.n_orients / 1.2
    angular = []
    for o in range(cfg.n_orients):
        a = o * np.pi / cfg.n_orients
        ds = sin_t * np.cos(a) - cos_t * np.sin(a)
        dc = cos_t * np.cos(a) + sin_t * np.sin(a)
        dtheta = np.abs(np.arctan2(ds, dc))
        angular.append(np.exp(-(dtheta**2) / (2 * spread_sigma**2)))
    return radial, angular


def phase_congruency(img: np.ndarray, cfg: RIFTConfig = RIFTConfig()) -> PhaseCongruency:
    """Kovesi-style phase congruency moments and log-Gabor amplitudes of an image."""
    h, w = img.shape
    im_f = np.fft.fft2(img.astype(np.float64))
    radial, angular = _log_gabor_bank(h, w, cfg)
    eps = 1e-4
    cov_x2 = np.zeros((h, w))
    cov_y2 = np.zeros((h, w))
    cov_xy = np.zeros((h, w))
    amp = np.zeros((cfg.n_orients, h, w), np.float32)
    for o in range(cfg.n_orients):
        a = o * np.pi / cfg.n_orients
        sum_e = np.zeros((h, w))
        sum_o = np.zeros((h, w))
        sum_an = np.zeros((h, w))
        max_an = np.zeros((h, w))
        eo = []
        tau = None
        for s in range(cfg.n_scales):
            r = np.fft.ifft2(im_f * (radial[s] * angular[o]))
            an = np.abs(r)
            eo.append(r)
            sum_an += an
            sum_e += r.real
            sum_o += r.imag
            max_an = np.maximum(max_an, an)
            if s == 0:
                tau = np.median(an) / np.sqrt(np.log(4))
        amp[o] = sum_an
        x_energy = np.sqrt(sum_e**2 + sum_o**2) + eps
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        energy = np.zeros((h, w))
        for r in eo:
            energy += r.real * mean_e + r.imag * mean_o - np.abs(r.real * mean_o - r.imag * mean_e)
        total_tau = tau * (1 - (1 / cfg.mult) ** cfg.n_scales) / (1 - 1 / cfg.mult)
        noise_mean = total_tau * np.sqrt(np.pi / 2)
        noise_sigma = total_tau * np.sqrt((4 - np.pi) / 2)
        threshold = max(noise_mean + cfg.noise_k * noise_sigma, eps)
        energy = np.maximum(energy - threshold, 0)
        width = (sum_an / (max_an + eps) - 1) / (cfg.n_scales - 1)
        weight = 1.0 / (1 + np.exp((0.5 - width) * 10))
        pc = weight * energy / (sum_an + eps)
        px, py = pc * np.cos(a), pc * np.sin(a)
        cov_x2 += px**2
        cov_y2 += py**2
        cov_xy += px * py
    cov_x2 /= cfg.n_orients / 2
    cov_y2 /= cfg.n_orients / 2
    cov_xy *= 4 / cfg.n_orients
    denom = np.sqrt(cov_xy**2 + (cov_x2 - cov_y2) ** 2) + eps
    M = (cov_y2 + cov_x2 + denom) / 2
    m = (cov_y2 + cov_x2 - denom) / 2
    orient = np.mod(np.arctan2(cov_xy, cov_x2 - cov_y2) / 2, np.pi)
    return PhaseCongruency(M.astype(np.float32), m.astype(np.float32), orient.astype(np.float32), amp)


def _fast_points(strength: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    hi = np.percentile(strength, 99.5)
    u8 = np.clip(strength / max(hi, 1e-9) * 255, 0, 255).astype(np.uint8)
    kps = cv2.FastFeatureDetector_create(threshold=5, nonmaxSuppression=True).detect(u8)
    if not kps:
        return np.zeros((0, 2)), np.zeros(0)
    xy = np.array([k.pt for k in kps])
    resp = strength[xy[:, 1].astype(int), xy[:, 0].astype(int)]
    order = np.argsort(-resp)[:n]
    return xy[order], resp[order]


def detect_keypoints(pc: PhaseCongruency, n: int, margin: int, mask: np.ndarray | None) -> np.ndarray:
    """Edge keypoints (FAST on M) and corner keypoints (FAST on m), within ``margin`` of nothing."""
    h, w = pc.M.shape
    e_xy, _ = _fast_points(pc.M, n)
    c_xy, _ = _fast_points(pc.m, n // 2)
    xy = np.concatenate([c_xy, e_xy]) if len(c_xy) else e_xy
    if len(xy) == 0:
        return xy
    keep = (xy[:, 0] >= margin) & (xy[:, 1] >= margin) & (xy[:, 0] < w - margin) & (xy[:, 1] < h - margin)
    if mask is not None:
        keep &= mask[xy[:, 1].astype(int), xy[:, 0].astype(int)]
    xy = xy[keep]
    # drop duplicates (a point found as corner and edge)
    _, first = np.unique(np.round(xy).astype(int), axis=0, return_index=True)
    return xy[np.sort(first)][:n]


def dominant_orientation(pc: PhaseCongruency, xy: np.ndarray, radius: int) -> np.ndarray:
    """Per keypoint, the M-weighted doubled-angle mean of the principal axis in a disc (radians, [0, pi))."""
    c2 = (pc.M * np.cos(2 * pc.orient)).astype(np.float32)
    s2 = (pc.M * np.sin(2 * pc.orient)).astype(np.float32)
    k = 2 * radius + 1
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = np.exp(-(xx**2 + yy**2) / (2 * (radius / 2) ** 2)).astype(np.float32)
    disc[xx**2 + yy**2 > radius**2] = 0
    cs = cv2.filter2D(c2, -1, disc, borderType=cv2.BORDER_REFLECT)
    ss = cv2.filter2D(s2, -1, disc, borderType=cv2.BORDER_REFLECT)
    del k
    ix, iy = np.round(xy[:, 0]).astype(int), np.round(xy[:, 1]).astype(int)
    return np.mod(np.arctan2(ss[iy, ix], cs[iy, ix]) / 2, np.pi)


def mim_descriptors(pc: PhaseCongruency, xy: np.ndarray, angles: np.ndarray, cfg: RIFTConfig) -> np.ndarray:
    """Rotation-normalised MIM histograms ``(N, grid_cells**2 * n_orients)``, L2-normalised."""
    no, h, w = pc.amp.shape
    ns, nc = cfg.samples, cfg.grid_cells
    half = cfg.patch_size / 2
    u = (np.arange(ns) + 0.5) / ns * cfg.patch_size - half
    gx, gy = np.meshgrid(u, u)
    cell = (np.arange(ns) * nc // ns)
    cell_idx = (cell[:, None] * nc + cell[None, :]).ravel()  # row-major cell of each sample
    out = np.zeros((len(xy), nc * nc * no), np.float32)
    amp = pc.amp / (pc.amp.sum(axis=0, keepdims=True) + 1e-9)
    for start in range(0, len(xy), 256):
        sl = slice(start, start + 256)
        a = angles[sl][:, None]
        ca, sa = np.cos(a), np.sin(a)
        # angles run counter-clockwise on screen (y up, as the filter bank): turn the grid the same way
        px = xy[sl, 0][:, None] + ca * gx.ravel() + sa * gy.ravel()
        py = xy[sl, 1][:, None] - sa * gx.ravel() + ca * gy.ravel()
        ix = np.clip(np.round(px).astype(int), 0, w - 1)
        iy = np.clip(np.round(py).astype(int), 0, h - 1)
        v = amp[:, iy, ix]  # no, K, S
        # turning the image by angle a moves orientation o to o + a: shift amplitudes back by a (fractional bins)
        shift = (a[:, 0] / (np.pi / no))[None, :, None]
        base = np.floor(shift).astype(int)
        frac = shift - base
        o_idx = np.arange(no)[:, None, None]
        src0 = np.mod(o_idx + base, no)
        src1 = np.mod(o_idx + base + 1, no)
        k_idx = np.arange(v.shape[1])[None, :, None]
        s_idx = np.arange(v.shape[2])[None, None, :]
        rotated = (1 - frac) * v[src0, k_idx, s_idx] + frac * v[src1, k_idx, s_idx]
        mim = rotated.argmax(axis=0)  # K, S
        flat = cell_idx[None, :] * no + mim
        for k in range(flat.shape[0]):
            out[start + k] = np.bincount(flat[k], minlength=nc * nc * no)
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-9
    return out


class RIFTMatcher(Matcher):
    name = "rift"
    min_size = 96

    def __init__(self, **options) -> None:
        self.config = RIFTConfig(**options)

    def _features(self, img: np.ndarray, mask: np.ndarray | None, both_ways: bool):
        cfg = self.config
        pc = phase_congruency(img, cfg)
        margin = int(np.ceil(cfg.patch_size / 2 * np.sqrt(2))) // 2
        xy = detect_keypoints(pc, cfg.max_keypoints, margin, mask)
        if len(xy) == 0:
            return xy, np.zeros((0, cfg.grid_cells**2 * cfg.n_orients), np.float32), np.zeros(0, int)
        if cfg.rotation_invariant:
            ang = dominant_orientation(pc, xy, int(cfg.patch_size // 3))
        else:
            ang = np.zeros(len(xy))
        desc = mim_descriptors(pc, xy, ang, cfg)
        owner = np.arange(len(xy))
        if both_ways and cfg.rotation_invariant:
            desc = np.concatenate([desc, mim_descriptors(pc, xy, ang + np.pi, cfg)])
            owner = np.concatenate([owner, owner])
        return xy, desc, owner

    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        xy0, d0, _ = self._features(image0, mask0, both_ways=False)
        xy1, d1, owner1 = self._features(image1, mask1, both_ways=True)
        info = {"n_kpts0": len(xy0), "n_kpts1": len(xy1), "config": asdict(self.config)}
        if len(xy0) == 0 or len(xy1) == 0:
            return MatchResult.empty(**info)
        i0, j1, conf = mutual_nearest_neighbours(d0, d1, self.config.ratio)
        # the two descriptors of one keypoint of image 1 are each other's nearest rivals: judge the ratio against
        # other keypoints only, by keeping one match per keypoint of image 1
        i1 = owner1[j1]
        _, first = np.unique(i1, return_index=True)
        return MatchResult(xy0[i0[first]], xy1[i1[first]], conf[first], info)
