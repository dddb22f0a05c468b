"""TAR: text semantic assisted registration (MSFL + TAFE + CFDM) behind the matcher contract.

Large deformations: the network is trained with rotations up to +-50 degrees and scales 0.625-1.6; at test time
the SAR is searched over rotations in 45-degree steps and a few scales (``TARConfig.rotations`` / ``scales``) at
a low working resolution, the hypothesis with the most geometrically consistent coarse matches is kept, and the
full coarse-to-fine pass runs on it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from osreg.errors import WeightsNotFoundError
from osreg.geometry import GeometryConfig, apply_transform, estimate_transform
from osreg.matchers.base import Matcher
from osreg.matchers.tar.config import TARConfig
from osreg.matchers.tar.matching import cell_centres, coarse_matches, fine_refine
from osreg.matchers.tar.model import TARModel
from osreg.types import MatchResult
from osreg.weights import resolve_weights

logger = logging.getLogger(__name__)

SHIPPED = "matchers/tar/weights/tar.pt"
MIN_SEARCH_INLIERS = 8  # a search hypothesis needs this many coarse inliers to rectify the SAR


def load_tar(weights: str | Path | None = None, **overrides) -> TARModel:
    """Build TAR from a checkpoint (its saved config rebuilds the network; strict load).

    Args:
        weights: checkpoint file; the weights shipped in the package when None.
        **overrides: inference fields of TARConfig to change (use_text, rotations, scales, ...).
    """
    path = resolve_weights(weights, "osreg", SHIPPED, "reinstall osreg (the weights ship inside the package)")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if "model_config" not in ck or "model" not in ck:
        raise WeightsNotFoundError(f"{path} is not a TAR checkpoint (no model_config / model entries)")
    cfg = replace(TARConfig.from_dict(ck["model_config"]), **overrides)
    model = TARModel(cfg)
    model.load_state_dict(ck["model"], strict=True)
    return model.eval()


def _pad8(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape
    ph, pw = (-h) % 8, (-w) % 8
    return np.pad(img, ((0, ph), (0, pw))), np.pad(mask, ((0, ph), (0, pw)))


def _resize(img: np.ndarray, mask: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize by s; returns image, mask, and S (old px -> new px, pixel centres at integers)."""
    if s == 1.0:
        return img, mask, np.eye(3)
    h, w = img.shape
    nw, nh = max(8, round(w * s)), max(8, round(h * s))
    sx, sy = nw / w, nh / h
    out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    m = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return out, m, S


def _rotate(img: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotate by ``angle`` degrees counter-clockwise on screen; returns image, mask, R (old px -> new px).

    Multiples of 90 degrees are exact (``np.rot90``); other angles resample onto a canvas holding the whole image.
    """
    h, w = img.shape
    if angle % 90 == 0:
        k = int(angle // 90) % 4
        R = {0: np.eye(3),
             1: np.array([[0, 1, 0], [-1, 0, w - 1], [0, 0, 1.0]]),
             2: np.array([[-1, 0, w - 1], [0, -1, h - 1], [0, 0, 1.0]]),
             3: np.array([[0, -1, h - 1], [1, 0, 0], [0, 0, 1.0]])}[k]
        return np.ascontiguousarray(np.rot90(img, k)), np.ascontiguousarray(np.rot90(mask, k)), R
    R = np.vstack([cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0), [0, 0, 1]])
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1.0]]) @ R.T
    R[:2, 2] -= corners[:, :2].min(0)
    nw, nh = (np.ceil(corners[:, :2].max(0) - corners[:, :2].min(0)).astype(int) + 1).tolist()
    out = cv2.warpAffine(img, R[:2], (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)
    m = cv2.warpAffine(mask.astype(np.uint8), R[:2], (nw, nh), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    return out, m, R


def _rectify(img, mask, F, shape0):
    """Resample img into the optical frame: pixel p of the result shows img at F(p)."""
    size = (shape0[1], shape0[0])
    out = cv2.warpPerspective(img, F, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderValue=0)
    out = np.clip(out, 0.0, 1.0)
    m = cv2.warpPerspective(mask.astype(np.uint8), F, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                            borderValue=0) > 0
    return out.astype(np.float32), m


class TARMatcher(Matcher):
    """``--method tar``. Options: ``weights`` (checkpoint path), ``use_text`` (False: the TAFE ablation),
    ``rotations``, ``scales`` (test-time search; ``rotations=(0,), scales=(1.0,)`` disables it)."""

    name = "tar"
    min_size = 64

    def __init__(self, weights: str | None = None, **overrides) -> None:
        self.model = load_tar(weights, **overrides)
        self.cfg = self.model.cfg
        self.max_side = self.cfg.max_side
        from osreg.text import load_bank

        self.text = torch.from_numpy(load_bank(self.cfg.text_encoder).embeddings)

    @torch.inference_mode()
    def _run(self, img0, mask0, img1, mask1, fine: bool, features0: tuple | None = None):
        a0, m0 = _pad8(img0, mask0)
        a1, m1 = _pad8(img1, mask1)
        t0 = torch.from_numpy(a0)[None, None]
        t1 = torch.from_numpy(a1)[None, None]
        c0 = torch.nn.functional.avg_pool2d(torch.from_numpy(m0)[None, None].float(), 8)[:, 0] > 0.5
        c1 = torch.nn.functional.avg_pool2d(torch.from_numpy(m1)[None, None].float(), 8)[:, 0] > 0.5
        out = self.model(t0, t1, self.text, c0, c1, fine=fine, features0=features0)
        b, i, j, score = coarse_matches(out["conf"], self.cfg.coarse_threshold)
        h0, w0 = out["coarse_shape0"].tolist()
        h1, w1 = out["coarse_shape1"].tolist()
        k0 = cell_centres(h0, w0)[i]
        k1 = cell_centres(h1, w1)[j]
        if fine and len(b):
            xy0 = (k0 - 0.5) / 2
            xy1 = (k1 - 0.5) / 2
            off, _ = fine_refine(out["fine0"], out["fine1"], b, xy0, xy1, self.cfg.fine_window)
            k1 = (xy1 + off) * 2 + 0.5
        keep = (k0[:, 0] < img0.shape[1]) & (k0[:, 1] < img0.shape[0]) & (k1[:, 0] < img1.shape[1]) & \
            (k1[:, 1] < img1.shape[0])
        return k0[keep].double().numpy(), k1[keep].double().numpy(), score[keep].double().numpy()

    def _hypotheses(self, img0, mask0, img1, mask1) -> list[dict]:
        """Score every (rotation, scale) hypothesis of the SAR at search resolution by the inliers of a loose
        similarity fit to its coarse matches."""
        s0 = min(1.0, self.cfg.search_side / max(img0.shape))
        i0, m0, _ = _resize(img0, mask0, s0)
        with torch.inference_mode():  # the optical features are the same for every hypothesis
            feats0 = self.model.msfl(torch.from_numpy(_pad8(i0, m0)[0])[None, None], 0, fine=False)
        results = []
        for rot in self.cfg.rotations:
            r1, rm1, _ = _rotate(img1, mask1, rot)
            for sc in self.cfg.scales:
                i1, m1, _ = _resize(r1, rm1, s0 * sc)
                if min(i1.shape) < 32:
                    continue
                k0, k1, _ = self._run(i0, m0, i1, m1, fine=False, features0=feats0)
                est = estimate_transform(k0, k1, GeometryConfig(model="similarity", threshold_px=8.0))
                # optical px -> px of the SAR turned and scaled by this hypothesis at full resolution
                S0 = np.diag([s0, s0, 1.0])
                footprint = None if est.H is None else np.linalg.inv(S0) @ est.H @ S0
                results.append({"rotation": rot, "scale": sc, "inliers": est.n_inliers, "matches": len(k0),
                                "footprint": footprint})
        return results

    def _match(self, image0, image1, mask0, mask1) -> MatchResult:
        mask0 = np.ones(image0.shape, bool) if mask0 is None else mask0
        mask1 = np.ones(image1.shape, bool) if mask1 is None else mask1
        info: dict = {"use_text": self.cfg.use_text}
        if len(self.cfg.rotations) * len(self.cfg.scales) > 1:
            scores = self._hypotheses(image0, mask0, image1, mask1)
            best = max(scores, key=lambda r: (r["inliers"], r["matches"])) if scores else None
            info["hypothesis"] = None if best is None else {"rotation": best["rotation"], "scale": best["scale"],
                                                            "inliers": best["inliers"]}
        else:  # a single hypothesis: apply it as given
            best = {"rotation": self.cfg.rotations[0], "scale": self.cfg.scales[0], "footprint": None, "inliers": 0}
        r1, rm1, R = _rotate(image1, mask1, best["rotation"] if best else 0)
        i1, m1, S = _resize(r1, rm1, best["scale"] if best else 1.0)
        T = S @ R  # original SAR px -> hypothesis px
        F = best["footprint"] if best and best["inliers"] >= MIN_SEARCH_INLIERS else None
        if best and best["rotation"] % 360 == 0 and best["scale"] == 1.0:
            F = None  # already in the optical frame: any resampling would only blur the SAR
        if F is not None:
            # rectify: resample the SAR into the optical frame (optical px -> hypothesis px is F), refine F on the
            # rectified pair at full resolution, and rectify again, so that the coarse-to-fine pass sees a nearly
            # aligned pair. Every rectification is one cubic warp of the input SAR (optical px -> input px is
            # T^-1 F): chained resampling blurs the speckle texture the network relies on.
            Ti = np.linalg.inv(T)
            for _ in range(self.cfg.rectify_iterations):
                r, rm = _rectify(image1, mask1, Ti @ F, image0.shape)
                k0, k1, _ = self._run(image0, mask0, r, rm, fine=False)
                est = estimate_transform(k0, k1, GeometryConfig(model="homography", threshold_px=6.0))
                if est.H is None or est.n_inliers < MIN_SEARCH_INLIERS:
                    break
                F = F @ est.H
            i1, m1 = _rectify(image1, mask1, Ti @ F, image0.shape)
            T = np.linalg.inv(Ti @ F)  # original SAR px -> rectified px
            info["rectified"] = True
        k0, k1, conf = self._run(image0, mask0, i1.astype(np.float32), m1, fine=True)
        k1 = apply_transform(np.linalg.inv(T), k1) if len(k1) else k1
        return MatchResult(k0, k1, conf, info)
