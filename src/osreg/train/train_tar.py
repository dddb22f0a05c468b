"""Training TAR: ``osreg train --method tar --data DATA --out RUN_DIR``.

Checkpoints (``RUN_DIR/last.pt``, every ``checkpoint_every`` steps) hold the model, optimiser, step, history and
the full configs, so a run resumes where it stopped (``--resume``). Seeds are fixed. Training curves go to
``RUN_DIR/curves.png``, the history to ``RUN_DIR/history.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from osreg.errors import InputError
from osreg.matchers.checkpoint import read_checkpoint
from osreg.matchers.tar.config import PRESETS, TARConfig
from osreg.matchers.tar.model import TARModel
from osreg.text import load_bank
from osreg.train.common import TrainConfig, run_training, summarize_validation, training_pairs
from osreg.train.common import export_weights as export_common
from osreg.train.common import save_checkpoint as save_common
from osreg.train.data import cell_mask
from osreg.train.losses import (
    coarse_ground_truth,
    focal_loss,
    match_errors,
    supervised_fine_loss,
)

logger = logging.getLogger(__name__)


def compute_losses(model: TARModel, text, opt, sar, valid, H, fine_ok, cfg: TrainConfig, gen: torch.Generator):
    out = model(opt, sar, text, mask1=cell_mask(valid))
    h0, w0 = out["coarse_shape0"].tolist()
    h1, w1 = out["coarse_shape1"].tolist()
    b, i, j, q = coarse_ground_truth(H, valid, (h0, w0), (h1, w1))
    lc = focal_loss(out["conf"], b, i, j)

    def refine(*match):
        return model.fine_refine(out, *match)

    lf = supervised_fine_loss(refine, b, i, j, q, fine_ok, w0, w1, model.cfg.fine_window,
                              cfg.max_fine_per_item * cfg.batch, gen, jitter=cfg.fine_jitter)
    return lc, lf, out, (b, i, j)


def initialise(model: TARModel, path: str | Path) -> None:
    """Load the weights of the TAR checkpoint ``path`` into ``model``. Only modules of ``model`` the checkpoint
    lacks may be missing (they keep their fresh initialisation); anything else that does not fit is an error."""
    ck = read_checkpoint(path, "TAR", ("model",))
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    fresh = [k for k in missing if k.startswith("refiner.")]
    if unexpected or len(fresh) != len(missing):
        raise InputError(f"{path} does not fit preset model: missing {sorted(set(missing) - set(fresh))}, "
                         f"unexpected {sorted(unexpected)}")
    logger.info("initialised from %s (step %s); %d tensors start fresh", path, ck.get("step"), len(fresh))


def freeze_all_but_fine(model: TARModel) -> None:
    """Freeze every parameter outside the fine stage (the window refiner, or the fine maps without one)."""
    fine_prefixes = ("refiner.",) if model.refiner is not None else (
        "fine_proj.", "msfl.fine_out.", "msfl.lat1.", "msfl.lat2.", "msfl.smooth2.")
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(fine_prefixes))


def train(data_dir: str | None, run_dir: str, cfg: TrainConfig, resume: bool = False, threads: int = 2,
          pairs: tuple[list, list] | None = None) -> Path:
    """Train and return the path of the final checkpoint.

    Args:
        data_dir: folder of the datasets (volkov_s1s2_10m is read from it), unless ``pairs`` is given.
        pairs: ``(train_pairs, val_pairs)`` of :class:`~osreg.train.data.TrainPair`, instead of the datasets.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    if cfg.preset not in PRESETS:
        raise InputError(f"unknown TAR preset {cfg.preset!r}; presets: {', '.join(PRESETS)}")
    model_cfg: TARConfig = PRESETS[cfg.preset]
    model = TARModel(model_cfg)
    if cfg.init and not resume:
        initialise(model, cfg.init)
    fine_only = cfg.train_only == "fine"
    if fine_only:
        freeze_all_but_fine(model)
    text = torch.from_numpy(load_bank(model_cfg.text_encoder).embeddings).to(cfg.device)
    model.to(cfg.device)
    train_pairs, val_pairs = pairs if pairs is not None else training_pairs(data_dir, cfg)
    logger.info("training on %d pairs (%d with trusted fine ground truth), validating on %d volkov pairs",
                len(train_pairs), sum(p.fine_ok for p in train_pairs), len(val_pairs))

    def losses(batch, gen):
        if fine_only:
            model.eval()  # the frozen parts keep their batch-norm statistics
        lc, lf, _, _ = compute_losses(model, text, *batch, cfg, gen)
        if fine_only:
            return {"loss": lf, "coarse": lc.detach(), "fine": lf}
        return {"loss": lc + cfg.fine_weight * lf, "coarse": lc, "fine": lf}

    @torch.no_grad()
    def validate(val_batches):
        errors = []
        for opt, sar, valid, H, _ in val_batches:
            out = model(opt, sar, text, mask1=cell_mask(valid))

            def refine(*match, out=out):
                return model.fine_refine(out, *match)

            errors.append(match_errors(out["conf"], refine, H, tuple(out["coarse_shape0"].tolist()),
                                       tuple(out["coarse_shape1"].tolist()), model_cfg.coarse_threshold))
        return summarize_validation(errors, len(val_batches) * cfg.batch)

    return run_training(run_dir, cfg, model, "model", model_cfg.to_dict(), train_pairs, val_pairs, losses, validate,
                        resume)


def save_checkpoint(path: Path, model, model_cfg: TARConfig, cfg: TrainConfig, optim=None, step=0,
                    history=None) -> None:
    save_common(path, "model", model, model_cfg.to_dict(), cfg, optim, step, history)


def export_weights(checkpoint: str | Path, out: str | Path, command: str, notes: str = "") -> dict:
    """Write the shipped form of a TAR training checkpoint and its description (:func:`common.export_weights`)."""
    return export_common(checkpoint, out, command, "model", lambda d: TARModel(TARConfig.from_dict(d)), notes)
