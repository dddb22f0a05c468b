"""The CSTF network: two feature encoders, correspondence maps over several regions, a fully convolutional
classifier with a "no match" class.

For an optical keypoint ``p`` and its predicted SAR position (the working pair is pre-aligned by the georeference or
the global search, so it is ``p`` itself), the candidates are the positions ``p + d`` on a grid of step ``stride``
within ``radius``. The keypoint's template is the ``template`` x ``template`` px patch of optical features centred on
it, split into ``K = 4`` regions (its quadrants). For every candidate, each region's features are correlated with the
SAR features at the same place relative to the candidate: one similarity map per region (the cross-spatial
correspondence maps), and a fifth channel marks the SAR keypoints near each candidate, weighted by how well their scale
agrees with the optical keypoint's. The head (3x3 convolutions) turns the ``(5, S, S)`` maps into ``S * S`` candidate
logits plus one no-match logit; matching is a softmax over those ``S * S + 1`` classes. A direct path adds the sum of
the region maps (the whole template's correlation) to the candidate logits, so that an untrained head already prefers
the candidate all regions agree on.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osreg.matchers.cstf.config import CSTFConfig

N_REGIONS = 4  # the quadrants of the template
LEARNED_INIT_STD = 0.004  # the learned part's last weights at initialisation (its norm ~0.1 of the fixed part's)
MAPS_CHUNK = 128  # keypoints per chunk of correspondence maps (a cache-size choice; no effect on values)


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """Image and oriented-gradient channels -> L2-normalised features at half resolution.

    The feature is the concatenation of a learned part and a fixed one: the oriented-gradient channels, made
    zero-mean across orientations and averaged over 5 x 5 pixels (a CFOG-like descriptor). The learned part starts
    small (about a tenth of the feature's norm), so an untrained network mostly compares CFOG-like structure, and
    training adds what that misses. Small, not zero: the maps correlate the optical encoder's learned part with the
    SAR encoder's, and when both are exactly zero each one's gradient is the other, zero, so neither ever trains.
    """

    def __init__(self, cfg: CSTFConfig) -> None:
        super().__init__()
        c1, c2 = cfg.channels
        self.net = nn.Sequential(_block(1 + cfg.n_orientations, c1), _block(c1, c2, stride=2), _block(c2, c2),
                                 _block(c2, c2, dilation=2), nn.Conv2d(c2, cfg.dim, 1))
        nn.init.normal_(self.net[-1].weight, std=LEARNED_INIT_STD)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last for inference: the CPU convolutions run about 1/3 faster (same output); training keeps the
        # default layout (its backward pass in channels-last aborts on some CPUs with torch 2.13, as for TAR)
        learned = self.net(x.contiguous(memory_format=torch.channels_last) if not torch.is_grad_enabled() else x)
        ogc = x[:, 1:]
        ogc = ogc - ogc.mean(dim=1, keepdim=True)
        # ceil_mode: an odd side keeps its last column (row) of pixels, as the learned part's strided convolution
        # does, so that both parts have the same size; on even sides it changes nothing
        fixed = F.avg_pool2d(F.avg_pool2d(ogc, 5, stride=1, padding=2), 2, ceil_mode=True)
        fixed = F.normalize(fixed, dim=1)
        return F.normalize(torch.cat([learned.contiguous(), fixed], dim=1), dim=1)


class CorrespondenceHead(nn.Module):
    """``(N, K + 1, S, S)`` correspondence maps -> ``(N, S * S + 1)`` logits (the last: no match)."""

    def __init__(self, cfg: CSTFConfig) -> None:
        super().__init__()
        c = cfg.head_channels
        self.body = nn.Sequential(nn.Conv2d(N_REGIONS + 1, c, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))
        self.score = nn.Conv2d(c, 1, 3, padding=1)
        self.none = nn.Linear(2 * c, 1)
        self.direct = nn.Parameter(torch.tensor(4.0))  # weight of the summed region similarities (a prior path)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        h = self.body(maps)
        # the learned score plus the plain sum of the region similarities: from the start the classifier prefers
        # the candidate all regions agree on, and learns where to depart from that
        cand = (self.score(h) + self.direct * maps[:, :N_REGIONS].mean(1, keepdim=True)).flatten(1)
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return torch.cat([cand, self.none(pooled)], dim=1)


def _sample(feat: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``(1, D, h, w)`` half-resolution features (feature pixel ``j`` covers image pixels ``2j``
    and ``2j + 1``; an odd side's last feature pixel covers one) at full-resolution pixel positions ``xy``
    ``(..., 2)``; returns ``(D, ...)``."""
    h, w = feat.shape[-2:]
    # full-res pixel x -> half-res pixel (x + 0.5) / 2 - 0.5 -> normalised coordinate (align_corners=False)
    gx = ((xy[..., 0] + 0.5) / 2 / w) * 2 - 1
    gy = ((xy[..., 1] + 0.5) / 2 / h) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2)
    out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(feat.shape[1], *xy.shape[:-1])


def _correlate(window: torch.Tensor, template: torch.Tensor, s: int) -> torch.Tensor:
    """Per keypoint, the correlation of its ``(D, h, h)`` template with every ``h x h`` place of its
    ``(D, s + h - 1, s + h - 1)`` window, summed over the channels: ``(N, s, s)``. Computed with FFTs (the template
    zero-padded to the window: no wrap-around for the ``s x s`` valid places), far faster on a CPU than a
    convolution with one group per keypoint."""
    size = window.shape[-2:]
    fw = torch.fft.rfft2(window)
    ft = torch.fft.rfft2(template, s=size)
    corr = torch.fft.irfft2((fw * ft.conj()).sum(1), s=size)
    return corr[:, :s, :s]


class CSTFNet(nn.Module):
    def __init__(self, cfg: CSTFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder0 = Encoder(cfg)  # optical
        self.encoder1 = Encoder(cfg)  # SAR: its own weights (pseudo-siamese), the modalities differ
        self.head = CorrespondenceHead(cfg)
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # similarity scale (learned)

    def keypoint_channel(self, kp0, kp1) -> torch.Tensor:
        """The SAR-keypoint channel ``(N, S, S)`` of optical keypoints ``kp0`` on this network's candidate lattice,
        from SAR keypoints ``kp1`` (:class:`~osreg.matchers.cstf.keypoints.Keypoints`; :func:`keypoint_prior`)."""
        steps = np.arange(-self.cfg.radius, self.cfg.radius + 1, self.cfg.stride, dtype=np.float32)
        return torch.from_numpy(keypoint_prior(kp0.xy, steps, kp0.scale, kp1.xy, kp1.scale))

    def _lattice(self, n: int, shift: float) -> torch.Tensor:
        """``(n, n, 2)`` offsets on the feature grid (``stride`` px apart) centred on ``shift``."""
        t = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * self.cfg.stride + shift
        ty, tx = torch.meshgrid(t, t, indexing="ij")
        return torch.stack([tx, ty], dim=-1)

    def correspondence_maps(self, f0: torch.Tensor, f1: torch.Tensor, xy0: torch.Tensor, pred1: torch.Tensor,
                            prior: torch.Tensor, radius: int | None = None) -> torch.Tensor:
        """``(N, K + 1, S, S)`` maps for keypoints ``xy0`` ``(N, 2)`` of image 0 with predicted positions ``pred1``
        in image 1 and the SAR-keypoint channel ``prior`` ``(N, S, S)``.

        Computed in chunks of ``MAPS_CHUNK`` keypoints: the same values, but the windows and their spectra of one
        chunk stay in cache (on 2 CPU cores, 512 keypoints take about half the time of one batch)."""
        if len(xy0) > MAPS_CHUNK:
            return torch.cat([self.correspondence_maps(f0, f1, xy0[i:i + MAPS_CHUNK],
                                                       pred1[i:i + MAPS_CHUNK], prior[i:i + MAPS_CHUNK], radius)
                              for i in range(0, len(xy0), MAPS_CHUNK)])
        r = self.cfg.radius if radius is None else radius
        t = self.cfg.template // self.cfg.stride  # template side in feature cells
        s = 2 * r // self.cfg.stride + 1
        n = len(xy0)
        tmpl = _sample(f0, xy0[:, None, None] + self._lattice(t, 0.0)[None])  # (D, N, t, t)
        win = _sample(f1, pred1[:, None, None] + self._lattice(s + t - 1, 0.0)[None])  # (D, N, L, L)
        d = tmpl.shape[0]
        win = win.permute(1, 0, 2, 3)
        tmpl = tmpl.permute(1, 0, 2, 3)
        h = t // 2
        win = win.reshape(n, d, s + t - 1, s + t - 1)
        maps = []
        for by in (0, 1):
            for bx in (0, 1):
                wt = tmpl[:, :, by * h:(by + 1) * h, bx * h:(bx + 1) * h]
                part = win[:, :, by * h:by * h + s + h - 1, bx * h:bx * h + s + h - 1]
                maps.append(_correlate(part, wt, s))  # (N, S, S)
        sim = torch.stack(maps, dim=1) * (self.log_scale.exp() / (h * h))
        return torch.cat([sim, prior[:, None]], dim=1)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, xy0: torch.Tensor, pred1: torch.Tensor,
                prior: torch.Tensor, radius: int | None = None) -> torch.Tensor:
        """Logits ``(N, S * S + 1)`` for one image pair (``x0``, ``x1``: ``(1, C, H, W)`` encoder inputs)."""
        f0, f1 = self.encoder0(x0), self.encoder1(x1)
        maps = self.correspondence_maps(f0, f1, xy0, pred1, prior, radius)
        return self.head(maps)


def encoder_input(img: np.ndarray, n_orientations: int) -> torch.Tensor:
    """``(1, 1 + n, H, W)``: the image and its oriented-gradient channels."""
    from osreg.descriptors import oriented_gradient_channels

    ch = oriented_gradient_channels(img, n_orientations, 1.0)
    return torch.from_numpy(np.concatenate([img[None].astype(np.float32), ch])[None])


def keypoint_prior(xy0: np.ndarray, steps: np.ndarray, scale0: np.ndarray, kp1_xy: np.ndarray,
                   kp1_scale: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """The SAR-keypoint channel: for each optical keypoint ``n`` at ``xy0[n]`` and each candidate ``(i, j)`` at
    ``xy0[n] + (steps[j], steps[i])`` (the candidate lattice, :meth:`CSTFNet.keypoint_channel`), the sum over SAR
    keypoints of a Gaussian of their distance, weighted by the agreement of their scale with the optical keypoint's
    (``exp(-log(s1 / s0)^2 / 0.5)``); ``(N, S, S)``.

    SAR keypoints farther than the lattice's reach plus ``3 sigma`` are left out. The Gaussian of a distance is the
    product of the Gaussians of its x and y parts, so each keypoint's map is one small matrix product over its
    neighbours instead of a Gaussian per candidate and neighbour."""
    from scipy.spatial import cKDTree

    n, s = len(xy0), len(steps)
    if len(kp1_xy) == 0 or n == 0:
        return np.zeros((n, s, s), np.float32)
    near = cKDTree(kp1_xy).query_ball_point(xy0, (float(np.abs(steps).max()) + 3 * sigma) * np.sqrt(2))
    m = max(1, max(len(x) for x in near))
    idx = np.zeros((n, m), int)  # each keypoint's neighbours, padded with weight 0
    wgt = np.zeros((n, m))
    for i, x in enumerate(near):
        idx[i, :len(x)] = x
        wgt[i, :len(x)] = np.exp(-np.log(kp1_scale[x] / scale0[i]) ** 2 / 0.5)
    q = kp1_xy[idx]  # (N, M, 2)
    c = xy0[:, None, :] + np.asarray(steps, float)[None, :, None]  # (N, S, 2): the lattice's x (and y) positions
    gx = np.exp(-(c[:, :, None, 0] - q[:, None, :, 0]) ** 2 / (2 * sigma**2))  # (N, S, M)
    gy = np.exp(-(c[:, :, None, 1] - q[:, None, :, 1]) ** 2 / (2 * sigma**2)) * wgt[:, None, :]
    return np.einsum("nim,njm->nij", gy, gx).astype(np.float32)


def decode(logits: torch.Tensor, cells: int, stride: int, none_max: float = 0.5
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The winning candidate's displacement ``(N, 2)`` (sub-cell: the probability-weighted mean of its 3x3 cells),
    the candidates' probability mass on those cells ``(N,)`` (renormalised over the candidates), and whether the
    keypoint is matched at all: the "no match" class has probability below ``none_max``.

    The winner is taken among the candidates, not over all classes: the candidates' probability is spread over
    neighbouring cells, so a single cell rarely outweighs "no match" even when the candidates as a whole do.
    """
    prob = logits.softmax(dim=1)
    p_none = prob[:, -1]
    grid = (prob[:, :-1] / (1 - p_none).clamp(min=1e-12)[:, None]).reshape(-1, cells, cells)
    best = grid.flatten(1).argmax(dim=1)
    iy, ix = torch.div(best, cells, rounding_mode="floor"), best % cells
    padded = F.pad(grid, (1, 1, 1, 1))
    n = torch.arange(len(best))
    win = torch.stack([padded[n, iy + dy, ix + dx] for dy in range(3) for dx in range(3)], 1).reshape(-1, 3, 3)
    mass = win.sum((1, 2))
    d = torch.tensor([-1.0, 0.0, 1.0])
    sub_x = (win.sum(1) * d).sum(1) / mass.clamp(min=1e-9)
    sub_y = (win.sum(2) * d).sum(1) / mass.clamp(min=1e-9)
    r = (cells - 1) // 2
    disp = torch.stack([(ix.float() + sub_x - r) * stride, (iy.float() + sub_y - r) * stride], 1)
    return disp, mass, p_none < none_max


__all__ = ["CSTFNet", "decode", "encoder_input", "keypoint_prior"]
