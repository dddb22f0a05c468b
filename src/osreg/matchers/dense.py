"""Dense coarse-to-fine matching shared by TAR and PromptMID (CFDM): coarse matches from a dual-softmax confidence
(mutual nearest neighbours above a threshold) on 1/8 cells, refined on 1/2 features by the expectation of a
correlation softmax in a local window (sub-pixel, with a spread that serves as uncertainty).

Coordinates: coarse cell (i, j) is represented by fine pixel (4i + 2, 4j + 2), whose centre is image pixel
(8j + 4.5, 8i + 4.5) (pixel centres at integers).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def cell_centres(h: int, w: int, device=None) -> torch.Tensor:
    """Image-pixel centres (x, y) of the coarse cells of an (h, w) coarse grid, (h*w, 2)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs.flatten() * 8 + 4.5, ys.flatten() * 8 + 4.5], 1).float()


def dual_softmax(sim: torch.Tensor, mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Dual-softmax confidence ``softmax(sim, 1) * softmax(sim, 2)`` of a (B, N, M) similarity; masked cells
    (bool (B, N) / (B, M), True where valid) get ~0.

    Computed as ``exp(2 sim - logsumexp over rows - logsumexp over columns)``, the same product written in log
    space: without autograd it overwrites ``sim`` in place, so that a pass holds two N x M matrices instead of
    five, which is what bounds memory when a large SAR canvas is matched (N x M grows with both images' areas).
    """
    inplace = not (torch.is_grad_enabled() and sim.requires_grad)
    if not inplace and (mask0 is not None or mask1 is not None):
        sim = sim.clone()  # autograd: fill a copy, keep the caller's similarity
    if mask0 is not None:
        sim.masked_fill_(~mask0[:, :, None], -1e4)
    if mask1 is not None:
        sim.masked_fill_(~mask1[:, None, :], -1e4)
    if sim.numel() == 0:  # no valid cell on one side (a compact confidence): nothing to normalise
        return sim
    if not inplace:
        return torch.exp(2 * sim - torch.logsumexp(sim, 2, keepdim=True) - torch.logsumexp(sim, 1, keepdim=True))
    lse_rows, lse_cols = _logsumexp_rows_and_columns(sim)
    return sim.mul_(2).sub_(lse_rows).sub_(lse_cols).exp_()


def _logsumexp_rows_and_columns(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``logsumexp(x, 2)`` and ``logsumexp(x, 1)`` of a (B, N, M) tensor (keepdim), from one pass of exponentials.

    The row-shifted exponentials ``e = exp(x - rowmax)`` give the row sums directly and the column sums as one
    matrix product with ``exp(rowmax - max)``: on a CPU about twice as fast as two logsumexp calls (a reduction
    across rows is a strided one). Columns whose sum underflows that way (all their mass in rows whose maximum is
    far below the global one) are recomputed exactly.
    """
    row_max = x.amax(2, keepdim=True)  # B, N, 1
    e = torch.exp(x - row_max)
    lse_rows = row_max + e.sum(2, keepdim=True).log()
    top = row_max.amax(1, keepdim=True)  # B, 1, 1
    col_sums = torch.bmm((row_max - top).exp().transpose(1, 2), e)  # B, 1, M
    del e
    lse_cols = top + col_sums.log()
    bad = col_sums < 1e-30
    if bool(bad.any()):
        b, _, j = torch.nonzero(bad, as_tuple=True)
        lse_cols[b, 0, j] = torch.logsumexp(x[b, :, j], 1)
    return lse_rows, lse_cols


def coarse_matches(conf: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours of a (B, N, M) confidence above ``threshold`` -> (b, i, j, score).

    The best column of every row, and the maximum of every column (a maximum across rows is a cheap reduction, an
    arg-maximum is not); the threshold and the mutual check then run on the N row maxima only.
    """
    if conf.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=conf.device)
        return empty, empty, empty, conf.new_zeros(0)
    row_max, row_arg = conf.max(dim=2)  # best image-1 cell of every image-0 cell, (B, N)
    col_max = conf.amax(dim=1)  # (B, M)
    b, i = torch.nonzero(row_max > threshold, as_tuple=True)
    j = row_arg[b, i]
    score = row_max[b, i]
    mutual = score >= col_max[b, j]
    return b[mutual], i[mutual], j[mutual], score[mutual]


def window_offsets(w: int, device=None) -> torch.Tensor:
    r = w // 2
    ys, xs = torch.meshgrid(torch.arange(-r, r + 1, device=device), torch.arange(-r, r + 1, device=device), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1).float()  # (w*w, 2) in fine pixels


def sample_at(fmap: torch.Tensor, b: torch.Tensor, xy_fine: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of fmap (B, C, H, W) at fine-pixel positions xy_fine (N, K, 2) of batch items b (N,)
    -> (N, K, C). Outside the map samples are 0."""
    nb, c, h, w = fmap.shape
    n, k, _ = xy_fine.shape
    grid = torch.stack([(xy_fine[..., 0] + 0.5) / w * 2 - 1, (xy_fine[..., 1] + 0.5) / h * 2 - 1], -1)
    out = fmap.new_zeros((n, k, c))
    for bi in range(nb):  # one grid_sample per image: never copy the map per match
        sel = torch.nonzero(b == bi).squeeze(1)
        if len(sel) == 0:
            continue
        s = F.grid_sample(fmap[bi:bi + 1], grid[sel][None], mode="bilinear", align_corners=False,
                          padding_mode="zeros")  # 1, C, n_sel, K
        out[sel] = s[0].permute(1, 2, 0)
    return out


def fine_refine(fine0: torch.Tensor, fine1: torch.Tensor, b: torch.Tensor, xy0_fine: torch.Tensor,
                xy1_fine: torch.Tensor, window: int, temperature: float = 0.1
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected position of each image-0 point in a window of image 1.

    Args:
        fine0, fine1: (B, C, H/2, W/2) fine maps.
        b: (N,) batch index of each match; xy0_fine, xy1_fine: (N, 2) fine-pixel positions (window centre in 1).

    Returns:
        offsets (N, 2) in fine pixels relative to xy1_fine, and the standard deviation (N,) of the heatmap.
    """
    if len(b) == 0:
        z = fine0.new_zeros((0, 2))
        return z, fine0.new_zeros(0)
    f0 = F.normalize(sample_at(fine0, b, xy0_fine[:, None, :])[:, 0], dim=-1)  # N, C
    offs = window_offsets(window, fine0.device)
    f1 = F.normalize(sample_at(fine1, b, xy1_fine[:, None, :] + offs[None]), dim=-1)  # N, K, C
    return window_expectation(torch.softmax(torch.einsum("nc,nkc->nk", f0, f1) / temperature, dim=1), offs)


def window_expectation(heat: torch.Tensor, offs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected offset (N, 2) under heatmaps ``heat`` (N, K) over window offsets ``offs`` (K, 2), and the heatmaps'
    standard deviation (N,)."""
    mean = heat @ offs
    var = (heat[..., None] * (offs[None] - mean[:, None]) ** 2).sum(1).sum(-1)
    return mean, var.clamp(min=1e-10).sqrt()


def window_refiner(fine0: torch.Tensor, fine1: torch.Tensor, window: int) -> Callable:
    """:func:`fine_refine` on these fine maps as a ``refine(b, i, j, xy0, xy1) -> (offsets, spreads)`` callable
    (the form :func:`dense_matches` and the training losses take; the coarse cells i, j are not needed)."""

    def refine(b, i, j, xy0, xy1):
        return fine_refine(fine0, fine1, b, xy0, xy1, window)

    return refine


def dense_matches(conf: torch.Tensor, coarse_shape0: tuple[int, int], coarse_shape1: tuple[int, int],
                  threshold: float, image_shape0: tuple[int, int], image_shape1: tuple[int, int],
                  refine: Callable | None = None, cells0: torch.Tensor | None = None,
                  cells1: torch.Tensor | None = None):
    """Matches of one image pair from its (1, N0, N1) coarse confidence, refined when ``refine`` is given.

    ``cells0`` / ``cells1``: the flat coarse-grid index of each row / column of ``conf`` when it holds only some
    cells (a compact confidence); None when it holds the whole grids.

    ``refine(b, i, j, xy0, xy1) -> (offsets, spreads)`` takes the batch item, coarse cells and fine-pixel points of
    the matches and returns offsets in fine pixels from xy1 (e.g. :func:`window_refiner`).

    Returns numpy ``(keypoints0 (N, 2), keypoints1 (N, 2), score (N,))`` in image pixels, restricted to points
    inside both (unpadded) images.
    """
    b, i, j, score = coarse_matches(conf, threshold)
    if cells0 is not None:
        i = cells0[i]
    if cells1 is not None:
        j = cells1[j]
    k0 = cell_centres(*coarse_shape0, conf.device)[i]
    k1 = cell_centres(*coarse_shape1, conf.device)[j]
    if refine is not None and len(b):
        xy1 = (k1 - 0.5) / 2
        off, _ = refine(b, i, j, (k0 - 0.5) / 2, xy1)
        k1 = (xy1 + off) * 2 + 0.5
    keep = (k0[:, 0] < image_shape0[1]) & (k0[:, 1] < image_shape0[0]) & (k1[:, 0] < image_shape1[1]) & \
        (k1[:, 1] < image_shape1[0])
    return k0[keep].double().numpy(), k1[keep].double().numpy(), score[keep].double().numpy()
