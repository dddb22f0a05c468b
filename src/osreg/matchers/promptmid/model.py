"""The trained half of PromptMID: land-use prompt guidance and multi-granularity aggregation.

- :class:`LandUsePrompts` projects the coarse visual features into the text space of the frozen land-use bank
  (:mod:`osreg.text`: scene and land-cover classes), takes a softmax over cosine similarities (per-location
  land-use affinities), and turns the affinity-weighted class embeddings into a FiLM modulation (scale, shift) of
  the coarse features. The class embeddings are fixed prototypes: only the projections are trained.
- :class:`MultiGranularityAggregator` fuses the coarse (1/8, several scales, with a dilated context block: global
  and semantic) and the fine (1/2, scale 1: local texture) frozen features into a coarse descriptor map and a fine
  descriptor map, both L2-normalised. It is shared between optical and SAR: one descriptor space for both
  modalities by construction, with nothing modality-specific to go wrong on an unseen sensor.

The aggregator (with its prompt head) is the only trained part; :class:`PromptMIDNet` joins it to the frozen
extractors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from osreg.matchers import dense
from osreg.matchers.promptmid.config import PromptMIDConfig
from osreg.matchers.promptmid.frozen import FrozenFeatures


def _block(c_in: int, c_out: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=dilation * (k // 2), dilation=dilation),
                         nn.GroupNorm(8 if c_out % 8 == 0 else 1, c_out), nn.GELU())


class LandUsePrompts(nn.Module):
    """Per-location land-use affinities and the FiLM modulation they produce."""

    def __init__(self, hidden: int, text_dim: int, temperature: float) -> None:
        super().__init__()
        self.to_text = nn.Conv2d(hidden, text_dim, 1)
        self.from_text = nn.Linear(text_dim, hidden)
        self.film = nn.Conv2d(hidden, 2 * hidden, 1)
        self.temperature = temperature

    def forward(self, h: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h (B, C, H, W), text (K, text_dim) L2-normalised -> affinities (B, K, H, W), gamma, beta (B, C, H, W)."""
        v = F.normalize(self.to_text(h), dim=1)
        affinity = (torch.einsum("bdhw,kd->bkhw", v, text) / self.temperature).softmax(1)
        context = torch.einsum("bkhw,kd->bhwd", affinity, text)
        context = F.gelu(self.from_text(context)).permute(0, 3, 1, 2)
        gamma, beta = self.film(context).chunk(2, dim=1)
        return affinity, gamma, beta


class MultiGranularityAggregator(nn.Module):
    """Frozen coarse and fine features -> modality-invariant coarse and fine descriptor maps."""

    def __init__(self, cfg: PromptMIDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.hidden
        self.coarse_in = _block(cfg.coarse_channels, c, k=1)
        self.context = nn.Sequential(_block(c, c, dilation=1), _block(c, c, dilation=2), _block(c, c, dilation=4))
        self.prompts = LandUsePrompts(c, cfg.text_dim, cfg.prompt_temperature)
        self.coarse_out = nn.Conv2d(c, cfg.descriptor_dim, 1)
        self.fine_in = _block(cfg.fine_channels, cfg.fine_dim, k=1) if cfg.fine_channels else None
        self.coarse_to_fine = nn.Conv2d(c, cfg.fine_dim, 1)
        self.fine_out = nn.Sequential(_block(cfg.fine_dim, cfg.fine_dim), nn.Conv2d(cfg.fine_dim, cfg.fine_dim, 1))

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor | None, text: torch.Tensor | None,
                use_prompts: bool, with_fine: bool = True) -> dict[str, torch.Tensor]:
        h = self.coarse_in(coarse)
        h = h + self.context(h)
        out: dict[str, torch.Tensor] = {}
        if use_prompts and text is not None:
            out["affinity"], gamma, beta = self.prompts(h, text)
            h = h * (1 + gamma) + beta
        out["coarse"] = F.normalize(self.coarse_out(h), dim=1)
        if with_fine:
            up = F.interpolate(self.coarse_to_fine(h), scale_factor=4, mode="bilinear", align_corners=False)
            f = up if self.fine_in is None or fine is None else self.fine_in(fine) + up
            out["fine"] = F.normalize(self.fine_out(f), dim=1)
        return out


class PromptMIDNet(nn.Module):
    """Frozen extractors + trained aggregator. ``forward(images (B, 1, H, W), text)`` with H, W multiples of 32."""

    def __init__(self, cfg: PromptMIDConfig, frozen: FrozenFeatures | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.frozen = frozen if frozen is not None else FrozenFeatures(cfg)
        self.aggregator = MultiGranularityAggregator(cfg)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The aggregator's weights: all a checkpoint needs (the frozen networks load from their packages)."""
        return self.aggregator.state_dict()

    def forward(self, images: torch.Tensor, text: torch.Tensor | None, use_prompts: bool | None = None,
                with_fine: bool = True) -> dict[str, torch.Tensor]:
        coarse, fine = self.frozen(images, with_fine)
        use = self.cfg.use_prompts if use_prompts is None else use_prompts
        return self.aggregator(coarse, fine, text, use, with_fine)


def dual_softmax(desc0: torch.Tensor, desc1: torch.Tensor, temperature: float,
                 mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None) -> torch.Tensor:
    """Dual-softmax matching confidence of two (B, D, h, w) descriptor maps -> (B, N0, N1); masked cells (B, h, w)
    get 0 (:func:`osreg.matchers.dense.dual_softmax`)."""
    sim = torch.einsum("bdn,bdm->bnm", desc0.flatten(2) / temperature, desc1.flatten(2))
    return dense.dual_softmax(sim, None if mask0 is None else mask0.flatten(1),
                              None if mask1 is None else mask1.flatten(1))
