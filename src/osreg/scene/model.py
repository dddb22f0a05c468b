"""From window matches to the scene's correction: per-window shifts, local outlier rejection, and the model.

Everything here works in the *pre-aligned frame*: optical pixels, after the coarse transform ``H``. A window's
matches say how far the SAR content lies from where ``H`` put it; the correction ``d(p)`` is that displacement
everywhere, and the registration is ``p -> H(p + d(p))``.

The local model (``local``) is a global affine fit of all matches plus a thin-plate spline with smoothing through
the per-window residual shifts, faded out beyond the windows' reach (where there is no evidence the affine fit
stays). Its smoothing is chosen by cross-validation over the windows, and ``auto`` keeps the local model only where
that held-out error beats the affine fit's. The alternatives measured are in ``docs/scenes.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import RBFInterpolator
from scipy.spatial import cKDTree

from osreg.geometry import GeometryConfig, apply_transform, estimate_transform, fit_affine
from osreg.scene.tiles import WindowMatches

logger = logging.getLogger(__name__)

SMOOTHING = (0.01, 0.1, 1.0, 10.0)  # thin-plate smoothing candidates (coordinates in units of the spacing)


@dataclass(frozen=True)
class WindowShifts:
    """One tie point per window that agreed with itself.

    Attributes:
        position: ``(T, 2)`` mean optical position of the window's kept matches.
        shift: ``(T, 2)`` median displacement of the kept matches (pre-aligned frame).
        count: ``(T,)`` kept matches.
        spread: ``(T,)`` median distance of the kept matches' displacements from the shift (px).
        window: ``(T,)`` the window's index.
    """

    position: np.ndarray
    shift: np.ndarray
    count: np.ndarray
    spread: np.ndarray
    window: np.ndarray

    def __len__(self) -> int:
        return len(self.position)

    def subset(self, keep: np.ndarray) -> WindowShifts:
        return WindowShifts(self.position[keep], self.shift[keep], self.count[keep], self.spread[keep],
                            self.window[keep])


def window_shifts(results: list[WindowMatches], min_matches: int) -> tuple[WindowShifts, np.ndarray]:
    """The shift of every window whose matches agree (at least ``min_matches`` within ``max(1 px, 3 MAD)`` of the
    median displacement), and a per-match flag of the matches kept, in the order of ``results``."""
    pos, shift, count, spread, win, kept = [], [], [], [], [], []
    for r in results:
        d = r.keypoints1 - r.keypoints0
        keep = np.zeros(len(d), bool)
        if len(d) >= min_matches:
            med = np.median(d, axis=0)
            dist = np.linalg.norm(d - med, axis=1)
            keep = dist <= max(1.0, 3 * 1.4826 * np.median(dist))
            if keep.sum() >= min_matches:
                med = np.median(d[keep], axis=0)
                pos.append(r.keypoints0[keep].mean(0))
                shift.append(med)
                count.append(int(keep.sum()))
                spread.append(float(np.median(np.linalg.norm(d[keep] - med, axis=1))))
                win.append(r.index)
            else:
                keep[:] = False
        kept.append(keep)
    shifts = WindowShifts(np.array(pos).reshape(-1, 2), np.array(shift).reshape(-1, 2), np.array(count, int),
                          np.array(spread), np.array(win, int))
    return shifts, (np.concatenate(kept) if kept else np.zeros(0, bool))


def consistent_with_neighbours(shifts: WindowShifts, spacing: float, tol_px: float = 2.0) -> np.ndarray:
    """Local outlier rejection: a window's shift must be within ``max(tol_px, 3 MAD)`` of the median of its
    neighbours (within 2.5 spacings; at least 3 of them, else it is kept)."""
    n = len(shifts)
    keep = np.ones(n, bool)
    if n < 4:
        return keep
    tree = cKDTree(shifts.position)
    for i, nb in enumerate(tree.query_ball_point(shifts.position, 2.5 * spacing)):
        nb = [j for j in nb if j != i]
        if len(nb) < 3:
            continue
        d = shifts.shift[nb]
        med = np.median(d, axis=0)
        mad = np.median(np.linalg.norm(d - med, axis=1))
        keep[i] = np.linalg.norm(shifts.shift[i] - med) <= max(tol_px, 3 * 1.4826 * mad)
    return keep


@dataclass
class SceneModel:
    """The correction ``d(p)`` (pre-aligned frame) and how it was chosen.

    Attributes:
        kind: "local", "affine", "homography", "similarity", or "coarse" (too few windows: no correction).
        A: the global part (pre-aligned px -> pre-aligned px).
        spline: the smoothed thin-plate spline of the residual shifts (local only).
        centres: window positions of the spline (to fade it out away from them).
        spacing: window spacing (px).
        info: what was measured (cross-validated errors, smoothing, counts, reason).
    """

    kind: str
    A: np.ndarray = field(default_factory=lambda: np.eye(3))
    spline: RBFInterpolator | None = None
    centres: np.ndarray | None = None
    spacing: float = 1.0
    info: dict = field(default_factory=dict)

    def correction(self, xy: np.ndarray) -> np.ndarray:
        """``d(p)`` at optical pixels ``(N, 2)``."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        d = apply_transform(self.A, xy) - xy
        if self.spline is not None and len(xy):
            dist, _ = cKDTree(self.centres).query(xy)
            fade = np.clip(2.0 - dist / self.spacing, 0.0, 1.0)
            d += fade[:, None] * self.spline(xy / self.spacing)
        return d


def _spline(p: np.ndarray, r: np.ndarray, spacing: float, smoothing: float) -> RBFInterpolator:
    return RBFInterpolator(p / spacing, r, kernel="thin_plate_spline", smoothing=smoothing, degree=1)


def _cross_validate(shifts: WindowShifts, spacing: float, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Mean held-out error (px) of the affine fit and of affine + spline for each smoothing."""
    n = len(shifts)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % folds
    p, d, w = shifts.position, shifts.shift, shifts.count.astype(float)
    err = {"affine": [], **{f"local_{s:g}": [] for s in SMOOTHING}}
    for k in range(folds):
        tr, te = fold != k, fold == k
        if te.sum() == 0 or tr.sum() < 6:
            continue
        A = fit_affine(p[tr], p[tr] + d[tr], w[tr])
        base_te = apply_transform(A, p[te]) - p[te]
        err["affine"].append(np.linalg.norm(d[te] - base_te, axis=1))
        r_tr = d[tr] - (apply_transform(A, p[tr]) - p[tr])
        for s in SMOOTHING:
            pred = base_te + _spline(p[tr], r_tr, spacing, s)(p[te] / spacing)
            err[f"local_{s:g}"].append(np.linalg.norm(d[te] - pred, axis=1))
    return {k: float(np.mean(np.concatenate(v))) if v else float("nan") for k, v in err.items()}


def fit_scene_model(shifts: WindowShifts, k0: np.ndarray, k1: np.ndarray, kind: str, spacing: float,
                    geometry: GeometryConfig, min_local: int) -> SceneModel:
    """The correction from the windows' shifts (and their kept matches ``k0 -> k1`` for the global fit).

    ``kind``: "auto", "local", or a plane model ("affine", "homography", "similarity").
    """
    n = len(shifts)
    info: dict = {"windows": n}
    if n < 3:
        info["reason"] = f"{n} window(s) with tie points: the coarse transform is kept as it is"
        return SceneModel("coarse", info=info)
    if kind not in ("auto", "local"):  # a plane model fitted robustly to all kept matches
        est = estimate_transform(k0, k1, GeometryConfig(model=kind, threshold_px=geometry.threshold_px,
                                                        seed=geometry.seed))
        A = est.H if est.H is not None else fit_affine(shifts.position, shifts.position + shifts.shift)
        info.update({"global_inliers": est.n_inliers, "reason": f"{kind} model requested"})
        return SceneModel(kind, A, info=info)
    # the global part of the local model: the windows' shifts (already checked against their neighbours),
    # weighted by their match counts; a robust fit to single matches would follow the field in one region
    A = fit_affine(shifts.position, shifts.position + shifts.shift, shifts.count.astype(float))
    if n < min_local:
        info["reason"] = f"{n} windows with tie points, the local model needs {min_local}: affine"
        return SceneModel("affine", A, info=info)
    cv = _cross_validate(shifts, spacing)
    best = min(SMOOTHING, key=lambda s: cv[f"local_{s:g}"])
    info.update({"cv_error_affine_px": cv["affine"], "cv_error_local_px": cv[f"local_{best:g}"],
                 "smoothing": best})
    if kind == "auto" and not cv[f"local_{best:g}"] < 0.9 * cv["affine"] - 0.05:
        info["reason"] = (f"the local model does not beat the affine fit on held-out windows "
                          f"({cv[f'local_{best:g}']:.2f} px vs {cv['affine']:.2f} px): affine")
        return SceneModel("affine", A, info=info)
    residual = shifts.shift - (apply_transform(A, shifts.position) - shifts.position)
    info["reason"] = (f"local model on {n} windows (held-out error {cv[f'local_{best:g}']:.2f} px vs "
                      f"{cv['affine']:.2f} px affine)" if kind == "auto" else "local model requested")
    return SceneModel("local", A, _spline(shifts.position, residual, spacing, best), shifts.position.copy(),
                      float(spacing), info)


__all__ = ["SceneModel", "WindowShifts", "consistent_with_neighbours", "fit_scene_model", "window_shifts"]
