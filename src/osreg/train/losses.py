"""Losses for coarse-to-fine dense matching, with ground truth from a homography per sample."""

from __future__ import annotations

import torch

from osreg.matchers.dense import cell_centres, coarse_matches


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


def _fine_xy(idx: torch.Tensor, w: int) -> torch.Tensor:
    """Fine-pixel position (x, y) of coarse cells given by flat index on a grid w cells wide."""
    return torch.stack([(idx % w) * 4 + 2, (idx // w) * 4 + 2], 1).float()


def supervised_fine_loss(refine, b, i, j, q, fine_ok: torch.Tensor, w0: int, w1: int, window: int,
                         max_n: int, gen: torch.Generator, jitter: int = 0) -> torch.Tensor:
    """Fine loss at the true coarse matches (b, i, j, true position q) of the batch items whose sub-pixel ground
    truth is trusted (``fine_ok``), at most ``max_n`` of them, where the truth lies inside the refinement window.

    ``refine(b, i, j, xy0, xy1)`` is the fine stage (see :func:`osreg.matchers.dense.dense_matches`); ``jitter`` moves each window-1 centre by a random whole number of fine pixels up to that many, so that the
    refinement also learns the offsets of a coarse match one cell off (as after an imperfect rectification)."""
    sel = torch.nonzero(fine_ok[b]).squeeze(1)
    if len(sel) == 0:
        return q.new_zeros(())
    if len(sel) > max_n:
        sel = sel[torch.randperm(len(sel), generator=gen)[:max_n].to(sel.device)]
    xy0, xy1 = _fine_xy(i[sel], w0), _fine_xy(j[sel], w1)
    if jitter:
        xy1 = xy1 + torch.randint(-jitter, jitter + 1, xy1.shape, generator=gen).float().to(xy1.device)
    target = (q[sel] - 0.5) / 2 - xy1
    inwin = (target.abs() <= window // 2).all(1)
    pred, std = refine(b[sel][inwin], i[sel][inwin], j[sel][inwin], xy0[inwin], xy1[inwin])
    return fine_loss(pred, std, target[inwin])


@torch.no_grad()
def match_errors(conf, refine, H: torch.Tensor, shape0: tuple[int, int], shape1: tuple[int, int],
                 threshold: float) -> torch.Tensor:
    """True error (image px) of every predicted, fine-refined match of a batch under its samples' homographies
    (``refine`` as in :func:`supervised_fine_loss`)."""
    b, i, j, _ = coarse_matches(conf, threshold)
    p0 = cell_centres(*shape0, device=H.device)[i]
    q = torch.einsum("nij,nj->ni", H[b], torch.cat([p0, torch.ones_like(p0[:, :1])], 1))
    qt = q[:, :2] / q[:, 2:3]  # true position of each match's optical point under its sample's H
    xy1 = _fine_xy(j, shape1[1])
    xy0 = _fine_xy(i, shape0[1])
    off, _ = refine(b, i, j, xy0, xy1)
    return ((xy1 + off) * 2 + 0.5 - qt).norm(dim=1)
