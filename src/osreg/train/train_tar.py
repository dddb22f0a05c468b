"""Training TAR: ``osreg train --method tar --data DATA --out RUN_DIR``.

Checkpoints (``RUN_DIR/last.pt``, every ``checkpoint_every`` steps) hold the model, optimiser, step, history and
the full configs, so a run resumes where it stopped (``--resume``). Seeds are fixed. Training curves go to
``RUN_DIR/curves.png``, the history to ``RUN_DIR/history.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from osreg.io.atomic import atomic_output, write_text_atomic
from osreg.matchers.tar.config import PRESETS, TARConfig
from osreg.matchers.tar.matching import cell_centres, coarse_matches, fine_refine
from osreg.matchers.tar.model import TARModel
from osreg.text import load_bank
from osreg.train.data import AugmentConfig, load_volkov, sample
from osreg.train.losses import coarse_ground_truth, fine_loss, focal_loss

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "default"
    steps: int = 3000
    batch: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    fine_weight: float = 0.5
    max_fine_per_item: int = 256
    seed: int = 0
    checkpoint_every: int = 100
    val_every: int = 200
    curriculum: float = 0.3
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def _batch(pairs, rng, cfg: TrainConfig, strength: float = 1.0):
    items = [sample(pairs[rng.integers(len(pairs))], rng, cfg.augment, strength) for _ in range(cfg.batch)]
    opt = torch.from_numpy(np.stack([it[0] for it in items]))[:, None]
    sar = torch.from_numpy(np.stack([it[1] for it in items]))[:, None]
    valid = torch.from_numpy(np.stack([it[2] for it in items]))
    H = torch.from_numpy(np.stack([it[3] for it in items])).float()
    fine_ok = torch.tensor([it[4] for it in items])
    return opt, sar, valid, H, fine_ok


def _cell_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, H, W) pixel validity -> (B, H/8, W/8) cells that are mostly valid."""
    return torch.nn.functional.avg_pool2d(valid[:, None].float(), 8)[:, 0] > 0.5


def compute_losses(model: TARModel, text, opt, sar, valid, H, fine_ok, cfg: TrainConfig, gen: torch.Generator):
    out = model(opt, sar, text, mask1=_cell_mask(valid))
    h0, w0 = out["coarse_shape0"].tolist()
    h1, w1 = out["coarse_shape1"].tolist()
    b, i, j, q = coarse_ground_truth(H, valid, (h0, w0), (h1, w1))
    lc = focal_loss(out["conf"], b, i, j)
    # fine: at the true coarse matches of pairs whose sub-pixel ground truth is trusted
    keep = fine_ok[b]
    if keep.any():
        sel = torch.nonzero(keep).squeeze(1)
        if len(sel) > cfg.max_fine_per_item * cfg.batch:
            sel = sel[torch.randperm(len(sel), generator=gen)[: cfg.max_fine_per_item * cfg.batch]]
        bb, ii, jj, qq = b[sel], i[sel], j[sel], q[sel]
        xy0 = torch.stack([(ii % w0) * 4 + 2, (ii // w0) * 4 + 2], 1).float()
        xy1 = torch.stack([(jj % w1) * 4 + 2, (jj // w1) * 4 + 2], 1).float()
        target = (qq - 0.5) / 2 - xy1
        r = model.cfg.fine_window // 2
        inwin = (target.abs() <= r).all(1)
        pred, std = fine_refine(out["fine0"], out["fine1"], bb[inwin], xy0[inwin], xy1[inwin], model.cfg.fine_window)
        lf = fine_loss(pred, std, target[inwin])
    else:
        lf = out["conf"].sum() * 0
    return lc, lf, out, (b, i, j)


@torch.no_grad()
def validate(model: TARModel, text, val_batches, cfg: TrainConfig) -> dict[str, float]:
    """Coarse precision (predicted matches whose true cell is the matched cell or a neighbour) and the fine error
    in pixels of the predicted matches, on fixed validation samples."""
    model.eval()
    correct = total = 0
    errs = []
    for opt, sar, valid, H, _ in val_batches:
        out = model(opt, sar, text, mask1=_cell_mask(valid))
        b, i, j, _ = coarse_matches(out["conf"], model.cfg.coarse_threshold)
        h0, w0 = out["coarse_shape0"].tolist()
        h1, w1 = out["coarse_shape1"].tolist()
        p0 = cell_centres(h0, w0)[i]
        q = torch.einsum("nij,nj->ni", H[b], torch.cat([p0, torch.ones_like(p0[:, :1])], 1))
        qt = q[:, :2] / q[:, 2:3]  # true position of each match's optical point under its sample's H
        xy0 = torch.stack([(i % w0) * 4 + 2, (i // w0) * 4 + 2], 1).float()
        xy1 = torch.stack([(j % w1) * 4 + 2, (j // w1) * 4 + 2], 1).float()
        off, _ = fine_refine(out["fine0"], out["fine1"], b, xy0, xy1, model.cfg.fine_window)
        q = (xy1 + off) * 2 + 0.5
        e = (q - qt).norm(dim=1)
        correct += int((e < 8).sum())
        total += len(e)
        errs.extend(e[e < 8].tolist())
    model.train()
    return {"coarse_precision": correct / max(total, 1), "matches_per_sample": total / (len(val_batches) * cfg.batch),
            "fine_error_px": float(np.median(errs)) if errs else math.nan}


def lr_factor(step: int, total: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 5 % at ``total`` (computed from the step, so runs can be extended)."""
    warm = min(1.0, (step + 1) / warmup)
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def train(data_dir: str | None, run_dir: str, cfg: TrainConfig, resume: bool = False, threads: int = 2,
          pairs: tuple[list, list] | None = None) -> Path:
    """Train and return the path of the final checkpoint.

    Args:
        data_dir: folder of the datasets (volkov_s1s2_10m is read from it), unless ``pairs`` is given.
        pairs: ``(train_pairs, val_pairs)`` of :class:`~osreg.train.data.TrainPair`, instead of the datasets.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    model_cfg: TARConfig = PRESETS[cfg.preset]
    model = TARModel(model_cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, cfg.steps))
    history: list[dict] = []
    step = 0
    last = run / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        sched.last_epoch = ck["step"]
        step, history = ck["step"], ck["history"]
        logger.info("resumed from %s at step %d", last, step)
    text = torch.from_numpy(load_bank(model_cfg.text_encoder).embeddings)
    train_pairs, val_pairs = pairs if pairs is not None else (load_volkov(data_dir, "train"),
                                                              load_volkov(data_dir, "val"))
    logger.info("training on %d volkov pairs (%d with trusted fine ground truth), validating on %d",
                len(train_pairs), sum(p.fine_ok for p in train_pairs), len(val_pairs))
    vrng = np.random.default_rng(12345)
    val_batches = [_batch(val_pairs, vrng, cfg) for _ in range(4)]
    rng = np.random.default_rng(cfg.seed + step)  # a resumed run continues with fresh, reproducible samples
    gen = torch.Generator().manual_seed(cfg.seed + step)
    model.train()
    t0 = time.time()
    while step < cfg.steps:
        strength = min(1.0, 0.25 + 0.75 * step / max(cfg.curriculum * cfg.steps, 1))  # deformations ramp up
        opt, sar, valid, H, fine_ok = _batch(train_pairs, rng, cfg, strength)
        lc, lf, _, _ = compute_losses(model, text, opt, sar, valid, H, fine_ok, cfg, gen)
        loss = lc + cfg.fine_weight * lf
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        step += 1
        rec = {"step": step, "loss": loss.item(), "coarse": lc.item(), "fine": lf.item(),
               "lr": sched.get_last_lr()[0], "elapsed_s": time.time() - t0}
        if step % cfg.val_every == 0 or step == cfg.steps:
            rec.update(validate(model, text, val_batches, cfg))
            logger.info("step %d: %s", step, {k: round(v, 4) for k, v in rec.items() if isinstance(v, float)})
        history.append(rec)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(last, model, model_cfg, cfg, optim, step, history)
            plot_curves(history, run / "curves.png")
            write_text_atomic(run / "history.json", json.dumps(history), overwrite=True)
    return last


def save_checkpoint(path: Path, model, model_cfg: TARConfig, cfg: TrainConfig, optim=None, step=0,
                    history=None) -> None:
    state = {"model": model.state_dict(), "model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
             "step": step, "history": history or []}
    if optim is not None:
        state["optimizer"] = optim.state_dict()
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.5))

    def smooth(v, k=25):
        v = np.asarray(v, float)
        return np.convolve(v, np.ones(k) / k, mode="valid") if len(v) > k else v

    for key, a in (("coarse", ax[0]), ("fine", ax[1])):
        v = smooth([h[key] for h in history])
        a.plot(steps[len(steps) - len(v):], v)
        a.set_title(f"{key} loss (train, smoothed)")
        a.set_xlabel("step")
    val = [h for h in history if "coarse_precision" in h]
    if val:
        ax[2].plot([h["step"] for h in val], [h["coarse_precision"] for h in val], marker="o", label="coarse precision")
        ax[2].plot([h["step"] for h in val], [min(h["fine_error_px"], 8) / 8 for h in val], marker="s",
                   label="fine error / 8 px")
        ax[2].legend()
        ax[2].set_title("validation")
        ax[2].set_xlabel("step")
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def export_weights(checkpoint: str | Path, out: str | Path, command: str, notes: str = "") -> dict:
    """Write the inference part of a training checkpoint (model state and configs, no optimiser) to ``out`` and
    its description (config, training command, provenance) to ``out`` with suffix ``.json``."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = TARModel(TARConfig.from_dict(ck["model_config"]))
    model.load_state_dict(ck["model"], strict=True)
    slim = {"model": ck["model"], "model_config": ck["model_config"], "train_config": ck["train_config"],
            "step": ck["step"]}
    out = Path(out)
    with atomic_output(out, overwrite=True) as tmp:
        torch.save(slim, tmp)
    val = [h for h in ck.get("history", []) if "coarse_precision" in h]
    meta = {"model_config": ck["model_config"], "train_config": ck["train_config"], "step": ck["step"],
            "training_command": command, "last_validation": val[-1] if val else None,
            "parameters": sum(p.numel() for p in model.parameters()), "notes": notes}
    write_text_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2), overwrite=True)
    return meta
