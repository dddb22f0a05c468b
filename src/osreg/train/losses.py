"""Losses for coarse-to-fine dense matching, with ground truth from a homography per sample."""

from __future__ import annotations

import torch

from osreg.matchers.tar.matching import cell_centres


def apply_h(H: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """H (B, 3, 3) applied to xy (N, 2) -> (B, N, 2)."""
    p = torch.cat([xy, torch.ones_like(xy[:, :1])], 1)
    q = torch.einsum("bij,nj->bni", H, p)
    return q[..., :2] / q[..., 2:3]


def coarse_ground_truth(H: torch.Tensor, valid1: torch.Tensor, shape0: tuple[int, int], shape1: tuple[int, int]):
    """For every coarse cell of image 0, the coarse cell of image 1 holding its true position.

    Returns (b, i, j, q) of the valid correspondences: batch, cell index in 0, cell index in 1, and the true
    image-1 position q (image pixels).
    """
    h0, w0 = shape0
    h1, w1 = shape1
    p = cell_centres(h0, w0, H.device)
    q = apply_h(H, p)  # B, N, 2
    cj = torch.floor((q[..., 0] + 0.5) / 8).long()
    ci = torch.floor((q[..., 1] + 0.5) / 8).long()
    inside = (cj >= 0) & (cj < w1) & (ci >= 0) & (ci < h1)
    H1, W1 = valid1.shape[1:]
    qx = q[..., 0].round().long().clamp(0, W1 - 1)
    qy = q[..., 1].round().long().clamp(0, H1 - 1)
    bidx = torch.arange(H.shape[0], device=H.device)[:, None].expand_as(qx)
    inside &= valid1[bidx, qy, qx]
    b, i = torch.nonzero(inside, as_tuple=True)
    j = ci[b, i] * w1 + cj[b, i]
    return b, i, j, q[b, i]


def focal_loss(conf: torch.Tensor, b, i, j, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on the dual-softmax confidence at the true assignments."""
    if len(b) == 0:
        return conf.sum() * 0
    p = conf[b, i, j].clamp(1e-6, 1 - 1e-6)
    return (-alpha * (1 - p) ** gamma * torch.log(p)).mean()


def fine_loss(pred: torch.Tensor, std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 of the fine offset, weighted by the inverse predicted spread (detached, normalised to mean 1)."""
    if len(pred) == 0:
        return pred.sum() * 0
    w = 1.0 / std.detach().clamp(min=1e-3)
    w = w / w.mean()
    return (w * ((pred - target) ** 2).sum(-1)).mean()
