"""Training pairs for dense matchers: random crops of real optical-SAR pairs with synthetic deformations and
exact dense ground truth.

Split (fixed): validation holds out ``osmnet_zhanghan9718``, ``ossift_xym2009`` pair A and a fixed 15 % of
``volkov_s1s2_10m`` (every pair whose name hashes into the lowest 15 %, see :func:`volkov_split`); training uses
the other volkov pairs, and optionally pairs that osreg itself registered (:func:`load_registered`: unlabelled pairs,
their ground truth the registration the verdict accepted).

Noisy ground truth: volkov pairs are registered "by georeference and a projective transform", but the
independent check in ``alignment_check.csv`` finds 1.5-8 px local offsets in many of them. Per pair:
- the four check windows agree (``n_strong_quadrants == 4`` and spread <= 1.5 px): the ground truth is corrected
  by the measured translation (SAR = optical + (median_dx, median_dy)) and the pair trains both the coarse and
  the fine loss;
- otherwise (windows disagree, inconclusive): the pair trains the coarse loss only (8 px cells tolerate a few
  pixels), so its unreliable sub-pixel ground truth never reaches the fine loss.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from osreg.errors import InputError
from osreg.geometry import translation
from osreg.io.raster import read_raster
from osreg.preprocess import PreprocessConfig, prepare_optical, prepare_sar

VAL_FRACTION = 0.15


def volkov_split(name: str) -> str:
    """'val' for a fixed ~15 % of volkov pairs (by a stable hash of the file name), else 'train'."""
    return "val" if zlib.crc32(name.encode()) % 100 < VAL_FRACTION * 100 else "train"


@dataclass
class TrainPair:
    """A real pair and its ground truth.

    Attributes:
        optical, sar: ``(H, W)`` float32 in [0, 1], preprocessed as for matching.
        to_sar: 3 x 3, optical px -> SAR px.
        fine_ok: the ground truth is trusted to about a pixel: the pair trains the fine loss too.
        sar_valid: ``(H, W)`` bool validity of the SAR (None: all valid).
        weight: how likely the pair is to be drawn, relative to the others.
    """

    name: str
    optical: np.ndarray
    sar: np.ndarray
    to_sar: np.ndarray
    fine_ok: bool
    sar_valid: np.ndarray | None = None
    weight: float = 1.0


def load_volkov(data_dir: str | Path, split: str = "train") -> list[TrainPair]:
    d = Path(data_dir) / "volkov_s1s2_10m"
    pairs = []
    with open(d / "alignment_check.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if volkov_split(r["pair"]) != split:
            continue
        agree = r["n_strong_quadrants"] == "4" and float(r["quadrant_spread_px"]) <= 1.5
        shift = np.array([float(r["median_dx_px"]), float(r["median_dy_px"])]) if agree else np.zeros(2)
        opt = prepare_optical(read_raster(d / "opt" / r["pair"], "optical"))
        sar = prepare_sar(read_raster(d / "sar" / r["pair"], "SAR"), PreprocessConfig())
        pairs.append(TrainPair(r["pair"], opt, sar, translation(*shift), agree))
    return pairs


def load_registered(reports: list[str] | tuple[str, ...], min_side: int) -> list[TrainPair]:
    """Training pairs from registrations by ``osreg register`` (each its ``report.json``): the inputs it names, read
    with the bands and border masking it used and preprocessed as the other training pairs, with the transform it
    found (optical px -> SAR px) as ground truth. Only
    results the verdict accepted are taken. That ground truth is osreg's own estimate, not an independent one, so
    these pairs train the coarse loss only (like volkov pairs whose check is inconclusive). Each pair's weight is
    its optical area (:func:`add_registered` scales them to a share of the samples).

    Raises:
        InputError: a report that cannot be read, of a scene (a displacement field), refused by the verdict, naming
            inputs that are missing, or an optical image with a side under ``min_side`` px (the training crop).
    """
    pairs = []
    for path in reports:
        try:
            report = json.loads(Path(path).read_text())
            H = np.asarray(report["transform"]["optical_px_to_sar_px"], float)
            names = report["inputs"]["optical"]["path"], report["inputs"]["sar"]["path"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path} is not a readable osreg report.json ({e})") from e
        if "scene" in report:
            raise InputError(f"{path} is a scene registration: its answer is a displacement field, not the one "
                             "transform training takes; register the pair as a chip (osreg register --chip)")
        if report.get("verdict") != "good" or H.shape != (3, 3):
            raise InputError(f"{path}: the verdict refused this registration ({'; '.join(report.get('reasons', []))}); "
                             "only accepted registrations can serve as ground truth")
        for name in names:
            if not Path(name).is_file():
                raise InputError(f"{path} names {name}, which does not exist (reports keep the input paths as given: "
                                 "read it from where it was registered)")
        optical, sar = _read_as_registered(names, report.get("config", {}))
        if min(optical.width, optical.height) < min_side:
            raise InputError(f"{path}: the optical image is {optical.width} x {optical.height} px, smaller than the "
                             f"{min_side} px training crop")
        pairs.append(TrainPair(Path(path).parent.name, prepare_optical(optical),
                               prepare_sar(sar, PreprocessConfig()), H, False, sar.mask,
                               float(optical.width * optical.height)))
    return pairs


def _read_as_registered(names: tuple[str, str], config: dict) -> tuple:
    """The optical and SAR rasters of a registration, with the bands and border masking its config chose (the
    preprocessing is the training's own, as for every pair)."""
    from osreg.pipeline import RegisterConfig, mask_borders, read_inputs

    bands = config.get("optical_bands")
    used = RegisterConfig(optical_bands=tuple(bands) if bands else None, sar_band=config.get("sar_band"),
                          mask_borders=config.get("mask_borders", True))
    optical, sar, _ = mask_borders(*read_inputs(*names, used), used)
    return optical, sar


def add_registered(train: list[TrainPair], registered: list[TrainPair], share: float) -> list[TrainPair]:
    """``train`` and ``registered`` pairs, weighted so that the registered ones are drawn for ``share`` of the
    samples (each in proportion to its ``weight``; ``train`` keeps its own weights)."""
    if not registered:
        return list(train)
    base = sum(p.weight for p in train)
    own = sum(p.weight for p in registered)
    scale = share / (1 - share) * base / own
    return list(train) + [dataclasses.replace(p, weight=p.weight * scale) for p in registered]


@dataclass(frozen=True)
class AugmentConfig:
    """Synthetic deformation of the SAR crop: rotation uniform in +-max_rotation, log-uniform scale in
    [1/max_scale, max_scale], perspective moving corners by up to ``perspective`` of the size; with probability
    1/2 each, a Gaussian blur of sigma up to ``blur`` px on either image (resampled images lose speckle detail)."""

    crop: int = 256
    max_rotation: float = 50.0
    max_scale: float = 1.6
    perspective: float = 0.05
    blur: float = 0.0


def random_homography(size: int, rng: np.random.Generator, cfg: AugmentConfig, strength: float = 1.0) -> np.ndarray:
    """Optical-crop px -> SAR-crop px, about the crop centre; ``strength`` in [0, 1] scales the ranges
    (curriculum)."""
    c = (size - 1) / 2
    rot = cfg.max_rotation * strength
    ls = np.log(cfg.max_scale) * strength
    theta = np.radians(rng.uniform(-rot, rot))
    s = np.exp(rng.uniform(-ls, ls))
    A = np.array([[s * np.cos(theta), -s * np.sin(theta), 0], [s * np.sin(theta), s * np.cos(theta), 0], [0, 0, 1]])
    P = np.eye(3)
    P[2, :2] = rng.uniform(-cfg.perspective, cfg.perspective, 2) / size
    T = np.array([[1, 0, c], [0, 1, c], [0, 0, 1.0]])
    Ti = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]])
    shift = np.array([[1, 0, rng.uniform(-8, 8)], [0, 1, rng.uniform(-8, 8)], [0, 0, 1.0]])
    return shift @ T @ P @ A @ Ti


def sample(pair: TrainPair, rng: np.random.Generator, cfg: AugmentConfig, strength: float = 1.0):
    """A training sample: optical crop, deformed SAR crop (same size), its validity mask, H (opt crop -> SAR
    crop px), fine_ok."""
    n = cfg.crop
    h, w = pair.optical.shape
    x0 = int(rng.integers(0, w - n + 1))
    y0 = int(rng.integers(0, h - n + 1))
    opt = pair.optical[y0:y0 + n, x0:x0 + n]
    H = random_homography(n, rng, cfg, strength)
    # SAR crop pixel q shows full-SAR pixel to_sar(H^-1 q + (x0, y0))
    to_full = pair.to_sar @ translation(x0, y0) @ np.linalg.inv(H)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    sar = cv2.warpPerspective(pair.sar, to_full, (n, n), flags=flags, borderValue=0)
    sar_valid = np.ones_like(pair.sar, np.uint8) if pair.sar_valid is None else pair.sar_valid.astype(np.uint8)
    valid = cv2.warpPerspective(sar_valid, to_full, (n, n), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                borderValue=0) > 0
    if rng.random() < 0.5:  # photometric jitter of the optical (gamma)
        opt = np.clip(opt, 0, 1) ** rng.uniform(0.7, 1.4)
    if cfg.blur > 0:
        if rng.random() < 0.5:
            sar = cv2.GaussianBlur(sar, (0, 0), rng.uniform(0.3, cfg.blur))
        if rng.random() < 0.5:
            opt = cv2.GaussianBlur(opt, (0, 0), rng.uniform(0.3, cfg.blur))
    return opt.astype(np.float32), sar.astype(np.float32), valid, H, pair.fine_ok


def make_batch(pairs: list[TrainPair], rng: np.random.Generator, batch: int, augment: AugmentConfig,
               strength: float = 1.0):
    """A batch of :func:`sample` items as tensors: optical (B, 1, n, n), SAR (B, 1, n, n), SAR validity (B, n, n),
    H (B, 3, 3; optical crop px -> SAR crop px) and fine_ok (B,)."""
    w = np.array([p.weight for p in pairs], float)
    if np.all(w == w[0]):  # the draws of runs before pairs had weights
        picks = [pairs[rng.integers(len(pairs))] for _ in range(batch)]
    else:
        picks = [pairs[k] for k in rng.choice(len(pairs), size=batch, p=w / w.sum())]
    items = [sample(p, rng, augment, strength) for p in picks]
    opt = torch.from_numpy(np.stack([it[0] for it in items]))[:, None]
    sar = torch.from_numpy(np.stack([it[1] for it in items]))[:, None]
    valid = torch.from_numpy(np.stack([it[2] for it in items]))
    H = torch.from_numpy(np.stack([it[3] for it in items])).float()
    fine_ok = torch.tensor([it[4] for it in items])
    return opt, sar, valid, H, fine_ok


def cell_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, H, W) pixel validity -> (B, H/8, W/8) cells that are mostly valid."""
    return torch.nn.functional.avg_pool2d(valid[:, None].float(), 8)[:, 0] > 0.5
