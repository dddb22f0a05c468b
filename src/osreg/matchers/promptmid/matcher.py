"""PromptMID: zero-shot modality-invariant descriptors from frozen networks, guided by land-use prompts.

Frozen ALIKED, DISK and XFeat dense descriptors at several scales (:mod:`.frozen`; optional SAR2SAR input prior and
diffusion branch) are fused by a trained multi-granularity aggregator conditioned on land-use affinities to the
shared text bank (:mod:`.model`). Matching: dual-softmax mutual nearest neighbours of the coarse (1/8) descriptors
above a confidence, refined by expectation in a window of the fine (1/2) descriptors, then the shared geometry.
Large deformations: the same rotation and scale search as TAR (:mod:`osreg.matchers.search`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from osreg.errors import InputError
from osreg.matchers.base import Matcher
from osreg.matchers.checkpoint import load_state, read_trained
from osreg.matchers.dense import dense_matches, window_refiner
from osreg.matchers.promptmid.config import INFERENCE_FIELDS, PRESETS, PromptMIDConfig
from osreg.matchers.promptmid.model import PromptMIDNet, dual_softmax
from osreg.matchers.search import pad_to_multiple
from osreg.preprocess import sar2sar_normalised, stretch
from osreg.types import MatchResult

logger = logging.getLogger(__name__)

SHIPPED = "matchers/promptmid/weights/promptmid.pt"
MIN_CELL_STD = 1e-3  # cells whose intensity spread (in [0, 1] units) is below this are not matched
def load_promptmid(weights: str | Path | None = None, **overrides) -> PromptMIDNet:
    """Build PromptMID from a checkpoint: its saved config rebuilds the aggregator (safe read, strict load); the frozen
    networks load from their packages.

    Args:
        weights: checkpoint file; the one shipped in the package when None.
        **overrides: inference fields of PromptMIDConfig (``INFERENCE_FIELDS``: use_prompts, sar_prior, ...).

    Raises:
        WeightsNotFoundError: no checkpoint where it looked.
        CheckpointError: not a PromptMID checkpoint (or one holding objects other than tensors and plain data).
        InputError: an override changes the trained architecture.
    """
    path, ck, cfg = read_trained(weights, SHIPPED, "PromptMID", "aggregator", PromptMIDConfig, INFERENCE_FIELDS, overrides)
    if bool(cfg.diffusion_checkpoint) != (cfg.diffusion_channels > 0):
        raise InputError(f"{path} was trained {'with' if cfg.diffusion_channels else 'without'} the diffusion branch; "
                         f"diffusion_checkpoint must be {'given' if cfg.diffusion_channels else 'left unset'}")
    net = PromptMIDNet(cfg)
    load_state(net.aggregator, ck["aggregator"], path, "PromptMID")
    return net.eval()


def build_promptmid(preset: str | PromptMIDConfig = "default") -> PromptMIDNet:
    """An untrained PromptMID (for training) from a preset name or a config."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise InputError(f"unknown PromptMID preset {preset!r}; presets: {', '.join(PRESETS)}")
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    if cfg.diffusion_checkpoint and not cfg.diffusion_channels:
        from osreg.matchers.promptmid.diffusion import DiffusionFeatures

        probe = DiffusionFeatures(cfg.diffusion_checkpoint, cfg.diffusion_timestep)
        cfg = replace(cfg, diffusion_channels=probe.channels)
    return PromptMIDNet(cfg)


def despeckle_display(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The SAR2SAR prior on a [0, 1] log-scaled SAR image: the image is read as SAR2SAR's normalised log amplitude,
    despeckled and stretched back to [0, 1]."""
    return stretch(sar2sar_normalised(img), mask)


class PromptMIDMatcher(Matcher):
    """``--method promptmid``. Options: ``weights`` (checkpoint path) and the inference fields of
    :class:`PromptMIDConfig`: ``use_prompts`` (False: the prompt ablation), ``sar_prior`` ("sar2sar"), ..."""

    name = "promptmid"
    min_size = 64

    def __init__(self, weights: str | None = None, **overrides) -> None:
        self.net = load_promptmid(weights, **overrides)
        self.config: PromptMIDConfig = self.net.cfg
        from osreg.text import load_bank

        self.text = torch.from_numpy(load_bank(self.config.text_encoder).embeddings)
        self._optical: tuple[np.ndarray, dict] | None = None

    @torch.inference_mode()
    def _describe(self, img: np.ndarray, mask: np.ndarray | None, fine: bool) -> dict:
        a, m = pad_to_multiple(img, np.ones(img.shape, bool) if mask is None else mask, 32)
        t = torch.from_numpy(a)[None, None]
        out = self.net(t, self.text, with_fine=fine)
        mean = torch.nn.functional.avg_pool2d(t, 8)
        std = (torch.nn.functional.avg_pool2d(t * t, 8) - mean * mean).clamp_min(0).sqrt()
        # valid cells: mostly inside the image mask and not featureless (a flat cell carries no evidence; the
        # networks' zero padding would otherwise give blank images position-dependent descriptors that match)
        out["cells"] = ((torch.nn.functional.avg_pool2d(torch.from_numpy(m)[None, None].float(), 8) > 0.5)
                        & (std > MIN_CELL_STD))[:, 0]
        return out

    def _full_optical(self, img0: np.ndarray, mask0: np.ndarray | None) -> dict:
        """Descriptors (coarse and fine) of the working-resolution optical image, computed once for the image object
        (a search's rectification passes and final pass share them)."""
        if self._optical is None or self._optical[0] is not img0:
            self._optical = (img0, self._describe(img0, mask0, fine=True))
        return self._optical[1]

    @torch.inference_mode()
    def _pair(self, img0, mask0, img1, mask1, fine: bool, out0: dict) -> MatchResult:
        out1 = self._describe(img1, mask1, fine)
        conf = dual_softmax(out0["coarse"], out1["coarse"], self.config.temperature, out0["cells"], out1["cells"])
        refine = window_refiner(out0["fine"], out1["fine"], self.config.fine_window) if fine else None
        k0, k1, c = dense_matches(conf, tuple(out0["coarse"].shape[-2:]), tuple(out1["coarse"].shape[-2:]),
                                  self.config.coarse_threshold, img0.shape, img1.shape, refine)
        return MatchResult(k0, k1, c, {"use_prompts": self.config.use_prompts, "sar_prior": self.config.sar_prior})

    def prepare_pair(self, image0, image1, mask0, mask1):
        """The SAR2SAR prior (``sar_prior="sar2sar"``), once per pair before any stage."""
        if self.config.sar_prior == "sar2sar":
            image1 = despeckle_display(image1, np.ones(image1.shape, bool) if mask1 is None else mask1)
        return image0, image1

    def describe_reference(self, image0, mask0):
        """Coarse descriptors of the optical image (reused by every hypothesis of a search)."""
        return self._describe(image0, mask0, fine=False)

    def coarse_match(self, image0, mask0, image1, mask1, reference=None) -> MatchResult:
        """Coarse matches only, from the optical ``reference`` descriptors when given."""
        out0 = reference if reference is not None else self._full_optical(image0, mask0)
        return self._pair(image0, mask0, image1, mask1, False, out0)

    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        return self._pair(image0, mask0, image1, mask1, True, self._full_optical(image0, mask0))


__all__ = ["PromptMIDConfig", "PromptMIDMatcher", "PromptMIDNet", "PRESETS", "build_promptmid", "load_promptmid"]
