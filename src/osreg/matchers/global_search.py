"""The global rotation/scale search: a stage that wraps any matcher and needs no starting guess.

1. **Coarse FFT search.** Both images go to a coarse level (the optical image's longer side ``coarse_side`` px) and
   are described by oriented-gradient channels (CFOG-like, :func:`osreg.descriptors.oriented_gradient_channels`,
   with each pixel's channel mean removed so that a random alignment scores about 0, and each pixel weighted by its
   structure, ``structure_power``). For every rotation over the full circle (``rotation_step``) and every scale in
   ``[min_scale, max_scale]`` (``scales_per_octave``), the SAR is turned and rescaled into the optical frame, its
   channels are computed there, and their correlation with the optical channels over every translation comes from
   one batch of FFTs per scale; the second half of the circle comes from the first (a half turn only flips the
   turned SAR's canvas). The score of a translation is
   the correlation per overlapping pixel (no-data and black borders of both images are left out by the masks), over
   translations that overlap at least ``min_overlap`` of the optical image.
2. **Ranked hypotheses.** Each (rotation, scale) keeps its best translation; the best ``candidates`` distinct
   hypotheses (non-maximum suppression in rotation and scale) are kept with their scores and a peak margin (the
   best score over the best distinct other one).
3. **Verification by the matcher.** The SAR is rectified into the optical frame by each hypothesis in turn (one
   cubic warp of the input SAR; a hypothesis that is a pure translation of the identity only shifts it, without
   resampling) and the wrapped matcher runs on the rectified pair at its working resolution. A homography fitted
   to its matches is judged by the verdict's checks (inliers, residuals, coverage, and the sharpness of the dense
   oriented-gradient agreement at the fit); trusted candidates rank first, then by inliers, and the search stops at
   the first trusted candidate with ``accept_inliers`` inliers. When none has that many (the pair as given
   included), the search runs again at the finer ``escalate_side`` level, turning the SAR only near the rotations of
   the first level's hypotheses and their half turns, and its new hypotheses are verified too.
   The chosen candidate's matches are mapped back to the input SAR's pixels.
4. **Final pass.** The chosen hypothesis and its matches' fit are refined by the dense score (``fine_side``), and the
   matcher matches once more on the better of the two with its reach shortened (``final_reach``). That pass is the
   answer unless the earlier pass was trusted and it is not; an earlier pass trusted without being confirmed (fewer
   than ``accept_inliers`` inliers) yields to more inliers. When nothing is confirmed, the best ranked verified
   candidates at other places get a final pass too (``final_alternatives``); one with 1.5 times the answer's inliers
   replaces it. A final pass the verdict trusts with ``final_confirm_inliers`` inliers confirms the search.

Scene structure is often nearly symmetric under a half turn, so the right hypothesis and its 180-degree twin can
score alike at the coarse level: the verification, at full resolution, tells them apart.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable

import cv2
import numpy as np
from scipy import fft as sfft

from osreg.configs import DictConfig
from osreg.descriptors import oriented_gradient_channels
from osreg.errors import InputError
from osreg.geometry import GeometryConfig, apply_transform, estimate_transform, rectify, scale_matrix
from osreg.matchers.base import Matcher, Stage
from osreg.types import MatchResult
from osreg.verdict import judge

logger = logging.getLogger(__name__)

VERIFIERS = ("self", "cfog")
ERODE = np.ones((5, 5), np.uint8)  # channel borders next to no-data are artificial edges
ALTERNATIVE_GAIN = 1.5  # an alternative's final pass replaces an unconfirmed answer with this many times its inliers
STRUCTURE_CAP = 4.0  # a pixel's coarse weight saturates at 4x the median structure (bright edges do not dominate)


@dataclass(frozen=True)
class GlobalSearchConfig(DictConfig):
    """Settings of the global search stage.

    Attributes:
        coarse_side: the optical image's longer side (px) at the coarse FFT level.
        rotation_step: rotation step (degrees) over the full circle.
        min_scale, max_scale: range of the SAR's scale relative to the optical image (SAR px per optical px).
        scales_per_octave: scale steps per factor of 2.
        channels: oriented-gradient channels of the coarse descriptor.
        min_overlap: smallest share of the optical image a translation must overlap to be scored.
        candidates: hypotheses verified by the matcher, best first.
        accept_inliers: stop at the first trusted candidate whose fit has this many inliers.
        refine_passes: after the choice, rectify the SAR again with the fit of the chosen candidate's matches and
            match again, this many times (the coarse hypothesis is a few coarse pixels and degrees off).
        rescore_side: the best ``rescore_candidates`` coarse hypotheses are scored again at this finer level (the
            optical image's longer side, px; 0: no rescoring), each within a few pixels of its own translation, and
            re-ranked by that score before the ``candidates`` best are kept.
        rescore_candidates: how many coarse hypotheses are rescored.
        verifier: the matcher that verifies the hypotheses: ``self`` (the wrapped matcher) or ``cfog`` (CFOG
            templates: fast and modality-robust; the wrapped matcher then runs once, on the pair rectified by the
            chosen hypothesis's CFOG fit, and its matches are the answer).
        structure_power: how much a pixel of the coarse descriptor counts by its structure: each pixel's channel
            vector has length (gradient structure / the image's median) ** structure_power, capped; 0 counts every
            pixel alike (flat, speckled areas then add as much noise as edges add signal).
        escalate_side: when no hypothesis of the search is confirmed, search again at this finer coarse level (the
            optical image's longer side, px; rescoring at twice that) and verify its hypotheses too; 0: never. Costs
            time only on the pairs the first search does not register.
        escalate_full_circle: the escalated search turns the SAR over the full circle again; by default it turns it
            only within one ``rotation_step`` of the first search's hypotheses and their half turns (the coarse level
            finds the rotation far more often than the scale: on the 33 held-out pairs, under the paper's and the
            full-circle deformation, every right hypothesis of the escalated level lay there), which keeps 15-65 % of
            the rotations.
        fine_side: after the choice, the chosen hypothesis and its matches' fit are refined by the dense score
            alone at this level (the optical image's longer side, px): rotation, scale and translation move in
            shrinking steps while the score improves (:func:`refine_hypothesis`); the better scoring one is the
            rectification of the final pass; 0: no refinement and no final pass.
        final_reach: then the matcher matches once more on the pair rectified by that refinement, looking at most
            this many working pixels around each point (:meth:`Matcher.with_reach`; CFOG's search radius); 0: no
            such pass. Dense agreement over the whole overlap places the pair more precisely than the consensus of
            local templates where speckle makes many of them wrong (1 m SAR); the short reach keeps the matches
            near it and lets the correct ones refine it locally.
        final_alternatives: when the search confirms nothing, the final pass also runs on this many other verified
            candidates (best ranked first, each at another place); one whose pass has ``ALTERNATIVE_GAIN`` (1.5)
            times the answer's inliers replaces it, trusted or not; 0: only the chosen one gets a final pass. Where
            the verifier's matches are mostly wrong (1 m SAR, small images), a right candidate can rank below a wrong
            one by a few inliers at first, and gain far more than it in its final pass. The verdict still refuses
            an unconfirmed result.
        final_confirm_inliers: a final pass (of the chosen candidate or an alternative) that the verdict trusts with
            this many inliers confirms a search that confirmed nothing before; 0: never. A wrong place gathered at
            most 76 trusted inliers in a final pass on the held-out pairs (1 m osmnet), right ones 100-170 (volkov
            training split, paper deformation: 4 more accepted, all within 4.1 px).
    """

    coarse_side: int = 96
    rotation_step: float = 5.0
    min_scale: float = 0.5
    max_scale: float = 2.0
    scales_per_octave: int = 8
    channels: int = 6
    min_overlap: float = 0.4
    candidates: int = 10
    accept_inliers: int = 40
    refine_passes: int = 1
    rescore_side: int = 256
    rescore_candidates: int = 30
    verifier: str = "self"
    structure_power: float = 0.5
    escalate_side: int = 192
    fine_side: int = 256
    final_reach: int = 4
    escalate_full_circle: bool = False
    final_alternatives: int = 3
    final_confirm_inliers: int = 100

    def __post_init__(self) -> None:
        if self.coarse_side < 32:
            raise InputError(f"global coarse_side must be at least 32 px, got {self.coarse_side}")
        if not 0 < self.rotation_step <= 180:
            raise InputError(f"global rotation_step must be in (0, 180] degrees, got {self.rotation_step}")
        if not 0 < self.min_scale <= self.max_scale:
            raise InputError(f"global scales need 0 < min_scale <= max_scale, got {self.min_scale} and "
                             f"{self.max_scale}")
        if self.scales_per_octave < 1 or self.channels < 3 or self.candidates < 1 or self.refine_passes < 0:
            raise InputError("global scales_per_octave and candidates must be >= 1, channels >= 3 and refine_passes "
                             f">= 0, got {self.scales_per_octave}, {self.candidates}, {self.channels} and "
                             f"{self.refine_passes}")
        if self.verifier not in VERIFIERS:
            raise InputError(f"global verifier must be one of {', '.join(VERIFIERS)}, got {self.verifier!r}")
        if not 0 <= self.structure_power <= 2:
            raise InputError(f"global structure_power must be in [0, 2], got {self.structure_power}")
        if self.escalate_side < 0:
            raise InputError(f"global escalate_side must be >= 0 px (0: off), got {self.escalate_side}")
        if not 0 < self.min_overlap <= 1:
            raise InputError(f"global min_overlap must be in (0, 1], got {self.min_overlap}")
        if self.fine_side < 0 or self.final_reach < 0 or (self.fine_side and self.fine_side < 32):
            raise InputError(f"global fine_side must be 0 (off) or at least 32 px and final_reach >= 0 px, got "
                             f"{self.fine_side} and {self.final_reach}")
        if self.final_alternatives < 0:
            raise InputError(f"global final_alternatives must be >= 0, got {self.final_alternatives}")
        if self.final_confirm_inliers < 0:
            raise InputError(f"global final_confirm_inliers must be >= 0 (0: never), got {self.final_confirm_inliers}")

    def escalated(self) -> GlobalSearchConfig:
        """The settings of the escalated search (``escalate_side``; rescoring at twice that)."""
        return replace(self, coarse_side=self.escalate_side, escalate_side=0, rescore_side=max(self.rescore_side,
                                                                              2 * self.escalate_side))

    def rotations(self) -> np.ndarray:
        n = max(1, int(round(360.0 / self.rotation_step)))
        return np.arange(n) * 360.0 / n

    def scales(self) -> np.ndarray:
        lo, hi = math.log2(self.min_scale), math.log2(self.max_scale)
        n = max(1, int(round((hi - lo) * self.scales_per_octave)) + 1)
        return 2.0 ** np.linspace(lo, hi, n)


@dataclass(frozen=True)
class Hypothesis:
    """A similarity of the SAR relative to the optical image.

    Attributes:
        H: optical px -> SAR px (3x3), at the resolution of the images searched.
        rotation: degrees (of the optical frame turned into the SAR's; counter-clockwise in a y-up sense).
        scale: SAR px per optical px.
        score: mean channel correlation per overlapping pixel at the best translation.
    """

    H: np.ndarray
    rotation: float
    scale: float
    score: float


CHUNK_BYTES = 8e6  # batches of padded channel stacks near this size stay in cache (see _rotation_peaks)


def _channels(img: np.ndarray, mask: np.ndarray, n: int, power: float) -> np.ndarray:
    """Coarse descriptor: oriented-gradient channels less their mean over the channels (an isotropic pixel scores 0),
    each pixel a vector of length (its structure relative to the image's median, at most STRUCTURE_CAP) ** power."""
    c = oriented_gradient_channels(img, n, 1.0, normalize=False)
    c -= c.mean(axis=0, keepdims=True)
    norm = np.sqrt(np.einsum("khw,khw->hw", c, c))
    weight = 1.0
    if power > 0 and mask.any():
        weight = np.minimum(norm / (float(np.median(norm[mask])) + 1e-9), STRUCTURE_CAP) ** power
    c *= (weight / (norm + 1e-6))[None]
    c *= mask[None]
    return c


def _channel_products(spec: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``sum_c spec[c] * G[:, c]`` for spectra ``spec`` ``(C, h, w)`` and ``G`` ``(N, C, h, w)``: the same as
    ``np.einsum("chw,nchw->nhw", ...)``, twice as fast on complex arrays (einsum has no fast path for them)."""
    out = np.multiply(G[:, 0], spec[0])
    tmp = np.empty_like(out)
    for c in range(1, len(spec)):
        out += np.multiply(G[:, c], spec[c], out=tmp)
    return out


def _resize(img: np.ndarray, mask: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray, float]:
    w, h = max(8, round(img.shape[1] * s)), max(8, round(img.shape[0] * s))
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return out, m, w / img.shape[1]


def _turn(k: float, degrees: float) -> np.ndarray:
    """The 2x2 linear part that turns the SAR back by ``degrees`` and scales it by ``k`` (SAR -> optical)."""
    t = math.radians(degrees)
    return k * np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])


def _least_overlap(need: float, optical_shape: tuple[int, int], cs: int) -> tuple[int, int]:
    """The fewest rows and columns a shift of the ``cs`` px canvas over the optical image (``optical_shape``) must
    overlap to reach ``need`` px of overlap at all (a shift overlapping ``oy`` rows overlaps at most ``oy * w0`` px)."""
    h0, w0 = optical_shape
    my = min(max(1, math.ceil(need / w0)), h0, cs)
    mx = min(max(1, math.ceil(need / h0)), w0, cs)
    return my, mx


def fft_size(optical_shape: tuple[int, int], cs: int, need: float) -> tuple[int, int]:
    """The padded FFT size for correlating a ``cs`` px square canvas with the optical image: large enough that no
    shift that can overlap ``need`` px is aliased with another shift that overlaps at all (a shift ``t`` lands on
    index ``t mod N``; the linear shifts overlapping at least ``m`` rows span ``cs + h0 - 2 m + 1``, and their aliases
    miss the support of ``cs + h0 - 1`` shifts when ``N >= cs + h0 - m``), which saves the ``m`` rows and columns of
    shifts that could never be scored."""
    my, mx = _least_overlap(need, optical_shape, cs)
    h0, w0 = optical_shape
    return sfft.next_fast_len(cs + h0 - my, real=True), sfft.next_fast_len(cs + w0 - mx, real=True)


def _scored_shifts(n: int, size: int, cs: int, m: int, turned: bool) -> np.ndarray:
    """Per index of one axis of the circular correlation (``n`` long), whether it holds a linear shift ``t`` with at
    least ``m`` rows (columns) of overlap, ``t`` in ``[m - size, cs - m]`` for an optical side ``size``. A turned
    canvas's index ``i`` is a convolution: its shift is ``cs - 1 - i``."""
    i = np.arange(n)
    t = (cs - 1 - i) % n if turned else i
    t = np.where(t > cs - m, t - n, t)
    return (t >= m - size) & (t <= cs - m)


def _rotation_peaks(P0: np.ndarray, i1: np.ndarray, m1: np.ndarray, k: float, r: int, shape: tuple[int, int],
                    rotations: np.ndarray, config: GlobalSearchConfig, need: float, workers: int,
                    optical_shape: tuple[int, int], half_turn: bool = True) -> list[tuple[float, int, int]]:
    """Best score and shift (row, column of the circular correlation) of every rotation at one scale.

    Args:
        P0: spectrum (rfft2) of the optical channels and mask, zero-padded to ``shape``.
        i1, m1: the SAR and its mask at the level's pixel size for this scale.
        k: SAR level px -> optical level px.
        r: the canvas the SAR is turned into is ``2 r + 1`` px square, centred on the SAR's centre.
        shape: the padded FFT size (at least :func:`fft_size`; indices of shifts that cannot overlap ``need`` px are
            not scored, so that their aliases never count).
        rotations: degrees, evenly spaced over the full circle, or a subset of them whose second half is its
            first half turned by 180 degrees (with ``half_turn``).
        need: the least overlap (px) a shift must have to be scored.
        optical_shape: the optical image's size at the level (rows, columns).
        half_turn: derive the second half of an even number of rotations from the first (see below; equal to
            turning the SAR up to the warp's rounding).
    """
    Hh, Ww = shape
    h1, w1 = i1.shape
    c1 = np.array([(w1 - 1) / 2, (h1 - 1) / 2])
    cs = 2 * r + 1
    F0 = np.conj(P0)
    my, mx = _least_overlap(need, optical_shape, cs)
    # per half (direct, turned): the indices no shift with enough overlap lands on
    unscored = [~(_scored_shifts(Hh, optical_shape[0], cs, my, turned)[:, None]
                  & _scored_shifts(Ww, optical_shape[1], cs, mx, turned)[None, :]) for turned in (False, True)]
    # a half turn of the SAR only flips its canvas (the channels are absolute gradients, orientation modulo 180
    # degrees): y[n] = x[cs - 1 - n] in every axis, whose correlation with the optical channels at shift t is
    # their convolution with x at cs - 1 - t; the second half of the circle costs no warps, channels or forward
    # FFTs
    n_rot = len(rotations)
    direct = n_rot // 2 if half_turn and n_rot % 2 == 0 else n_rot
    # rotations in chunks, so that a batch of padded channel stacks stays near CHUNK_BYTES whatever the sizes
    chunk = max(1, int(CHUNK_BYTES // ((config.channels + 1) * Hh * Ww * 4)))
    peaks: list[tuple[float, int, int]] = [(-np.inf, 0, 0)] * n_rot  # per rotation: best score, shift (row, col)
    for start in range(0, direct, chunk):
        idx = np.arange(start, min(direct, start + chunk))
        W = np.zeros((len(idx), config.channels + 1, Hh, Ww), np.float32)
        for j, th in enumerate(rotations[idx]):
            B = _turn(k, th)
            M = np.hstack([B, (r - B @ c1)[:, None]])
            wi = cv2.warpAffine(i1, M, (cs, cs), flags=cv2.INTER_LINEAR)
            wm = cv2.erode(cv2.warpAffine(m1.astype(np.uint8), M, (cs, cs), flags=cv2.INTER_NEAREST), ERODE) > 0
            W[j, :-1, :cs, :cs] = _channels(wi, wm, config.channels, config.structure_power)
            W[j, -1, :cs, :cs] = wm
        G = sfft.rfft2(W, axes=(-2, -1), workers=workers)
        del W
        for ids, spec, turned in ((idx, F0, False), (idx + direct, P0, True))[:1 if direct == n_rot else 2]:
            num = sfft.irfft2(_channel_products(spec[:-1], G[:, :-1]), s=(Hh, Ww), axes=(-2, -1),
                              workers=workers)
            area = sfft.irfft2(spec[-1][None] * G[:, -1], s=(Hh, Ww), axes=(-2, -1), workers=workers)
            bad = area < math.floor(need) + 0.5  # areas are pixel counts up to the FFT's round-off: <= need
            bad |= unscored[turned]
            num /= np.maximum(area, 1.0, out=area)
            np.copyto(num, -np.inf, where=bad)
            for j, at in enumerate(num.reshape(len(ids), -1).argmax(axis=1)):
                ty, tx = divmod(int(at), Ww)
                best = float(num[j, ty, tx])
                if turned:
                    ty, tx = (cs - 1 - ty) % Hh, (cs - 1 - tx) % Ww
                peaks[ids[j]] = (best, ty, tx)
        del G, num, area
    return peaks


def _rotations_near(config: GlobalSearchConfig, near: list[float] | None) -> tuple[np.ndarray, bool]:
    """The rotations to search (those of the full grid within one step of ``near`` or of their half turns, the
    first half below 180 degrees and the second the first turned by 180; the full grid without ``near``) and whether
    the second half may be derived from the first (:func:`_rotation_peaks`: an even grid)."""
    grid = config.rotations()
    half_turn = len(grid) % 2 == 0
    if not near:
        return grid, half_turn
    step = 360.0 / len(grid)
    d = np.abs(grid[:, None] - np.asarray(near, float)[None, :]) % 180.0
    keep = (np.minimum(d, 180.0 - d) <= 1.01 * step).any(axis=1)
    if not half_turn:
        return grid[keep], False
    first = grid[(grid < 180.0) & keep]  # an even grid holds every rotation's half turn, and keep holds both
    return np.concatenate([first, first + 180.0]), True


def search_hypotheses(image0: np.ndarray, mask0: np.ndarray, image1: np.ndarray, mask1: np.ndarray,
                      config: GlobalSearchConfig = GlobalSearchConfig(), workers: int | None = None,
                      near: list[float] | None = None) -> list[Hypothesis]:
    """The coarse FFT search (steps 1 and 2 of the module doc).

    Args:
        image0, mask0: optical image and validity mask.
        image1, mask1: SAR image and validity mask.
        config: the search settings.
        workers: FFT threads (default: OpenCV's thread count, which the entry points set).
        near: rotations (degrees); only the rotations of the grid within one ``rotation_step`` of them or of their
            half turns are searched (None or empty: the full circle).

    Returns:
        up to ``config.candidates`` distinct hypotheses, best first (empty when nothing overlaps enough).
    """
    workers = workers or max(1, cv2.getNumThreads())
    s0 = config.coarse_side / max(image0.shape)
    i0, m0, s0x = _resize(image0.astype(np.float32, copy=False), mask0, min(1.0, s0))
    m0 = cv2.erode(m0.astype(np.uint8), ERODE) > 0
    A0 = _channels(i0, m0, config.channels, config.structure_power)
    h0, w0 = i0.shape
    M0 = m0.astype(np.float32)
    need = config.min_overlap * float(M0.sum())
    if need <= 0:
        return []
    rotations, half_turn = _rotations_near(config, near)
    found: list[tuple[float, float, float, np.ndarray]] = []
    resized: dict[float, tuple[np.ndarray, np.ndarray, float]] = {}
    for sc in config.scales():
        # the SAR at the coarse level's pixel size, already reduced by the scale when it is larger than 1 (so that
        # the warp below never shrinks it by more than a rotation needs); every scale <= 1 shares one resize
        f = min(1.0, s0x * min(1.0, 1.0 / sc))
        if f not in resized:
            resized[f] = _resize(image1.astype(np.float32, copy=False), mask1, f)
        i1, m1, s1x = resized[f]
        k = s0x / (s1x * sc)  # SAR level px -> optical level px
        h1, w1 = i1.shape
        c1 = np.array([(w1 - 1) / 2, (h1 - 1) / 2])
        r = int(np.ceil(k * math.hypot(w1, h1) / 2)) + 2
        cs = 2 * r + 1
        Hh, Ww = fft_size((h0, w0), cs, need)
        pad0 = np.zeros((config.channels + 1, Hh, Ww), np.float32)
        pad0[:-1, :h0, :w0] = A0
        pad0[-1, :h0, :w0] = M0
        P0 = sfft.rfft2(pad0, axes=(-2, -1), workers=workers)
        peaks = _rotation_peaks(P0, i1, m1, k, r, (Hh, Ww), rotations, config, need, workers, (h0, w0), half_turn)
        for th, (best, ty, tx) in zip(rotations, peaks):
            if not np.isfinite(best):
                continue
            # correlation at shift t: optical level px x meets canvas px x + t (negative shifts wrap around)
            ty = ty - Hh if ty > Hh - h0 else ty
            tx = tx - Ww if tx > Ww - w0 else tx
            Bi = np.linalg.inv(_turn(k, th))
            H = np.eye(3)  # optical level px -> SAR level px: canvas q = B (p1 - c1) + r, q = x + t
            H[:2, :2] = Bi
            H[:2, 2] = Bi @ (np.array([tx, ty], float) - r) + c1
            H = np.linalg.inv(scale_matrix(s1x)) @ H @ scale_matrix(s0x)
            found.append((best, float(th), float(sc), H))
    found.sort(key=lambda f: -f[0])
    step = 360.0 / len(config.rotations())
    kept: list[Hypothesis] = []
    n_keep = max(config.candidates, config.rescore_candidates if config.rescore_side else 0)
    for score, th, sc, H in found:
        if all(min((th - h.rotation) % 360, (h.rotation - th) % 360) > 1.5 * step
               or abs(math.log2(sc / h.scale)) > 1.5 / config.scales_per_octave for h in kept):
            kept.append(Hypothesis(H, th, sc, score))
        if len(kept) >= n_keep:
            break
    if config.rescore_side and config.rescore_side > config.coarse_side and kept:
        kept = _rescore(image0, mask0, image1, mask1, kept, config, workers)
    return kept[:config.candidates]


@dataclass(frozen=True)
class _Level:
    """The optical side of rescoring at one level (``config.rescore_side``) over translations within ``radius`` px:
    what every hypothesis scored there shares."""

    F0: np.ndarray  # conjugate spectrum of the padded optical channels and mask
    s0x: float  # optical px -> level px
    shape: tuple[int, int]  # padded FFT size
    size: tuple[int, int]  # (width, height) of the level image plus the radius on each side
    radius: int
    need: float  # least overlap (level px) a translation must have to be scored


def _level(image0: np.ndarray, mask0: np.ndarray, config: GlobalSearchConfig, workers: int, radius: int) -> _Level:
    s = min(1.0, config.rescore_side / max(image0.shape))
    i0, m0, s0x = _resize(image0.astype(np.float32, copy=False), mask0, s)
    m0 = cv2.erode(m0.astype(np.uint8), ERODE) > 0
    A0 = _channels(i0, m0, config.channels, config.structure_power)
    h0, w0 = i0.shape
    Hh, Ww = sfft.next_fast_len(h0 + 2 * radius, real=True), sfft.next_fast_len(w0 + 2 * radius, real=True)
    pad0 = np.zeros((config.channels + 1, Hh, Ww), np.float32)
    pad0[:-1, radius:radius + h0, radius:radius + w0] = A0
    pad0[-1, radius:radius + h0, radius:radius + w0] = m0
    F0 = np.conj(sfft.rfft2(pad0, axes=(-2, -1), workers=workers))
    return _Level(F0, s0x, (Hh, Ww), (w0 + 2 * radius, h0 + 2 * radius), radius,
                  config.min_overlap * float(m0.sum()))


def _rescore(image0: np.ndarray, mask0: np.ndarray, image1: np.ndarray, mask1: np.ndarray, hyps: list[Hypothesis],
             config: GlobalSearchConfig, workers: int, radius: int = 6) -> list[Hypothesis]:
    """Score hypotheses again at ``config.rescore_side``: the SAR warped into the optical frame at that level by each
    hypothesis, correlated over translations within ``radius`` px; returns them re-ranked by that score, with their
    translations corrected."""
    return _score(_level(image0, mask0, config, workers, radius), image1, mask1, hyps, config, workers, {})


def _score(level: _Level, image1: np.ndarray, mask1: np.ndarray, hyps: list[Hypothesis], config: GlobalSearchConfig,
           workers: int, pre: dict[float, tuple[np.ndarray, np.ndarray, float]]) -> list[Hypothesis]:
    """:func:`_rescore` at a prepared ``level``; ``pre`` keeps the SAR resized per hypothesis scale across calls."""
    F0, radius = level.F0, level.radius
    L0 = scale_matrix(level.s0x)  # optical px -> level px
    L0i = np.linalg.inv(L0)
    Hh, Ww = level.shape
    size = level.size
    shift = np.array([[1, 0, -radius], [0, 1, -radius], [0, 0, 1.0]])
    chunk = max(1, int(CHUNK_BYTES // ((config.channels + 1) * Hh * Ww * 4)))
    scores = []
    for start in range(0, len(hyps), chunk):
        part = hyps[start:start + chunk]
        stack = np.zeros((len(part), config.channels + 1, Hh, Ww), np.float32)
        for n, hyp in enumerate(part):
            # the SAR at about the level's pixel size for this scale first (area averaging), then one warp
            if hyp.scale not in pre:
                pre[hyp.scale] = _resize(image1.astype(np.float32, copy=False), mask1, min(1.0, level.s0x * hyp.scale))
            i1, m1, s1x = pre[hyp.scale]
            M = scale_matrix(s1x) @ hyp.H @ L0i  # optical level px -> SAR level px
            wi = cv2.warpPerspective(i1, M @ shift, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            wm = cv2.warpPerspective(m1.astype(np.uint8), M @ shift, size,
                                     flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
            wm = cv2.erode(wm, ERODE) > 0
            stack[n, :-1, :size[1], :size[0]] = _channels(wi, wm, config.channels, config.structure_power)
            stack[n, -1, :size[1], :size[0]] = wm
        G = sfft.rfft2(stack, axes=(-2, -1), workers=workers)
        del stack
        num = sfft.irfft2(_channel_products(F0[:-1], G[:, :-1]), s=(Hh, Ww), axes=(-2, -1), workers=workers)
        area = sfft.irfft2(F0[-1][None] * G[:, -1], s=(Hh, Ww), axes=(-2, -1), workers=workers)
        scores.append(np.where(area > math.floor(level.need) + 0.5, num / np.maximum(area, 1.0), -np.inf))
        del G, num, area
    score = np.concatenate(scores)
    # shifts t in [-radius, radius]: optical (padded) px x meets warped px x + t
    window = np.concatenate([np.arange(0, radius + 1), np.arange(-radius, 0)])
    out = []
    for n, hyp in enumerate(hyps):
        sub = score[n][np.ix_(window % Hh, window % Ww)]
        iy, ix = np.unravel_index(int(np.argmax(sub)), sub.shape)
        best = float(sub[iy, ix])
        if not np.isfinite(best):
            continue
        t = np.array([[1, 0, window[ix]], [0, 1, window[iy]], [0, 0, 1.0]])  # optical level px -> warped px
        H = hyp.H @ L0i @ t @ L0
        out.append(Hypothesis(H, hyp.rotation, hyp.scale, best))
    out.sort(key=lambda h: -h.score)
    return out


FINE_STEPS = ((2.0, 0.03), (1.0, 0.015), (0.5, 0.0075), (0.25, 0.004))  # degrees and relative scale per round


def refine_hypothesis(image0: np.ndarray, mask0: np.ndarray, image1: np.ndarray, mask1: np.ndarray,
                      starts: list[np.ndarray], config: GlobalSearchConfig, workers: int | None = None,
                      radius: int = 8) -> tuple[np.ndarray, float] | None:
    """Refine each transform of ``starts`` (optical px -> SAR px) by the dense score of :func:`search_hypotheses`,
    scored at ``config.fine_side``, and return the best scoring: first its translation within ``radius`` level px,
    then in rounds of shrinking steps (:data:`FINE_STEPS`: 2 degrees and 3 % down to 0.25 degrees and 0.4 %) the 9
    combinations of a turn and a rescaling about the optical image's centre (each with its best translation within 3
    level px), keeping the best when it scores higher. The optical side of the score is prepared once for all starts
    (once per translation reach).

    Returns:
        (the refined transform, its score), or None when none can be scored (too little overlap).
    """
    workers = workers or max(1, cv2.getNumThreads())
    cfg = replace(config, rescore_side=config.fine_side)
    wide, near = _level(image0, mask0, cfg, workers, radius), _level(image0, mask0, cfg, workers, 3)
    h, w = image0.shape
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    pre: dict[float, tuple[np.ndarray, np.ndarray, float]] = {}
    refined = []
    for H in starts:
        scale = float(np.sqrt(abs(np.linalg.det(H[:2, :2]))))
        found = _score(wide, image1, mask1, [Hypothesis(H, 0.0, scale, 0.0)], cfg, workers, pre)
        if not found:
            continue
        best = found[0]
        for step, rel in FINE_STEPS:
            moves = []
            for turn in (-step, 0.0, step):
                for k in (1 - rel, 1.0, 1 + rel):
                    P = np.eye(3)
                    P[:2, :2] = _turn(k, turn)
                    P[:2, 2] = c - P[:2, :2] @ c
                    moves.append(Hypothesis(best.H @ P, 0.0, scale * k, 0.0))
            scored = _score(near, image1, mask1, moves, cfg, workers, pre)
            if scored and scored[0].score > best.score:
                best = scored[0]
        refined.append((best.H, best.score))
    return max(refined, key=lambda f: f[1]) if refined else None


def _summary(hyps: list[Hypothesis]) -> list[dict]:
    return [{"rotation": round(h.rotation, 2), "scale": round(h.scale, 4), "score": round(h.score, 4)} for h in hyps]


def _corners(shape: tuple[int, int]) -> np.ndarray:
    """The four corner pixels ``(x, y)`` of an image of ``shape`` (rows, columns)."""
    h, w = shape
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)


def _same_place(Ha: np.ndarray, Hb: np.ndarray, shape: tuple[int, int], tol: float = 0.02) -> bool:
    """True when two hypotheses put every corner of an image of ``shape`` within ``tol`` x its longer side of each
    other (their verification would be the same: the verifier searches a few percent of the side around each)."""
    corners = _corners(shape)
    return bool(np.abs(apply_transform(Ha, corners) - apply_transform(Hb, corners)).max() <= tol * max(shape))


def _is_shift(H: np.ndarray, shape: tuple[int, int], tol: float = 0.5) -> bool:
    """True when H moves every pixel of an image of ``shape`` by the same integer shift to within ``tol`` px."""
    corners = _corners(shape)
    d = apply_transform(H, corners) - corners
    return bool(np.abs(d - np.round(d.mean(0))).max() <= tol)


class GlobalSearchStage(Stage):
    """A matcher wrapped in the global search (see the module doc). It answers to the matcher contract itself, at
    the wrapped matcher's working resolution.

    Args:
        inner: the matcher that verifies the hypotheses and gives the final matches.
        config: the search settings.
    """

    def __init__(self, inner: Matcher, config: GlobalSearchConfig | None = None) -> None:
        super().__init__(inner, config if config is not None else GlobalSearchConfig())
        if self.config.verifier == "cfog":
            from osreg.matchers.cfog import CFOGMatcher

            self._verifier: Matcher = CFOGMatcher()
        else:
            self._verifier = inner

    def _verify(self, image0, mask0, image1, mask1, W: np.ndarray | None, run: Callable) -> tuple | None:
        """Match with ``run`` (a matcher bound to the optical image, :meth:`Matcher.bind_reference`) the SAR rectified
        by W (optical px -> SAR px; None: the pair as given, not warped at all; a pure integer shift moves the SAR
        without resampling it).

        Returns:
            (rank key, matches with keypoints1 in rectified px, their homography, the transform used: rectified px
            -> SAR px), or None when nothing can be fitted.
        """
        if W is None:
            W, r, rm = np.eye(3), image1, mask1
        elif _is_shift(W, image0.shape):
            W = np.round(W)
            r = cv2.warpAffine(image1, W[:2], image0.shape[::-1], flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
            rm = cv2.warpAffine(mask1.astype(np.uint8), W[:2], image0.shape[::-1],
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
        else:
            r, rm = rectify(image1, mask1, W, image0.shape)
        if rm.sum() < 0.05 * rm.size:
            return None
        res = run(r.astype(np.float32, copy=False), rm)
        est = estimate_transform(res.keypoints0, res.keypoints1, GeometryConfig(model="homography"))
        if est.H is None:
            return None
        verdict = judge(est, res.keypoints0, mask0, images=(image0, r, rm))
        return (verdict.good, est.n_inliers), res, est.H, W

    def _choose(self, image0, mask0, image1, mask1, info: dict, verifier: Matcher
                ) -> tuple[tuple | None, int | str | None]:
        """The verified candidate the search chooses (None when none can be fitted) and its rank ("as given": the
        pair as given); ``verifier``: the matcher that verifies (the wrapped one or CFOG)."""
        run = verifier.bind_reference(image0, mask0)
        # the pair as given first: images of one place are often nearly aligned already, and then the matcher's
        # own result is kept as it is (no resampling, no search)
        best = self._verify(image0, mask0, image1, mask1, None, run)
        tried = [best] if best is not None else []  # every verified candidate, for the final pass's alternatives
        chosen: int | str | None = "as given" if best is not None else None
        if self._strong(best):
            info.update(chosen="as given", hypotheses_verified=0, confirmed=True)
            return best, chosen
        hyps = search_hypotheses(image0, mask0, image1, mask1, self.config)
        info["candidates"] = _summary(hyps)
        if len(hyps) > 1:
            info["peak_margin"] = round(hyps[0].score / max(hyps[1].score, 1e-6), 4)
        info["hypotheses_verified"] = 0
        best, chosen = self._verify_ranked(image0, mask0, image1, mask1, hyps, 0, best, chosen, info, run, tried)
        if self.config.escalate_side > self.config.coarse_side and not self._strong(best):
            # nothing confirmed with accept_inliers inliers, not even the pair as given (which the verdict may trust
            # with fewer): the right hypothesis may not be among the coarse level's best; search at a finer level
            # and verify what the first pass did not already verify
            more = search_hypotheses(image0, mask0, image1, mask1, self.config.escalated(),
                                     near=None if self.config.escalate_full_circle else [h.rotation for h in hyps])
            more = [h for h in more if not any(_same_place(h.H, g.H, image0.shape) for g in hyps)]
            info["escalated_candidates"] = _summary(more)
            best, chosen = self._verify_ranked(image0, mask0, image1, mask1, more, len(hyps), best, chosen, info,
                                               run, tried)
        info["chosen"] = chosen
        if best is None:
            return None, None
        key, res, F, W = best
        # a searched hypothesis is confirmed only by a trusted fit with accept_inliers inliers (the verdict refuses
        # the others: trying many hypotheses makes a weak wrong one likelier to pass); the pair as given needs trust
        info["confirmed"] = self._trusted(best, chosen)
        hypothesis = W
        if chosen != "as given":
            for _ in range(self.config.refine_passes):  # rectify again with the chosen candidate's own fit
                out = self._verify(image0, mask0, image1, mask1, W @ F, run)
                if out is None or out[0][0] < key[0]:  # keep the earlier pass unless this one is trusted as well
                    break
                key, res, F, W = out
                info["refine_passes"] = info.get("refine_passes", 0) + 1
        short = verifier.with_reach(self.config.final_reach) if self.config.final_reach else verifier
        # the final pass (a strong pair as given never gets here: an aligned pair keeps the matcher's own result,
        # unresampled)
        if self.config.fine_side and short is not verifier:
            return self._finish(image0, mask0, image1, mask1, (key, res, F, W), hypothesis, tried, info, short), chosen
        return (key, res, F, W), chosen

    def _finish(self, image0, mask0, image1, mask1, best: tuple, hypothesis: np.ndarray, tried: list[tuple],
                info: dict, short: Matcher) -> tuple:
        """The final passes (module doc, step 4) after the choice ``best`` (what :meth:`_verify` returns), whose
        hypothesis was ``hypothesis``; ``tried``: every verified candidate; ``short``: the verifier with
        ``final_reach``. Returns the answer, like ``best``."""
        key, res, F, W = best
        run = short.bind_reference(image0, mask0)  # the optical side once for every final pass
        starts = [hypothesis, W @ F]
        out = self._final_pass(image0, mask0, image1, mask1, starts, run)
        # kept unless the earlier pass was trusted and this one is not; an unconfirmed earlier pass (trusted with
        # fewer than accept_inliers inliers: the verdict refuses it anyway) yields to more inliers
        info["final_pass"] = out is not None and (out[0][0] >= key[0] or (not info["confirmed"] and out[0][1] > key[1]))
        if info["final_pass"]:
            key, res, F, W = out
        if info["confirmed"]:
            return key, res, F, W
        # the best ranked other candidates, each at a place no final pass started from, get one too; one replaces the
        # answer with ALTERNATIVE_GAIN times its inliers, trusted or not (the verdict refuses an unconfirmed result
        # anyway; a wrong place can pass its checks where a right one fails them)
        alternatives = self._alternatives(tried, starts, image0.shape)
        info["final_alternatives"] = len(alternatives)
        for n, (_, _, Fa, Wa) in enumerate(alternatives, start=1):
            out = self._final_pass(image0, mask0, image1, mask1, [Wa, Wa @ Fa], run)
            if out is not None and out[0][1] >= ALTERNATIVE_GAIN * max(key[1], 1):
                key, res, F, W = out
                info["final_alternative"] = n
        if self.config.final_confirm_inliers and key[0] and key[1] >= self.config.final_confirm_inliers:
            # far more inliers than a first verification needs (accept_inliers), with the verdict's trust
            info.update(confirmed=True, confirmed_by="final pass")
        return key, res, F, W

    def _alternatives(self, tried: list[tuple], starts: list[np.ndarray], shape: tuple[int, int]) -> list[tuple]:
        """Up to ``final_alternatives`` verified candidates of ``tried`` (what :meth:`_verify` returns), best ranked
        first, whose rectification and fit are at places (:func:`_same_place`) that none of ``starts`` nor a better
        ranked one's is at."""
        out: list[tuple] = []
        places = list(starts)
        for cand in sorted(tried, key=lambda c: c[0], reverse=True):
            if len(out) >= self.config.final_alternatives:
                break
            own = [cand[3], cand[3] @ cand[2]]
            if not any(_same_place(a, p, shape) for a in own for p in places):
                out.append(cand)
                places += own
        return out

    def _final_pass(self, image0, mask0, image1, mask1, starts: list[np.ndarray], run: Callable) -> tuple | None:
        """The best scoring of the rectifications ``starts`` (a candidate's hypothesis and its matches' fit: where local
        matches are mostly wrong, the fit can drift further from the truth than the hypothesis was), each refined by
        the dense score (:func:`refine_hypothesis`), matched by ``run`` (the verifier with ``final_reach``, bound to
        the optical image). Returns what :meth:`_verify` returns, or None."""
        fine = refine_hypothesis(image0, mask0, image1, mask1, starts, self.config)
        if fine is None:
            return None
        return self._verify(image0, mask0, image1, mask1, fine[0], run)

    def _strong(self, best: tuple | None) -> bool:
        """Whether a verified candidate is trusted by the verdict with ``accept_inliers`` inliers."""
        return best is not None and bool(best[0][0]) and best[0][1] >= self.config.accept_inliers

    def _trusted(self, best: tuple | None, chosen: int | str | None) -> bool:
        """Whether a verified candidate is confirmed: strong (:meth:`_strong`); the pair as given needs trust only."""
        return best is not None and bool(best[0][0]) and (chosen == "as given" or self._strong(best))

    def _verify_ranked(self, image0, mask0, image1, mask1, hyps: list[Hypothesis], first: int, best: tuple | None,
                       chosen: int | str | None, info: dict, run: Callable, tried: list[tuple]
                       ) -> tuple[tuple | None, int | str | None]:
        """Verify ``hyps`` best first (their ranks counted from ``first``), stopping at the first one trusted with
        ``accept_inliers`` inliers; returns the best of them and ``best`` with its rank, and adds every verified
        candidate to ``tried``."""
        for rank, hyp in enumerate(hyps, start=first):
            info["hypotheses_verified"] = rank + 1
            out = self._verify(image0, mask0, image1, mask1, hyp.H, run)
            if out is None:
                continue
            tried.append(out)
            if best is None or out[0] > best[0]:
                best, chosen = out, rank
            if self._strong(out):
                break
        return best, chosen

    def _with_verifier(self, image0, mask0, image1, mask1, info: dict) -> tuple | None:
        """The search with another verifier: the wrapped matcher's own pass on the pair as given first (kept when it
        is trusted with ``accept_inliers`` inliers, as without a verifier); otherwise the verifier chooses, and the
        wrapped matcher's pass on the chosen rectification (refined by the verifier's fit) is the answer, unless its
        pass on the pair as given ranks higher. The pair as given counts as a choice once the verifier trusts it: a
        matcher with a shorter reach than the verifier's (CSTF's 16 px against CFOG's 24) then matches the pair
        brought within its reach. A result is confirmed only if the verifier confirmed the choice and the verdict
        trusts the wrapped matcher's pass."""
        inner = self.inner.bind_reference(image0, mask0)
        own = self._verify(image0, mask0, image1, mask1, None, inner)
        if self._strong(own):
            info.update(chosen="as given", hypotheses_verified=0, confirmed=True)
            return own
        best, chosen = self._choose(image0, mask0, image1, mask1, info, self._verifier)
        if best is not None and (chosen != "as given" or best[0][0]):
            key, res, F, W = best
            best = self._verify(image0, mask0, image1, mask1, W @ F, inner)
            info["confirmed"] = bool(info.get("confirmed") and best is not None and best[0][0])
        else:
            best = None
        if own is not None and (best is None or own[0] > best[0]):
            info.update(chosen="as given", confirmed=bool(own[0][0]))
            return own
        return best

    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        mask0 = np.ones(image0.shape, bool) if mask0 is None else mask0
        mask1 = np.ones(image1.shape, bool) if mask1 is None else mask1
        info: dict = {"kind": "global", "accept_inliers": self.config.accept_inliers,
                      "verifier": self.config.verifier}
        if self._verifier is self.inner:
            best, chosen = self._choose(image0, mask0, image1, mask1, info, self.inner)
        else:
            best = self._with_verifier(image0, mask0, image1, mask1, info)
        if best is None:
            return MatchResult.empty(search=info)
        key, res, F, W = best
        k1 = apply_transform(W, res.keypoints1) if len(res) else res.keypoints1
        return MatchResult(res.keypoints0, k1, res.confidence, {**res.info, "search": info})
