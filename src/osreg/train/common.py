"""Training pieces shared by the learned matchers: the training config, the learning-rate schedule, the curves."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from osreg.errors import InputError
from osreg.io.atomic import atomic_output, write_text_atomic
from osreg.matchers.checkpoint import load_state, read_checkpoint
from osreg.train.data import AugmentConfig, add_registered, load_registered, load_volkov, make_batch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (saved in every checkpoint). ``preset`` names the method's model preset;
    ``prompt_weight`` weighs PromptMID's land-use consistency loss (TAR ignores it). TAR only: ``init`` starts
    from the weights of another checkpoint (the preset may add modules it lacks, which start fresh);
    ``train_only="fine"`` freezes everything but the fine stage and trains it with the fine loss alone;
    ``fine_jitter`` moves fine windows by up to that many fine pixels (see
    :func:`osreg.train.losses.supervised_fine_loss`). ``registered``: ``report.json`` files of registrations by
    ``osreg register`` whose pairs train too, drawn for ``registered_share`` of the samples
    (:func:`osreg.train.data.load_registered`)."""

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
    prompt_weight: float = 0.1
    init: str = ""
    train_only: str = "all"
    fine_jitter: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "cpu"
    registered: tuple[str, ...] = ()
    registered_share: float = 0.25

    def __post_init__(self) -> None:
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise InputError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.train_only not in ("all", "fine"):
            raise InputError(f"train_only must be 'all' or 'fine', got {self.train_only!r}")
        if self.fine_jitter < 0:
            raise InputError(f"fine_jitter must be >= 0, got {self.fine_jitter}")
        if not 0 < self.registered_share < 1:
            raise InputError(f"registered_share must be in (0, 1), got {self.registered_share}")


def lr_factor(step: int, total: int, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to 5 % at ``total`` (computed from the step, so runs can be extended)."""
    warm = min(1.0, (step + 1) / warmup)
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.5))

    def smooth(v, k=25):
        v = np.asarray(v, float)
        return np.convolve(v, np.ones(k) / k, mode="valid") if len(v) > k else v

    # the two loss parts: whatever the losses function reported beside the total
    parts = [k for k in history[0] if k not in ("step", "loss", "lr", "elapsed_s") and not k.startswith(
        ("coarse_precision", "matches_per", "fine_error", "precision_"))][:2] if history else []
    for key, a in zip(parts, ax[:2]):
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


def save_checkpoint(path: Path, state_key: str, module: torch.nn.Module, model_config: dict, cfg: TrainConfig,
                    optim=None, step: int = 0, history: list | None = None) -> None:
    """Write a checkpoint: ``module``'s weights under ``state_key``, the model and training configs, the step, the
    history and (to resume) the optimiser state. Atomic."""
    weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}  # loadable on any machine
    state = {state_key: weights, "model_config": model_config, "train_config": asdict(cfg),
             "step": step, "history": history or []}
    if optim is not None:
        state["optimizer"] = optim.state_dict()
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def training_pairs(data_dir: str | None, cfg: TrainConfig) -> tuple[list, list]:
    """``(train, val)`` pairs: the volkov split of ``data_dir`` with the pairs of ``cfg.registered`` added to the
    training pairs for ``cfg.registered_share`` of the samples (read first: they are checked before the datasets)."""
    registered = load_registered(cfg.registered, cfg.augment.crop)
    train, val = load_volkov(data_dir, "train"), load_volkov(data_dir, "val")
    if registered:
        logger.info("adding %d registered pairs (%s), drawn for %.0f %% of the samples", len(registered),
                    ", ".join(p.name for p in registered), 100 * cfg.registered_share)
        train = add_registered(train, registered, cfg.registered_share)
    return train, val


def to_device(batch: tuple, device: torch.device) -> tuple:
    """A training batch on ``device`` (the data are made on the CPU)."""
    return tuple(t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in batch)


def run_training(run_dir: str | Path, cfg: TrainConfig, trainable: torch.nn.Module, state_key: str,
                 model_config: dict, train_pairs: list, val_pairs: list,
                 losses: Callable[[tuple, torch.Generator], dict[str, torch.Tensor]],
                 validate: Callable[[list], dict[str, float]], resume: bool = False) -> Path:
    """The training loop shared by the learned matchers; returns the path of the last checkpoint.

    Each step draws a batch (:func:`~osreg.train.data.make_batch`, deformations ramping up over the first
    ``curriculum`` of the run), calls ``losses(batch, generator)`` (a dict with the total under "loss" and its
    parts), and steps AdamW on ``trainable`` with a warm-up and cosine schedule. ``validate(val_batches)`` runs every
    ``val_every`` steps on fixed validation batches. ``RUN_DIR/last.pt`` is written every ``checkpoint_every`` steps
    (and resumed from with ``resume``), with ``curves.png`` and ``history.json``. Seeds are fixed; a resumed run
    continues with fresh, reproducible samples.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    trainable.to(device)
    params = [p for p in trainable.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict] = []
    step = 0
    last = run / "last.pt"
    if resume and last.exists():
        ck = read_checkpoint(last, "training", (state_key, "optimizer", "step", "history"))
        load_state(trainable, ck[state_key], last, "training")
        trainable.to(device)
        optim.load_state_dict(ck["optimizer"])
        step, history = ck["step"], ck["history"]
        logger.info("resumed from %s at step %d", last, step)
    vrng = np.random.default_rng(12345)
    # no validation pairs (a packed training set on a GPU machine): the curves go without validation points
    val_batches = [to_device(make_batch(val_pairs, vrng, cfg.batch, cfg.augment), device) for _ in range(4)] \
        if val_pairs else []
    rng = np.random.default_rng(cfg.seed + step)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    trainable.train()
    t0 = time.time()
    while step < cfg.steps:
        strength = min(1.0, 0.25 + 0.75 * step / max(cfg.curriculum * cfg.steps, 1))
        # the learning rate comes from the step itself: a resumed or extended run continues the schedule, and a step
        # whose batch has nothing to learn from still advances it
        lr = cfg.lr * lr_factor(step, cfg.steps)
        for group in optim.param_groups:
            group["lr"] = lr
        parts = losses(to_device(make_batch(train_pairs, rng, cfg.batch, cfg.augment, strength), device), gen)
        optim.zero_grad()
        if parts["loss"].requires_grad:  # not when a batch has nothing to learn from (no trusted fine truth)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
        step += 1
        rec = {"step": step, **{k: v.item() for k, v in parts.items()}, "lr": lr,
               "elapsed_s": time.time() - t0}
        if val_batches and (step % cfg.val_every == 0 or step == cfg.steps):
            trainable.eval()
            rec.update(validate(val_batches))
            trainable.train()
            logger.info("step %d: %s", step, {k: round(v, 4) for k, v in rec.items() if isinstance(v, float)})
        history.append(rec)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(last, state_key, trainable, model_config, cfg, optim, step, history)
            plot_curves(history, run / "curves.png")
            write_text_atomic(run / "history.json", json.dumps(history), overwrite=True)
    return last


def summarize_validation(errors: list[torch.Tensor], n_samples: int) -> dict[str, float]:
    """Coarse precision (share of predicted matches within 8 px of the truth), matches per sample, and the median
    error (px) of those within 8 px."""
    e = torch.cat(errors) if errors else torch.zeros(0)
    good = e[e < 8]
    return {"coarse_precision": float(len(good)) / max(len(e), 1), "matches_per_sample": len(e) / max(n_samples, 1),
            "fine_error_px": float(good.median()) if len(good) else math.nan}


def export_weights(checkpoint: str | Path, out: str | Path, command: str, state_key: str,
                   rebuild: Callable[[dict], torch.nn.Module], notes: str = "",
                   inference: dict[str, Any] | None = None) -> dict:
    """Write the inference part of a training checkpoint (``state_key`` weights and configs, no optimiser) to
    ``out``, and its description (configs, training command, last validation, notes) beside it as ``.json``.
    ``rebuild(model_config)`` makes the module the weights must load into (strictly) before anything is written;
    ``inference`` replaces inference settings of the model config (chosen after training; recorded in the
    description)."""
    ck = read_checkpoint(checkpoint, "training", (state_key, "model_config", "train_config", "step"))
    if inference:
        unknown = set(inference) - set(ck["model_config"])
        if unknown:
            raise InputError(f"unknown model config fields {sorted(unknown)}")
        ck["model_config"] = {**ck["model_config"], **inference}
    module = rebuild(ck["model_config"])
    module.load_state_dict(ck[state_key], strict=True)
    slim = {k: ck[k] for k in (state_key, "model_config", "train_config", "step")}
    out = Path(out)
    with atomic_output(out, overwrite=True) as tmp:
        torch.save(slim, tmp)
    val = [h for h in ck.get("history", []) if "coarse_precision" in h]
    meta = {"model_config": ck["model_config"], "train_config": ck["train_config"], "step": ck["step"],
            "training_command": command, "last_validation": val[-1] if val else None,
            "inference_settings_changed_after_training": inference or {},
            "parameters": sum(p.numel() for p in module.parameters()), "notes": notes}
    write_text_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2), overwrite=True)
    return meta
