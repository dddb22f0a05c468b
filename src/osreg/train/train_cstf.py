"""Training CSTF: ``osreg train --method cstf --data DATA --out RUN_DIR``.

Samples are crops of the volkov training pairs whose ground truth the independent alignment check confirms
(:mod:`osreg.train.data`), the SAR deformed by a *residual* deformation (what is left after the georeference or the
global search: rotation up to 8 degrees, scale up to 1.1, slight perspective, shift up to 8 px). Every optical
keypoint gets a class: the candidate cell nearest to its true SAR position, or "no match" when that position is
outside the correspondence map or on invalid SAR. A quarter of the items get the SAR of another pair (every keypoint
"no match"), so the no-match class learns what unrelated content looks like. The loss is the cross-entropy over the
``S * S + 1`` classes plus an L1 loss of the sub-cell position (the probability-weighted mean of the 3x3 cells
around the true cell) of the matchable keypoints. The loop, checkpoints, resuming and curves are the shared ones
(:func:`osreg.train.common.run_training`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from osreg.errors import InputError
from osreg.matchers.cstf.config import PRESETS, CSTFConfig
from osreg.matchers.cstf.keypoints import detect
from osreg.matchers.cstf.model import CSTFNet, decode, encoder_input
from osreg.train.common import TrainConfig, run_training, summarize_validation
from osreg.train.common import export_weights as export_common
from osreg.train.data import AugmentConfig, load_volkov

logger = logging.getLogger(__name__)

TRAIN_KEYPOINTS = 64  # optical keypoints per training item
NEGATIVE_FRACTION = 0.25


def residual_augment(blur: float = 0.0) -> AugmentConfig:
    """The deformation CSTF learns: what the georeference or the global search leaves."""
    return AugmentConfig(crop=256, max_rotation=8.0, max_scale=1.1, perspective=0.02, blur=blur)


def _item_targets(xy0: np.ndarray, H: np.ndarray, valid: np.ndarray, cfg: CSTFConfig, negative: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Class index per keypoint (``S * S`` = no match) and the true displacement ``(N, 2)``."""
    s = cfg.cells
    p = np.c_[xy0, np.ones(len(xy0))] @ H.T
    t = p[:, :2] / p[:, 2:3]
    d = t - xy0
    r = cfg.radius
    cell = np.round(d / cfg.stride).astype(int) + r // cfg.stride
    inside = np.all(np.abs(d) <= r, axis=1)
    n = valid.shape[0]
    ti = np.clip(np.round(t).astype(int), 0, n - 1)
    ok = inside & valid[ti[:, 1], ti[:, 0]] & np.all((t >= 0) & (t <= n - 1), axis=1) & (not negative)
    target = np.where(ok, cell[:, 1] * s + cell[:, 0], s * s)
    return target, d


def item_logits(model: CSTFNet, f0, f1, kp0, kp1) -> torch.Tensor:
    xy0 = torch.from_numpy(kp0.xy).float()
    prior = model.keypoint_channel(kp0, kp1)
    maps = model.correspondence_maps(f0, f1, xy0, xy0, prior)
    return model.head(maps)


def compute_losses(model: CSTFNet, opt, sar, valid, H, rng: np.random.Generator, negatives: bool = True):
    """Cross-entropy and sub-cell losses of a batch, and per item (logits, targets, true displacements)."""
    cfg = model.cfg
    b = opt.shape[0]
    neg = (rng.random(b) < NEGATIVE_FRACTION) if negatives else np.zeros(b, bool)
    perm = np.roll(np.arange(b), 1)
    sar_np = sar[:, 0].numpy()
    sar_np = np.where(neg[:, None, None], sar_np[perm], sar_np)
    valid_np = valid.numpy()
    x0 = torch.cat([encoder_input(o, cfg.n_orientations) for o in opt[:, 0].numpy()])
    x1 = torch.cat([encoder_input(s, cfg.n_orientations) for s in sar_np])
    f0, f1 = model.encoder0(x0), model.encoder1(x1)
    ce, sub, items = [], [], []
    s = cfg.cells
    for i in range(b):
        kp0 = detect(opt[i, 0].numpy(), None, TRAIN_KEYPOINTS, cfg.keypoint_scales)
        kp1 = detect(sar_np[i], valid_np[i] if not neg[i] else None, 2 * TRAIN_KEYPOINTS, cfg.keypoint_scales)
        if len(kp0) == 0:
            continue
        logits = item_logits(model, f0[i:i + 1], f1[i:i + 1], kp0, kp1)
        target, d = _item_targets(kp0.xy, H[i].numpy(), valid_np[i], cfg, bool(neg[i]))
        tgt = torch.from_numpy(target)
        ce.append(F.cross_entropy(logits, tgt, reduction="none"))
        m = tgt < s * s
        if m.any():
            prob = logits[m].softmax(1)[:, :-1].reshape(-1, s, s)
            cy, cx = tgt[m] // s, tgt[m] % s
            pad = F.pad(prob, (1, 1, 1, 1))
            k = torch.arange(len(cy))
            win = torch.stack([pad[k, cy + dy, cx + dx] for dy in range(3) for dx in range(3)], 1).reshape(-1, 3, 3)
            mass = win.sum((1, 2)).clamp(min=1e-6)
            dd = torch.tensor([-1.0, 0.0, 1.0])
            est = torch.stack([(cx.float() + (win.sum(1) * dd).sum(1) / mass - cfg.radius // cfg.stride) * cfg.stride,
                               (cy.float() + (win.sum(2) * dd).sum(1) / mass - cfg.radius // cfg.stride) * cfg.stride],
                              1)
            sub.append((est - torch.from_numpy(d[m.numpy()]).float()).abs().sum(1))
        items.append((logits.detach(), target, d))
    zero = torch.zeros((), requires_grad=True)
    lce = torch.cat(ce).mean() if ce else zero
    lsub = torch.cat(sub).mean() if sub else zero
    return lce, lsub, items


def train(data_dir: str | None, run_dir: str, cfg: TrainConfig, resume: bool = False, threads: int = 2,
          pairs: tuple[list, list] | None = None) -> Path:
    """Train and return the path of the final checkpoint (``pairs``: ``(train, val)`` instead of the datasets)."""
    if cfg.registered:
        raise InputError("CSTF trains only on pairs whose ground truth an independent check confirms (its classes "
                         "are 2 px cells); pairs registered by osreg carry its own estimate and cannot train it")
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    if cfg.preset not in PRESETS:
        raise InputError(f"unknown CSTF preset {cfg.preset!r}; presets: {', '.join(PRESETS)}")
    model_cfg: CSTFConfig = PRESETS[cfg.preset]
    model = CSTFNet(model_cfg)
    cfg = dataclasses.replace(cfg, augment=residual_augment(cfg.augment.blur))
    train_pairs, val_pairs = pairs if pairs is not None else (load_volkov(data_dir, "train"),
                                                              load_volkov(data_dir, "val"))
    # only pairs whose ground truth the alignment check confirms: a class is a 2 px cell
    train_pairs = [p for p in train_pairs if p.fine_ok]
    val_pairs = [p for p in val_pairs if p.fine_ok]
    if not train_pairs:
        raise InputError("no training pair with a confirmed ground truth")
    logger.info("training CSTF on %d volkov pairs with confirmed ground truth, validating on %d", len(train_pairs),
                len(val_pairs))
    rng = np.random.default_rng(cfg.seed)

    def losses(batch, gen):
        opt, sar, valid, H, _ = batch
        lce, lsub, _ = compute_losses(model, opt, sar, valid, H, rng)
        return {"loss": lce + 0.1 * lsub, "classification": lce, "subcell": lsub}

    @torch.no_grad()
    def validate(val_batches):
        errors, n3, n_all = [], 0, 0
        vrng = np.random.default_rng(0)
        for opt, sar, valid, H, _ in val_batches:
            _, _, items = compute_losses(model, opt, sar, valid, H, vrng, negatives=False)
            for logits, target, d in items:
                disp, mass, is_match = decode(logits, model_cfg.cells, model_cfg.stride)
                keep = (is_match & (mass >= model_cfg.min_confidence)).numpy()
                e = np.linalg.norm(disp.numpy()[keep] - d[keep], axis=1)
                errors.append(torch.from_numpy(e))
                n3 += int((e < 3).sum())
                n_all += int(keep.sum())
        out = summarize_validation(errors, len(val_batches) * cfg.batch)
        out["precision_3px"] = n3 / max(n_all, 1)
        return out

    return run_training(run_dir, cfg, model, "model", model_cfg.to_dict(), train_pairs, val_pairs, losses, validate,
                        resume)


def export_weights(checkpoint: str | Path, out: str | Path, command: str, notes: str = "",
                   inference: dict | None = None) -> dict:
    """Write the shipped form of a CSTF training checkpoint and its description (``inference``: inference settings
    chosen after training, on training pairs)."""
    return export_common(checkpoint, out, command, "model", lambda d: CSTFNet(CSTFConfig.from_dict(d)), notes,
                         inference)
