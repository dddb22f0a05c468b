"""CSTF behind the matcher contract (``--method cstf``).

The pair the matcher sees is already roughly aligned: by the georeference, or by the global rotation/scale search
(the ``search=auto`` default, as for CFOG), which wraps this matcher and verifies its candidates with it. CSTF then
finds, for each optical keypoint, the SAR position among the candidates within ``radius`` of the same position, or
decides there is none.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from osreg.matchers.base import Matcher
from osreg.matchers.checkpoint import load_state, read_trained
from osreg.matchers.cstf.config import INFERENCE_FIELDS, CSTFConfig
from osreg.matchers.cstf.keypoints import detect
from osreg.matchers.cstf.model import CSTFNet, decode, encoder_input
from osreg.runtime import ordered_map, thread_count
from osreg.types import MatchResult

logger = logging.getLogger(__name__)

SHIPPED = "matchers/cstf/weights/cstf.pt"


def load_cstf(weights: str | Path | None = None, **overrides) -> CSTFNet:
    """Build CSTF from a checkpoint (its saved config rebuilds the network; safe read, strict load).

    Raises:
        WeightsNotFoundError, CheckpointError, InputError: as :func:`osreg.matchers.tar.matcher.load_tar`.
    """
    path, ck, cfg = read_trained(weights, SHIPPED, "CSTF", "model", CSTFConfig, INFERENCE_FIELDS, overrides)
    model = CSTFNet(cfg)
    load_state(model, ck["model"], path, "CSTF")
    return model.eval()


def match_pair(model: CSTFNet, img0: np.ndarray, img1: np.ndarray, mask0: np.ndarray | None,
               mask1: np.ndarray | None, max_keypoints: int | None = None) -> MatchResult:
    """CSTF matches of two pre-aligned images (pixels of both), possibly empty."""
    cfg = model.cfg
    n = max_keypoints or cfg.max_keypoints
    jobs = ((img0, mask0, n, cfg.keypoint_scales), (img1, mask1, 2 * n, cfg.keypoint_scales))
    kp0, kp1 = ordered_map(lambda job: detect(*job), jobs, thread_count())  # the two detections side by side
    info = {"keypoints0": len(kp0), "keypoints1": len(kp1)}
    if len(kp0) == 0:
        return MatchResult.empty(**info)
    xy0 = torch.from_numpy(kp0.xy).float()
    prior = model.keypoint_channel(kp0, kp1)
    with torch.inference_mode():
        logits = model(encoder_input(img0, cfg.n_orientations), encoder_input(img1, cfg.n_orientations), xy0, xy0,
                       prior)
        disp, mass, is_match = decode(logits, cfg.cells, cfg.stride)
    k1 = kp0.xy + disp.numpy().astype(np.float64)
    keep = is_match.numpy() & (mass.numpy() >= cfg.min_confidence)
    h, w = img1.shape
    keep &= (k1[:, 0] >= 0) & (k1[:, 1] >= 0) & (k1[:, 0] <= w - 1) & (k1[:, 1] <= h - 1)
    info["no_match"] = int((~is_match).sum().item())
    return MatchResult(kp0.xy[keep], k1[keep], mass.numpy()[keep].astype(np.float64), info)


class CSTFMatcher(Matcher):
    """``--method cstf``. Options: ``weights`` (checkpoint path) and the inference fields of :class:`CSTFConfig`:
    ``max_keypoints``, ``min_confidence``, ``max_side``, ``radius``."""

    name = "cstf"
    min_size = 64

    def __init__(self, weights: str | None = None, **overrides) -> None:
        self.model = load_cstf(weights, **overrides)
        self.config: CSTFConfig = self.model.cfg

    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        return match_pair(self.model, image0, image1, mask0, mask1)


__all__ = ["SHIPPED", "CSTFMatcher", "load_cstf", "match_pair"]
