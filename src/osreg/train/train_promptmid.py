"""Training PromptMID's aggregation: ``osreg train --method promptmid --data DATA --out RUN_DIR``.

Only the multi-granularity aggregator and its land-use prompt head learn; the extractors stay frozen. Data: the
training split of ``volkov_s1s2_10m`` only (Sentinel, 10 m), with the same crops, deformations and noisy-ground-truth
policy as TAR (:mod:`osreg.train.data`), so that every other dataset stays unseen for the zero-shot evaluation.

Losses:
- coarse: negative log of the dual-softmax confidence at the true cell pairs (InfoNCE in both directions);
- fine: uncertainty-weighted L2 of the expected position in the fine window (trusted pairs only, as TAR);
- prompt: the land-use affinities of corresponding cells should agree across modalities (symmetric KL), each
  location should be assigned confidently (its entropy is added) while the batch as a whole uses many classes (the
  entropy of the mean affinity is subtracted): a mutual-information objective, as in invariant information
  clustering, so the prompt head learns a modality-invariant land-use labelling instead of collapsing onto one
  class or onto the uniform distribution.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from osreg.errors import InputError
from osreg.matchers.dense import window_refiner
from osreg.matchers.promptmid import build_promptmid
from osreg.matchers.promptmid.model import PromptMIDNet, dual_softmax
from osreg.text import load_bank
from osreg.train.common import TrainConfig, run_training, summarize_validation, training_pairs
from osreg.train.common import export_weights as export_common
from osreg.train.data import cell_mask
from osreg.train.losses import coarse_ground_truth, match_errors, supervised_fine_loss

logger = logging.getLogger(__name__)


def prompt_consistency(a0: torch.Tensor, a1: torch.Tensor, b, i, j) -> torch.Tensor:
    """Symmetric KL between the land-use affinities (B, K, h, w) of true cell pairs, plus the mean entropy of each
    affinity (confidence), minus the entropy of their mean (diversity)."""
    if len(b) == 0:
        return a0.sum() * 0
    p = a0.flatten(2)[b, :, i].clamp_min(1e-8)
    q = a1.flatten(2)[b, :, j].clamp_min(1e-8)
    kl = 0.5 * ((p * (p.log() - q.log())).sum(1) + (q * (q.log() - p.log())).sum(1)).mean()
    both = torch.cat([p, q])
    mean = both.mean(0)
    return kl - (both * both.log()).sum(1).mean() + (mean * mean.log()).sum()


def compute_losses(net: PromptMIDNet, text, opt, sar, valid, H, fine_ok, cfg: TrainConfig, gen: torch.Generator):
    out = net(torch.cat([opt, sar]), text)  # one frozen pass over both modalities
    n = opt.shape[0]
    c0, c1 = out["coarse"][:n], out["coarse"][n:]
    h0, w0 = c0.shape[-2:]
    h1, w1 = c1.shape[-2:]
    conf = dual_softmax(c0, c1, net.cfg.temperature, mask1=cell_mask(valid))
    b, i, j, q = coarse_ground_truth(H, valid, (h0, w0), (h1, w1))
    lc = -conf[b, i, j].clamp_min(1e-8).log().mean() if len(b) else conf.sum() * 0
    refine = window_refiner(out["fine"][:n], out["fine"][n:], net.cfg.fine_window)
    lf = supervised_fine_loss(refine, b, i, j, q, fine_ok, w0, w1, net.cfg.fine_window,
                              cfg.max_fine_per_item * cfg.batch, gen)
    parts = {"coarse": lc, "fine": lf}
    loss = lc + cfg.fine_weight * lf
    if "affinity" in out:
        parts["prompt"] = prompt_consistency(out["affinity"][:n], out["affinity"][n:], b, i, j)
        loss = loss + cfg.prompt_weight * parts["prompt"]
    return {"loss": loss, **parts}


def train(data_dir: str | None, run_dir: str, cfg: TrainConfig, resume: bool = False, threads: int = 2,
          pairs: tuple[list, list] | None = None) -> Path:
    """Train the aggregator and return the path of the final checkpoint (see :func:`osreg.train.train_tar.train`
    for the arguments)."""
    if cfg.init or cfg.train_only != "all" or cfg.fine_jitter:
        raise InputError("init, train_only and fine_jitter are TAR training options; PromptMID trains its aggregator "
                         "only, from scratch")
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    net = build_promptmid(cfg.preset).to(cfg.device)
    text = torch.from_numpy(load_bank(net.cfg.text_encoder).embeddings).to(cfg.device)
    train_pairs, val_pairs = pairs if pairs is not None else training_pairs(data_dir, cfg)
    logger.info("training PromptMID's aggregator on %d pairs, validating on %d volkov pairs", len(train_pairs),
                len(val_pairs))

    @torch.no_grad()
    def validate(val_batches):
        errors = []
        for opt, sar, valid, H, _ in val_batches:
            out = net(torch.cat([opt, sar]), text)
            n = opt.shape[0]
            conf = dual_softmax(out["coarse"][:n], out["coarse"][n:], net.cfg.temperature, mask1=cell_mask(valid))
            refine = window_refiner(out["fine"][:n], out["fine"][n:], net.cfg.fine_window)
            errors.append(match_errors(conf, refine, H, tuple(out["coarse"].shape[-2:]),
                                       tuple(out["coarse"].shape[-2:]), net.cfg.coarse_threshold))
        return summarize_validation(errors, len(val_batches) * cfg.batch)

    return run_training(run_dir, cfg, net.aggregator, "aggregator", net.cfg.to_dict(), train_pairs, val_pairs,
                        lambda batch, gen: compute_losses(net, text, *batch, cfg, gen), validate, resume)


def export_weights(checkpoint: str | Path, out: str | Path, command: str, notes: str = "",
                   inference: dict | None = None) -> dict:
    """Write the shipped form of a PromptMID training checkpoint (the aggregator only) and its description
    (:func:`common.export_weights`)."""
    from osreg.matchers.promptmid import PromptMIDConfig
    from osreg.matchers.promptmid.model import MultiGranularityAggregator

    return export_common(checkpoint, out, command, "aggregator",
                         lambda d: MultiGranularityAggregator(PromptMIDConfig.from_dict(d)), notes, inference)
