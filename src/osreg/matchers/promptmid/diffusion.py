"""Optional diffusion-feature branch of PromptMID: UNet decoder features of a local Stable Diffusion checkpoint.

Off by default: no diffusion weights ship with osreg or load offline. A user points ``diffusion_checkpoint`` at a
folder in diffusers format (``unet/`` and ``vae/`` subfolders, optionally ``scheduler/``). The image is encoded by
the VAE, noised to ``timestep`` with a fixed seed, and passed once through the UNet with an empty (zero) text
condition; the output of the second decoder block is the feature map (as in DIFT, Tang et al. 2023). The branch is
frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from osreg.errors import InputError, WeightsNotFoundError


class DiffusionFeatures(nn.Module):
    """``forward(images (B, 1, H, W) in [0, 1]) -> (B, C, h, w)`` UNet decoder features; ``channels`` is C."""

    def __init__(self, checkpoint: str | Path, timestep: int = 100, up_block: int = 1) -> None:
        super().__init__()
        root = Path(checkpoint)
        missing = [sub for sub in ("unet", "vae") if not (root / sub / "config.json").exists()]
        if missing:
            raise WeightsNotFoundError(
                f"diffusion checkpoint {root}: expected a diffusers folder with unet/ and vae/ subfolders; "
                f"missing {', '.join(m + '/config.json' for m in missing)}"
            )
        try:
            from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        except ImportError as exc:
            raise InputError("the diffusion branch needs diffusers: pip install 'osreg[diffusion]'") from exc
        load = {"local_files_only": True, "low_cpu_mem_usage": False}  # no network; no need for `accelerate`
        self.vae = AutoencoderKL.from_pretrained(root / "vae", **load).eval()
        self.unet = UNet2DConditionModel.from_pretrained(root / "unet", **load).eval()
        sched_dir = root / "scheduler"
        self.scheduler = (DDPMScheduler.from_pretrained(sched_dir, local_files_only=True)
                          if (sched_dir / "scheduler_config.json").exists() else DDPMScheduler())
        if not 0 <= timestep < self.scheduler.config.num_train_timesteps:
            raise InputError(f"diffusion timestep must be in [0, {self.scheduler.config.num_train_timesteps}), "
                             f"got {timestep}")
        self.timestep = timestep
        self.up_block = min(up_block, len(self.unet.up_blocks) - 1)
        for p in self.parameters():
            p.requires_grad_(False)
        self.channels = self._probe_channels()

    def _probe_channels(self) -> int:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) * 2 ** (len(self.unet.config.block_out_channels))
        return int(self.forward(torch.zeros(1, 1, factor, factor)).shape[1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1) * 2 - 1
        latents = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.full((latents.shape[0],), self.timestep, dtype=torch.long)
        noisy = self.scheduler.add_noise(latents, noise, t)
        cond = torch.zeros(latents.shape[0], 1, self.unet.config.cross_attention_dim)
        feats = {}
        handle = self.unet.up_blocks[self.up_block].register_forward_hook(
            lambda _m, _i, out: feats.__setitem__("x", out))
        try:
            self.unet(noisy, t, encoder_hidden_states=cond)
        finally:
            handle.remove()
        return torch.nn.functional.normalize(feats["x"], dim=1)
