"""The CSTF network: two feature encoders, correspondence maps over several regions, a fully convolutional
classifier with a "no match" class.

For an optical keypoint ``p`` with scale ``s`` and a predicted SAR position ``c0`` (the working pair is pre-aligned by
the georeference or the global search, so ``c0 = p``), the candidates are the positions ``c0 + d`` on a grid of step
``stride`` within ``radius``. For each of ``K = 5`` regions (the keypoint and four around it at ``context * s``
pixels, bounded) the similarity of the optical feature at ``p + o_k`` with the SAR feature at ``c + o_k`` for every
candidate ``c`` forms one channel of the correspondence map; a sixth channel marks the SAR keypoints near each
candidate, weighted by how well their scale agrees with ``s``. The head (3x3 convolutions) turns the ``(6, S, S)`` map
into ``S * S`` candidate logits and one no-match logit; matching is a softmax over those ``S * S + 1`` classes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from osreg.matchers.cstf.config import CSTFConfig

N_REGIONS = 5
REGION_DIRECTIONS = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float32)


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """Image and oriented-gradient channels -> L2-normalised features at half resolution."""

    def __init__(self, cfg: CSTFConfig) -> None:
        super().__init__()
        c1, c2 = cfg.channels
        self.net = nn.Sequential(_block(1 + cfg.n_orientations, c1), _block(c1, c2, stride=2), _block(c2, c2),
                                 _block(c2, c2, dilation=2), nn.Conv2d(c2, cfg.dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class CorrespondenceHead(nn.Module):
    """``(N, K + 1, S, S)`` correspondence maps -> ``(N, S * S + 1)`` logits (the last: no match)."""

    def __init__(self, cfg: CSTFConfig) -> None:
        super().__init__()
        c = cfg.head_channels
        self.body = nn.Sequential(nn.Conv2d(N_REGIONS + 1, c, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))
        self.score = nn.Conv2d(c, 1, 3, padding=1)
        self.none = nn.Linear(2 * c, 1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        h = self.body(maps)
        cand = self.score(h).flatten(1)
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return torch.cat([cand, self.none(pooled)], dim=1)


def _sample(feat: torch.Tensor, xy: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of ``(1, D, h, w)`` half-resolution features at full-resolution pixel positions ``xy``
    ``(..., 2)`` of an image of ``size`` (H, W); returns ``(D, ...)``."""
    H, W = size
    h, w = feat.shape[-2:]
    # full-res pixel x -> half-res pixel (x + 0.5) / 2 - 0.5 -> normalised coordinate (align_corners=False)
    gx = ((xy[..., 0] + 0.5) / (W / w) / w) * 2 - 1
    gy = ((xy[..., 1] + 0.5) / (H / h) / h) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2)
    out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(feat.shape[1], *xy.shape[:-1])


class CSTFNet(nn.Module):
    def __init__(self, cfg: CSTFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder0 = Encoder(cfg)  # optical
        self.encoder1 = Encoder(cfg)  # SAR: its own weights (pseudo-siamese), the modalities differ
        self.head = CorrespondenceHead(cfg)
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # similarity temperature (learned)

    def offsets(self, scale: torch.Tensor) -> torch.Tensor:
        """``(N, K, 2)`` region offsets for keypoints of ``scale`` ``(N,)``."""
        rho = (self.cfg.context * scale).clamp(self.cfg.context_min, self.cfg.context_max)
        return rho[:, None, None] * torch.from_numpy(REGION_DIRECTIONS).to(scale)[None]

    def candidate_offsets(self, radius: int | None = None) -> torch.Tensor:
        """``(S, S, 2)`` candidate displacements from the predicted position (x then y)."""
        r = self.cfg.radius if radius is None else radius
        d = torch.arange(-r, r + 1, self.cfg.stride, dtype=torch.float32)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        return torch.stack([dx, dy], dim=-1)

    def correspondence_maps(self, f0: torch.Tensor, f1: torch.Tensor, size0: tuple[int, int], size1: tuple[int, int],
                            xy0: torch.Tensor, scale0: torch.Tensor, pred1: torch.Tensor, prior: torch.Tensor,
                            radius: int | None = None) -> torch.Tensor:
        """``(N, K + 1, S, S)`` maps for keypoints ``xy0`` ``(N, 2)`` of image 0 with predicted positions ``pred1``
        in image 1 and the SAR-keypoint channel ``prior`` ``(N, S, S)``."""
        off = self.offsets(scale0)  # (N, K, 2)
        cand = pred1[:, None, None] + self.candidate_offsets(radius).to(pred1)[None]  # (N, S, S, 2)
        v0 = _sample(f0, xy0[:, None] + off, size0)  # (D, N, K)
        pos1 = cand[:, None] + off[:, :, None, None]  # (N, K, S, S, 2)
        v1 = _sample(f1, pos1, size1)  # (D, N, K, S, S)
        sim = torch.einsum("dnk,dnkij->nkij", v0, v1) * self.log_scale.exp()
        return torch.cat([sim, prior[:, None]], dim=1)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, xy0: torch.Tensor, scale0: torch.Tensor,
                pred1: torch.Tensor, prior: torch.Tensor, radius: int | None = None) -> torch.Tensor:
        """Logits ``(N, S * S + 1)`` for one image pair (``x0``, ``x1``: ``(1, C, H, W)`` encoder inputs)."""
        f0, f1 = self.encoder0(x0), self.encoder1(x1)
        maps = self.correspondence_maps(f0, f1, tuple(x0.shape[-2:]), tuple(x1.shape[-2:]), xy0, scale0, pred1,
                                        prior, radius)
        return self.head(maps)


def encoder_input(img: np.ndarray, n_orientations: int) -> torch.Tensor:
    """``(1, 1 + n, H, W)``: the image and its oriented-gradient channels."""
    from osreg.descriptors import oriented_gradient_channels

    ch = oriented_gradient_channels(img, n_orientations, 1.0)
    return torch.from_numpy(np.concatenate([img[None].astype(np.float32), ch])[None])


def keypoint_prior(cand_xy: np.ndarray, scale0: np.ndarray, kp1_xy: np.ndarray, kp1_scale: np.ndarray,
                   sigma: float = 1.5) -> np.ndarray:
    """The SAR-keypoint channel: for each optical keypoint ``n`` and candidate ``(i, j)`` at ``cand_xy`` ``(N, S, S, 2)``,
    the sum over SAR keypoints of a Gaussian of their distance, weighted by the agreement of their scale with the
    optical keypoint's (``exp(-log(s1 / s0)^2 / 0.5)``)."""
    from scipy.spatial import cKDTree

    n, s = cand_xy.shape[:2]
    out = np.zeros((n, s, s), np.float32)
    if len(kp1_xy) == 0 or n == 0:
        return out
    tree = cKDTree(kp1_xy)
    centre = cand_xy[:, s // 2, s // 2]
    reach = float(np.abs(cand_xy[0, 0, 0] - centre[0]).max()) + 3 * sigma
    for i, near in enumerate(tree.query_ball_point(centre, reach * np.sqrt(2))):
        if not near:
            continue
        q = kp1_xy[near]
        wgt = np.exp(-np.log(kp1_scale[near] / scale0[i]) ** 2 / 0.5)
        d2 = ((cand_xy[i][:, :, None, :] - q[None, None]) ** 2).sum(-1)
        out[i] = (np.exp(-d2 / (2 * sigma**2)) * wgt[None, None]).sum(-1)
    return out


def decode(logits: torch.Tensor, cells: int, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Winning candidate displacement ``(N, 2)`` (sub-cell: the probability-weighted mean of its 3x3 cells), its
    probability mass ``(N,)`` over those cells, and whether the winner is a candidate (not "no match")."""
    prob = logits.softmax(dim=1)
    best = prob.argmax(dim=1)
    is_match = best < cells * cells
    grid = prob[:, :-1].reshape(-1, cells, cells)
    iy, ix = torch.div(best.clamp(max=cells * cells - 1), cells, rounding_mode="floor"), best.clamp(
        max=cells * cells - 1) % cells
    padded = F.pad(grid, (1, 1, 1, 1))
    n = torch.arange(len(best))
    win = torch.stack([padded[n, iy + dy, ix + dx] for dy in range(3) for dx in range(3)], 1).reshape(-1, 3, 3)
    mass = win.sum((1, 2))
    d = torch.tensor([-1.0, 0.0, 1.0])
    sub_x = (win.sum(1) * d).sum(1) / mass.clamp(min=1e-9)
    sub_y = (win.sum(2) * d).sum(1) / mass.clamp(min=1e-9)
    r = (cells - 1) // 2
    disp = torch.stack([(ix.float() + sub_x - r) * stride, (iy.float() + sub_y - r) * stride], 1)
    return disp, mass, is_match


__all__ = ["CSTFNet", "decode", "encoder_input", "keypoint_prior"]
