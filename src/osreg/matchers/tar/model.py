"""TAR network: MSFL (multi-scale features) -> TAFE (text-assisted enhancement) -> linear-attention transformer ->
CFDM (coarse dual-softmax matching, fine expectation refinement).

MSFL is pseudo-siamese: optical and SAR each get their own stem (their low-level statistics differ: texture and
colour against speckle and layover), the deeper trunk and the feature pyramid are shared, so that both images
are described in one feature space at 1/8 and 1/2 resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from osreg.matchers.dense import (
    dual_softmax,
    sample_at,
    window_expectation,
    window_offsets,
    window_refiner,
)
from osreg.matchers.tar.config import TARConfig


def conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.skip(x))


class OrientedGradientInput(nn.Module):
    """Fixed (untrained) input channels: the intensity and its CFOG channels (absolute oriented gradients,
    smoothed, L2-normalised per pixel; see :func:`osreg.descriptors.oriented_gradient_channels`). They are
    insensitive to the contrast reversals between optical and SAR, which lets a small network trained on a CPU
    budget start from modality-robust evidence instead of learning it from raw pixels."""

    def __init__(self, n_orientations: int = 8, sigma: float = 1.0) -> None:
        super().__init__()
        sob = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
        self.register_buffer("sobel", torch.stack([sob, sob.t()])[:, None], persistent=False)
        t = torch.arange(n_orientations) * math.pi / n_orientations
        self.register_buffer("dirs", torch.stack([torch.cos(t), torch.sin(t)], 1), persistent=False)
        r = int(3 * sigma)
        g = torch.exp(-torch.arange(-r, r + 1).float() ** 2 / (2 * sigma**2))
        self.register_buffer("gauss", (g / g.sum())[None, None], persistent=False)
        self.n = n_orientations

    @property
    def channels(self) -> int:
        return 1 + self.n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.sobel)  # B, 2, H, W
        o = torch.einsum("kc,bchw->bkhw", self.dirs, g).abs()
        o = _separable_blur(o, self.gauss.flatten())
        o = 0.25 * o.roll(1, 1) + 0.5 * o + 0.25 * o.roll(-1, 1)
        # the per-pixel L2 norm written out: torch.norm over dim 1 is ~50x slower on CPU for NCHW maps
        o = o / (o.square().sum(1, keepdim=True).sqrt() + 1e-3)
        return torch.cat([x, o], 1)


def _separable_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur every channel of ``x`` (B, C, H, W) with a 1-D kernel along x, then y, with replicated borders.

    Two depthwise convolutions (one group per channel): on a CPU about 5x faster than weighted sums of shifted
    views (45 -> 8 ms for 8 channels of 512 x 512), with the same result up to float rounding.
    """
    r = kernel.numel() // 2
    c = x.shape[1]
    kx = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), kx.transpose(2, 3), groups=c)


class MSFL(nn.Module):
    """Multi-scale feature learning: modality stems (1/2), shared trunk (1/4, 1/8), FPN to 1/8 and 1/2."""

    def __init__(self, cfg: TARConfig) -> None:
        super().__init__()
        c0 = cfg.stem_channels
        c1, c2 = cfg.trunk_channels
        self.inputs = OrientedGradientInput()
        cin = self.inputs.channels
        self.stems = nn.ModuleList([nn.Sequential(conv_bn(cin, c0, 2), conv_bn(c0, c0)) for _ in range(2)])
        self.layer2 = nn.Sequential(ResBlock(c0, c1, 2), ResBlock(c1, c1))
        self.layer3 = nn.Sequential(ResBlock(c1, c2, 2), ResBlock(c2, c2))
        self.coarse_out = nn.Conv2d(c2, cfg.d_model, 1)
        self.lat2 = nn.Conv2d(c1, c2, 1)
        self.smooth2 = conv_bn(c2, c1)
        self.lat1 = nn.Conv2d(c0, c1, 1)
        self.fine_out = nn.Sequential(conv_bn(c1, c1), nn.Conv2d(c1, cfg.fine_dim, 1))

    def forward(self, x: torch.Tensor, modality: int, fine: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, 1, H, W), H and W multiples of 8; modality 0 optical, 1 SAR. Returns (coarse, fine or None)."""
        # channels-last: the CPU convolutions of the stems, trunk and pyramid run ~25 % faster (same output to 1e-6).
        # Inference only: with torch 2.13 (CPU) the backward pass of these channels-last convolutions aborts the process
        # ("double free or corruption") on some machines, so training keeps the default layout.
        x = self.inputs(x)
        if not torch.is_grad_enabled():
            x = x.contiguous(memory_format=torch.channels_last)
        x1 = self.stems[modality](x)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        coarse = self.coarse_out(x3)
        if not fine:
            return coarse, None
        up2 = self.smooth2(F.interpolate(x3, scale_factor=2.0, mode="bilinear", align_corners=False) + self.lat2(x2))
        up1 = F.interpolate(up2, scale_factor=2.0, mode="bilinear", align_corners=False) + self.lat1(x1)
        return coarse, self.fine_out(up1)


def sine_position_encoding(d: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """LoFTR-style 2-D sinusoidal encoding, (d, h, w)."""
    pe = torch.zeros(d, h, w, device=device)
    y = torch.arange(h, device=device, dtype=torch.float32)[:, None].expand(h, w)
    x = torch.arange(w, device=device, dtype=torch.float32)[None, :].expand(h, w)
    div = torch.exp(torch.arange(0, d // 2, 2, device=device).float() * (-math.log(10000.0) / (d // 2)))[:, None, None]
    pe[0::4] = torch.sin(x[None] * div)
    pe[1::4] = torch.cos(x[None] * div)
    pe[2::4] = torch.sin(y[None] * div)
    pe[3::4] = torch.cos(y[None] * div)
    return pe


class TAFE(nn.Module):
    """Text-assisted feature enhancement: coarse visual tokens attend to projected text descriptors; the result is
    added through a learned gate (tanh, initialised at 0), so text can be switched off without changing weights."""

    def __init__(self, cfg: TARConfig) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(cfg.text_dim, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.attn = nn.MultiheadAttention(cfg.d_model, cfg.n_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model))
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N, d), text (K, text_dim) -> enhanced tokens, attention over classes (B, N, K)."""
        t = self.proj(text)[None].expand(tokens.shape[0], -1, -1)
        a, w = self.attn(self.norm(tokens), t, t, need_weights=True)
        return tokens + torch.tanh(self.gate) * self.mlp(a), w


class LinearAttentionLayer(nn.Module):
    """LoFTR encoder layer with linear attention (elu + 1 feature map)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h = heads
        self.q, self.k, self.v = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.merge = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * d, 2 * d, bias=False), nn.ReLU(True), nn.Linear(2 * d, d, bias=False))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        msg = self.norm1(self.merge(self._message(x, src, src_mask)))
        return x + self.norm2(self.mlp(torch.cat([x, msg], -1)))

    def _message(self, x: torch.Tensor, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of x (B, N, d) over src, (B, N, d) before the merge."""
        b, n, d = x.shape
        e = d // self.h  # explicit: a compact token set may be empty
        q = F.elu(self.q(x).view(b, n, self.h, e)) + 1
        k = F.elu(self.k(src).view(b, src.shape[1], self.h, e)) + 1
        v = self.v(src).view(b, src.shape[1], self.h, e)
        if src_mask is not None:
            k = k * src_mask[:, :, None, None]
            v = v * src_mask[:, :, None, None]
        length = src.shape[1]
        v = v / length
        kv = torch.einsum("bshd,bshv->bhdv", k, v)
        z = 1.0 / (torch.einsum("bnhd,bhd->bnh", q, k.sum(1)) + 1e-6)
        return (torch.einsum("bnhd,bhdv,bnh->bnhv", q, kv, z) * length).reshape(b, n, d)


class WindowAttentionLayer(LinearAttentionLayer):
    """The same layer with softmax attention, for the few dozen tokens of matched fine windows."""

    def _message(self, x: torch.Tensor, src: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        n, k, d = x.shape
        q = self.q(x).view(n, k, self.h, -1).transpose(1, 2)
        key = self.k(src).view(n, src.shape[1], self.h, -1).transpose(1, 2)
        v = self.v(src).view(n, src.shape[1], self.h, -1).transpose(1, 2)
        return F.scaled_dot_product_attention(q, key, v).transpose(1, 2).reshape(n, k, d)


class FineWindowRefiner(nn.Module):
    """CFDM's fine stage with window attention (``TARConfig.fine_attention``), as in LoFTR's fine matching.

    For each coarse match, a ``fine_window`` x ``fine_window`` window of the 1/2 map is read around its point in
    each image; every window token gets the match's coarse token (after TAFE and the coarse transformer) and a
    learned position; a self- and a cross-attention layer let the two windows exchange context across the
    modality gap; the centre token of window 0 is then located in window 1 by the expectation of a softmax over
    their dot products (sub-pixel, with its spread as uncertainty).
    """

    def __init__(self, cfg: TARConfig) -> None:
        super().__init__()
        d = cfg.fine_dim
        self.window = cfg.fine_window
        self.coarse_proj = nn.Linear(cfg.d_model, d)
        self.merge = nn.Linear(2 * d, d)
        self.pos = nn.Parameter(0.02 * torch.randn(1, cfg.fine_window**2, d))
        self.layers = nn.ModuleList([WindowAttentionLayer(d, 2) for _ in range(2)])  # self, cross

    def forward(self, fine0: torch.Tensor, fine1: torch.Tensor, tokens0: torch.Tensor, tokens1: torch.Tensor,
                b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, xy0: torch.Tensor, xy1: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """fine0/1: (B, C, h, w) fine maps; tokens0/1: (B, N, d_model) coarse tokens; b, i, j: batch item and
        coarse cells of each match; xy0, xy1: (M, 2) fine-pixel window centres. Returns offsets (M, 2) in fine
        pixels from xy1 and the heatmap spread (M,)."""
        if len(b) == 0:
            return fine0.new_zeros((0, 2)), fine0.new_zeros(0)
        offs = window_offsets(self.window, fine0.device)
        k = len(offs)
        w0 = sample_at(fine0, b, xy0[:, None, :] + offs[None])  # M, K, C
        w1 = sample_at(fine1, b, xy1[:, None, :] + offs[None])
        c0 = self.coarse_proj(tokens0[b, i])[:, None].expand(-1, k, -1)
        c1 = self.coarse_proj(tokens1[b, j])[:, None].expand(-1, k, -1)
        w0 = self.merge(torch.cat([w0, c0], -1)) + self.pos
        w1 = self.merge(torch.cat([w1, c1], -1)) + self.pos
        w0, w1 = self.layers[0](w0, w0), self.layers[0](w1, w1)
        w0, w1 = self.layers[1](w0, w1), self.layers[1](w1, w0)
        centre = w0[:, k // 2]
        return window_expectation(torch.softmax(torch.einsum("mc,mkc->mk", centre, w1) / centre.shape[-1] ** 0.5, 1),
                                  offs)


class TARModel(nn.Module):
    """The full network. :meth:`forward` returns coarse features, the dual-softmax confidence matrix and fine maps;
    :mod:`osreg.matchers.dense` turns them into matches."""

    def __init__(self, cfg: TARConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.msfl = MSFL(cfg)
        self.tafe = TAFE(cfg)
        self.layers = nn.ModuleList([LinearAttentionLayer(cfg.d_model, cfg.n_heads) for _ in cfg.layers])
        self.fine_proj = nn.Conv2d(cfg.fine_dim, cfg.fine_dim, 1)
        self.refiner = FineWindowRefiner(cfg) if cfg.fine_attention else None

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, text: torch.Tensor | None,
                mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None, use_text: bool | None = None,
                fine: bool = True, features0: tuple | None = None, compact: bool = False) -> dict[str, torch.Tensor]:
        """img0, img1: (B, 1, H, W) in [0, 1], sides multiples of 8; text: (K, text_dim) or None;
        mask0/mask1: (B, H/8, W/8) bool valid coarse cells; fine: also compute the fine maps;
        features0: ``self.msfl(img0, 0, fine)`` computed beforehand (reused across SAR hypotheses);
        compact: with B = 1, leave the masked cells out of the attention and of the confidence matrix (the same
        result for the valid cells: their keys and values are masked anyway), which saves most of the work on a
        turned or rescaled SAR canvas; ``conf`` then has one row per valid cell of image 0 and one column per valid
        cell of image 1, and ``cells0`` / ``cells1`` give their flat indices in the coarse grids."""
        cfg = self.cfg
        use_text = cfg.use_text if use_text is None else use_text
        c0, f0 = features0 if features0 is not None else self.msfl(img0, 0, fine)
        c1, f1 = self.msfl(img1, 1, fine)
        b, d, h0, w0 = c0.shape
        h1, w1 = c1.shape[2:]
        t0 = (c0 + sine_position_encoding(d, h0, w0, c0.device)[None]).flatten(2).transpose(1, 2)
        t1 = (c1 + sine_position_encoding(d, h1, w1, c1.device)[None]).flatten(2).transpose(1, 2)
        m0 = None if mask0 is None else mask0.flatten(1).float()
        m1 = None if mask1 is None else mask1.flatten(1).float()
        out: dict[str, torch.Tensor] = {}
        if compact and b == 1:
            out["cells0"], out["cells1"] = (torch.arange(t.shape[1], device=t.device) if m is None else
                                            torch.nonzero(m[0]).squeeze(1)
                                            for t, m in ((t0, m0), (t1, m1)))
            t0, t1 = t0[:, out["cells0"]], t1[:, out["cells1"]]
            m0 = m1 = None
        if use_text and text is not None:
            t0, out["text_attn0"] = self.tafe(t0, text)
            t1, out["text_attn1"] = self.tafe(t1, text)
        for kind, layer in zip(cfg.layers, self.layers, strict=True):
            if kind == "self":
                t0, t1 = layer(t0, t0, m0), layer(t1, t1, m1)
            else:
                t0, t1 = layer(t0, t1, m1), layer(t1, t0, m0)
        t0, t1 = t0 / d**0.5, t1 / d**0.5
        sim = torch.einsum("bnd,bmd->bnm", t0 / cfg.temperature, t1)
        out["conf"] = dual_softmax(sim, None if m0 is None else m0.bool(), None if m1 is None else m1.bool())
        if fine:
            out["fine0"] = self.fine_proj(f0)
            out["fine1"] = self.fine_proj(f1)
            out["tokens0"], out["tokens1"] = t0, t1  # compact: rows of cells0 / cells1
        out["coarse_shape0"] = torch.tensor([h0, w0])
        out["coarse_shape1"] = torch.tensor([h1, w1])
        return out

    def fine_refine(self, out: dict[str, torch.Tensor], b: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                    xy0: torch.Tensor, xy1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fine offsets (fine px from xy1) and spreads of matches (b, i, j) at fine-pixel points xy0 / xy1, from the
        output of :meth:`forward` (with ``fine=True``): the window-attention refiner when the model has one, else
        the plain correlation window of :func:`osreg.matchers.dense.fine_refine`."""
        if self.refiner is not None:
            if "cells0" in out:  # compact tokens hold the valid cells only, in grid order
                i, j = torch.searchsorted(out["cells0"], i), torch.searchsorted(out["cells1"], j)
            return self.refiner(out["fine0"], out["fine1"], out["tokens0"], out["tokens1"], b, i, j, xy0, xy1)
        return window_refiner(out["fine0"], out["fine1"], self.cfg.fine_window)(b, i, j, xy0, xy1)
