"""The coarse FFT search over rotation x scale and its dense refinement (steps 1 and 2 of
:mod:`osreg.matchers.global_search`, and the refinement of step 4): ranked similarity hypotheses of the SAR relative
to the optical image, scored by the correlation of oriented-gradient channels; no matcher involved."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import cv2
import numpy as np
from scipy import fft as sfft

from osreg.descriptors import oriented_gradient_channels
from osreg.geometry import apply_transform, scale_matrix
from osreg.matchers.global_search_config import GlobalSearchConfig
from osreg.runtime import ordered_map, thread_count, threads_each

ERODE = np.ones((5, 5), np.uint8)  # channel borders next to no-data are artificial edges
STRUCTURE_CAP = 4.0  # a pixel's coarse weight saturates at 4x the median structure (bright edges do not dominate)


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


def _scored_shifts(n: int, size: int, cs: int, m: int) -> np.ndarray:
    """Per index ``t mod n`` of one axis of the circular correlation, whether it holds a linear shift ``t`` with at
    least ``m`` rows (columns) of overlap, ``t`` in ``[m - size, cs - m]`` for an optical side ``size``."""
    t = np.arange(n)
    t = np.where(t > cs - m, t - n, t)
    return (t >= m - size) & (t <= cs - m)


def _plan(shape: tuple[int, int], rotations: np.ndarray, config: GlobalSearchConfig) -> tuple[tuple[int, int], int]:
    """The FFT size and the turns of one canvas (:func:`_rotation_peaks`) that cost the fewest FFT planes for
    ``rotations`` (grid indices) at the tight size ``shape``: half turns on an even grid of ``n`` rotations (the
    channels are orientations modulo 180 degrees); quarter turns when ``n`` is divisible by 4 and the channels are
    even in number (a quarter turn shifts them by half their number), on a square size (the longer side's), which
    pays unless the images are far from square or few rotations are a quarter turn apart."""
    n, planes = len(config.rotations()), config.channels + 1
    idx = np.asarray(rotations, int)
    half = 2 if n % 2 == 0 else 1

    def cost(size: tuple[int, int], turns: int) -> float:
        period = n // turns
        spectra = 2 if turns == 4 and np.any((idx // period) % 2) else 1
        return size[0] * size[1] * (planes * (len(np.unique(idx % period)) + spectra) + 2 * len(idx))

    if n % 4 == 0 and config.channels % 2 == 0:
        square = (max(shape),) * 2
        if cost(square, 4) < cost(shape, half):
            return square, 4
    return shape, half


def _from_raw(q: int, c: int, shape: tuple[int, int]) -> Callable[[np.ndarray, np.ndarray], tuple]:
    """The shift (row, column; see :func:`_rotation_peaks`) that an index (row, column) of the circular result
    computed for a canvas turned by ``q`` quarter turns holds (``c``: the canvas side less one; ``shape``: the FFT
    size)."""
    Hh, Ww = shape
    if q == 1:
        return lambda i, j: ((-j) % Hh, i)
    if q == 2:
        return lambda i, j: ((c + i) % Hh, (c + j) % Ww)
    if q == 3:
        return lambda i, j: ((-j - c) % Hh, (c + i) % Ww)
    return lambda i, j: (i, j)


def _rotation_peaks(O: np.ndarray, i1: np.ndarray, m1: np.ndarray, k: float, r: int, shape: tuple[int, int],
                    rotations: np.ndarray, config: GlobalSearchConfig, need: float, workers: int, turns: int = 1
                    ) -> list[tuple[float, int, int]]:
    """Best score and shift of every rotation at one scale.

    Args:
        O: the optical channels and mask, ``(channels + 1, h0, w0)``, at the level's pixel size.
        i1, m1: the SAR and its mask at the level's pixel size for this scale.
        k: SAR level px -> optical level px.
        r: the canvas the SAR is turned into is ``2 r + 1`` px square, centred on the SAR's centre.
        shape: the padded FFT size (at least :func:`fft_size`; indices of shifts that cannot overlap ``need`` px are
            not scored, so that their aliases never count).
        rotations: indices into ``config.rotations()``: the full grid or any part of it.
        need: the least overlap (px) a shift must have to be scored.
        turns: how many rotations one warp of the SAR serves: 1 (every rotation warped), 2 (a rotation and its half
            turn) or 4 (its quarter turns too: ``shape`` square; :func:`_plan` chooses). The same scores as warping
            each rotation, up to the warp's rounding.

    Returns:
        per rotation of ``rotations``: the best score and its shift t (optical level px x meets canvas px x + t) as
        indices (row, column) modulo ``shape``.
    """
    Hh, Ww = shape
    h0, w0 = O.shape[-2:]
    n, C = len(config.rotations()), config.channels
    if turns not in (1, 2, 4) or n % turns or (turns == 4 and (Hh != Ww or C % 2)):
        raise ValueError(f"{turns} turns of a canvas need a grid of rotations divisible by them (got {n}), and "
                         f"quarter turns a square FFT size (got {shape}) and an even number of channels (got {C})")
    cs = 2 * r + 1
    c = cs - 1
    # A turned canvas is a flipped or turned copy of another (its channels shifted by C / 2 for a quarter turn; the
    # channels are absolute gradients, orientations modulo 180 degrees), so one warp, one channel stack and one
    # forward FFT serve up to four rotations. Half turn, y[p] = x[c - p] in both axes: the correlation of the
    # optical channels O with y at shift t is their convolution with x at c - t, which is their correlation with x
    # reversed (the conjugate spectrum) at t - c. Quarter turn, y[i, j] = x[j, c - i]: it is the correlation with x,
    # at (t_col, -t_row), of O turned the other way, O'[u, v] = O[c - v, u] with its channels shifted; three quarters:
    # O''s correlation with x reversed at (t_col - c, -t_row - c). Indices modulo the FFT size (square for quarters).
    period = n // turns
    canvases: dict[int, list[tuple[int, int]]] = {}  # per warped rotation: (quarter turns, position in rotations)
    for pos, i in enumerate(np.asarray(rotations, int).tolist()):
        canvases.setdefault(i % period, []).append(((i // period) * (4 // turns), pos))
    warped = sorted(canvases)
    quarters = sorted({q for turns_of in canvases.values() for q, _ in turns_of})
    pad = np.zeros((C + 1, Hh, Ww), np.float32)
    pad[:, :h0, :w0] = O
    # the conjugate spectra of O and, for odd quarter turns, of O' (correlations with x, or with x reversed)
    spectra = [np.conj(sfft.rfft2(pad, axes=(-2, -1), workers=workers))]
    if any(q % 2 for q in quarters):
        shifted = np.r_[(np.arange(C) + C // 2) % C, C]  # the channels shifted, the mask as it is
        turned = pad.transpose(0, 2, 1)[np.ix_(shifted, np.arange(Ww), (c - np.arange(Ww)) % Ww)]
        spectra.append(np.conj(sfft.rfft2(turned, axes=(-2, -1), workers=workers)))
        del turned
    del pad
    # the shifts no position with enough overlap lands on, then per turn the indices of the circular result that
    # hold them
    my, mx = _least_overlap(need, (h0, w0), cs)
    rows_ok, cols_ok = _scored_shifts(Hh, h0, cs, my), _scored_shifts(Ww, w0, cs, mx)
    index = np.arange(Hh)[:, None], np.arange(Ww)[None, :]
    unscored_at = {}
    for q in quarters:
        ty, tx = _from_raw(q, c, shape)(*index)  # each depends on the row or on the column of the index alone
        unscored_at[q] = ~(rows_ok[ty] & cols_ok[tx])
    # canvases in chunks, so that a batch of padded channel stacks stays near CHUNK_BYTES whatever the sizes, and
    # that every worker thread gets one (each then runs its FFTs on one thread)
    chunk = max(1, min(int(CHUNK_BYTES // ((C + 1) * Hh * Ww * 4)), math.ceil(len(warped) / workers)))
    starts = range(0, len(warped), chunk)
    fft_workers = threads_each(workers, len(starts))
    grid = config.rotations()
    h1, w1 = i1.shape
    c1 = np.array([(w1 - 1) / 2, (h1 - 1) / 2])

    def chunk_peaks(start: int) -> list[tuple[int, tuple[float, int, int]]]:
        part = warped[start:start + chunk]
        W = np.zeros((len(part), C + 1, Hh, Ww), np.float32)
        for j, rep in enumerate(part):
            B = _turn(k, grid[rep])
            M = np.hstack([B, (r - B @ c1)[:, None]])
            wi = cv2.warpAffine(i1, M, (cs, cs), flags=cv2.INTER_LINEAR)
            wm = cv2.erode(cv2.warpAffine(m1.astype(np.uint8), M, (cs, cs), flags=cv2.INTER_NEAREST), ERODE) > 0
            W[j, :-1, :cs, :cs] = _channels(wi, wm, C, config.structure_power)
            W[j, -1, :cs, :cs] = wm
        G = sfft.rfft2(W, axes=(-2, -1), workers=fft_workers)
        del W
        out = []
        reversed_ = False
        for q in quarters:
            sel = [(j, pos) for j, rep in enumerate(part) for turn, pos in canvases[rep] if turn == q]
            if not sel:
                continue
            if q >= 2 and not reversed_:  # the canvases reversed: half and three quarter turns
                np.conj(G, out=G)
                reversed_ = True
            rows = [j for j, _ in sel]
            Gq = G if rows == list(range(len(part))) else G[rows]
            spec = spectra[q % 2]
            num = sfft.irfft2(_channel_products(spec[:-1], Gq[:, :-1]), s=shape, axes=(-2, -1), workers=fft_workers)
            area = sfft.irfft2(spec[-1][None] * Gq[:, -1], s=shape, axes=(-2, -1), workers=fft_workers)
            bad = area < math.floor(need) + 0.5  # areas are pixel counts up to the FFT's round-off: <= need
            bad |= unscored_at[q]
            num /= np.maximum(area, 1.0, out=area)
            np.copyto(num, -np.inf, where=bad)
            flat = num.reshape(len(sel), -1)
            shift = _from_raw(q, c, shape)
            for (_, pos), row, at in zip(sel, flat, flat.argmax(axis=1)):
                out.append((pos, (float(row[at]), *shift(*divmod(int(at), Ww)))))
        return out

    peaks: list[tuple[float, int, int]] = [(-np.inf, 0, 0)] * len(rotations)
    for part in ordered_map(chunk_peaks, starts, workers):
        for pos, peak in part:
            peaks[pos] = peak
    return peaks


def _rotations_near(config: GlobalSearchConfig, near: list[float] | None) -> np.ndarray:
    """The rotations to search, as indices into ``config.rotations()``: those within one step of ``near`` or of their
    half turns (the full grid without ``near``)."""
    grid = config.rotations()
    if not near:
        return np.arange(len(grid))
    step = 360.0 / len(grid)
    d = np.abs(grid[:, None] - np.asarray(near, float)[None, :]) % 180.0
    return np.flatnonzero((np.minimum(d, 180.0 - d) <= 1.01 * step).any(axis=1))


def search_hypotheses(image0: np.ndarray, mask0: np.ndarray, image1: np.ndarray, mask1: np.ndarray,
                      config: GlobalSearchConfig = GlobalSearchConfig(), workers: int | None = None,
                      near: list[float] | None = None) -> list[Hypothesis]:
    """The coarse FFT search (steps 1 and 2 of the module doc).

    Args:
        image0, mask0: optical image and validity mask.
        image1, mask1: SAR image and validity mask.
        config: the search settings.
        workers: threads: the scales (and the batches of rescored hypotheses) run side by side, each with its FFTs
            on one thread (the same values as on one thread; default: :func:`osreg.runtime.thread_count`, which the
            entry points set).
        near: rotations (degrees); only the rotations of the grid within one ``rotation_step`` of them or of their
            half turns are searched (None or empty: the full circle).

    Returns:
        up to ``config.candidates`` distinct hypotheses, best first (empty when nothing overlaps enough).
    """
    workers = workers or thread_count()
    s0 = config.coarse_side / max(image0.shape)
    i0, m0, s0x = _resize(image0.astype(np.float32, copy=False), mask0, min(1.0, s0))
    m0 = cv2.erode(m0.astype(np.uint8), ERODE) > 0
    A0 = _channels(i0, m0, config.channels, config.structure_power)
    h0, w0 = i0.shape
    O = np.concatenate([A0, m0[None].astype(np.float32)])  # the optical channels and mask
    need = config.min_overlap * float(m0.sum())
    if need <= 0:
        return []
    rotations = _rotations_near(config, near)
    grid = config.rotations()
    scales = config.scales()
    # the SAR at the coarse level's pixel size, already reduced by the scale when it is larger than 1 (so that the
    # warp below never shrinks it by more than a rotation needs); every scale <= 1 shares one resize
    factors = [min(1.0, s0x * min(1.0, 1.0 / sc)) for sc in scales]
    resized = {f: _resize(image1.astype(np.float32, copy=False), mask1, f) for f in dict.fromkeys(factors)}
    # the scales side by side, each on one thread (the same values: every rotation's FFTs are its own)
    inner = threads_each(workers, len(scales))

    def scale_peaks(n: int) -> list[tuple[float, float, float, np.ndarray]]:
        sc = scales[n]
        i1, m1, s1x = resized[factors[n]]
        k = s0x / (s1x * sc)  # SAR level px -> optical level px
        h1, w1 = i1.shape
        c1 = np.array([(w1 - 1) / 2, (h1 - 1) / 2])
        r = int(np.ceil(k * math.hypot(w1, h1) / 2)) + 2
        cs = 2 * r + 1
        (Hh, Ww), turns = _plan(fft_size((h0, w0), cs, need), rotations, config)
        peaks = _rotation_peaks(O, i1, m1, k, r, (Hh, Ww), rotations, config, need, inner, turns)
        out = []
        for th, (best, ty, tx) in zip(grid[rotations], peaks):
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
            out.append((best, float(th), float(sc), H))
        return out

    found = [f for part in ordered_map(scale_peaks, range(len(scales)), workers, ahead=len(scales)) for f in part]
    found.sort(key=lambda f: -f[0])
    step = 360.0 / len(grid)
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
    chunk = max(1, min(int(CHUNK_BYTES // ((config.channels + 1) * Hh * Ww * 4)), math.ceil(len(hyps) / workers)))
    starts = range(0, len(hyps), chunk)
    fft_workers = threads_each(workers, len(starts))
    for hyp in hyps:  # the SAR at about the level's pixel size for each scale first (area averaging), then one warp
        if hyp.scale not in pre:
            pre[hyp.scale] = _resize(image1.astype(np.float32, copy=False), mask1, min(1.0, level.s0x * hyp.scale))

    def chunk_scores(start: int) -> np.ndarray:
        part = hyps[start:start + chunk]
        stack = np.zeros((len(part), config.channels + 1, Hh, Ww), np.float32)
        for n, hyp in enumerate(part):
            i1, m1, s1x = pre[hyp.scale]
            M = scale_matrix(s1x) @ hyp.H @ L0i  # optical level px -> SAR level px
            wi = cv2.warpPerspective(i1, M @ shift, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            wm = cv2.warpPerspective(m1.astype(np.uint8), M @ shift, size,
                                     flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
            wm = cv2.erode(wm, ERODE) > 0
            stack[n, :-1, :size[1], :size[0]] = _channels(wi, wm, config.channels, config.structure_power)
            stack[n, -1, :size[1], :size[0]] = wm
        G = sfft.rfft2(stack, axes=(-2, -1), workers=fft_workers)
        del stack
        num = sfft.irfft2(_channel_products(F0[:-1], G[:, :-1]), s=(Hh, Ww), axes=(-2, -1), workers=fft_workers)
        area = sfft.irfft2(F0[-1][None] * G[:, -1], s=(Hh, Ww), axes=(-2, -1), workers=fft_workers)
        return np.where(area > math.floor(level.need) + 0.5, num / np.maximum(area, 1.0), -np.inf)

    scores = list(ordered_map(chunk_scores, starts, workers))
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
    (once per translation reach); the starts are refined side by side on ``workers`` threads (default: all).

    Returns:
        (the refined transform, its score), or None when none can be scored (too little overlap).
    """
    workers = workers or thread_count()
    cfg = replace(config, rescore_side=config.fine_side)
    wide, near = _level(image0, mask0, cfg, workers, radius), _level(image0, mask0, cfg, workers, 3)
    h, w = image0.shape
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    pre: dict[float, tuple[np.ndarray, np.ndarray, float]] = {}  # shared by the threads: the same values either way
    # the starts side by side when there are several (each scores on one thread), else the one on every thread
    inner = threads_each(workers, len(starts))

    def refine(H: np.ndarray) -> tuple[np.ndarray, float] | None:
        scale = float(np.sqrt(abs(np.linalg.det(H[:2, :2]))))
        found = _score(wide, image1, mask1, [Hypothesis(H, 0.0, scale, 0.0)], cfg, inner, pre)
        if not found:
            return None
        best = found[0]
        for step, rel in FINE_STEPS:
            moves = []
            for turn in (-step, 0.0, step):
                for k in (1 - rel, 1.0, 1 + rel):
                    P = np.eye(3)
                    P[:2, :2] = _turn(k, turn)
                    P[:2, 2] = c - P[:2, :2] @ c
                    moves.append(Hypothesis(best.H @ P, 0.0, scale * k, 0.0))
            scored = _score(near, image1, mask1, moves, cfg, inner, pre)
            if scored and scored[0].score > best.score:
                best = scored[0]
        return best.H, best.score

    refined = [f for f in ordered_map(refine, starts, workers) if f is not None]
    return max(refined, key=lambda f: f[1]) if refined else None


def hypothesis_summary(hyps: list[Hypothesis]) -> list[dict]:
    return [{"rotation": round(h.rotation, 2), "scale": round(h.scale, 4), "score": round(h.score, 4)} for h in hyps]


def _corners(shape: tuple[int, int]) -> np.ndarray:
    """The four corner pixels ``(x, y)`` of an image of ``shape`` (rows, columns)."""
    h, w = shape
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)


def same_place(Ha: np.ndarray, Hb: np.ndarray, shape: tuple[int, int], tol: float = 0.02) -> bool:
    """True when two hypotheses put every corner of an image of ``shape`` within ``tol`` x its longer side of each
    other (their verification would be the same: the verifier searches a few percent of the side around each)."""
    corners = _corners(shape)
    return bool(np.abs(apply_transform(Ha, corners) - apply_transform(Hb, corners)).max() <= tol * max(shape))


def is_shift(H: np.ndarray, shape: tuple[int, int], tol: float = 0.5) -> bool:
    """True when H moves every pixel of an image of ``shape`` by the same integer shift to within ``tol`` px."""
    corners = _corners(shape)
    d = apply_transform(H, corners) - corners
    return bool(np.abs(d - np.round(d.mean(0))).max() <= tol)
