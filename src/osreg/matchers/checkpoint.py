"""One checkpoint loader for the trained matchers (TAR, PromptMID, CSTF): safe reading, config rebuilding, strict
loading.

Every checkpoint a user can point to (``tar[weights=...]``, ``promptmid[weights=...]``, ``osreg train --resume``,
``--init``) is read with ``torch.load(..., weights_only=True)``: tensors and plain data only, so a crafted file cannot
run code. Anything else is refused with a :class:`~osreg.errors.CheckpointError` before any of it is used.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from osreg.errors import CheckpointError, InputError
from osreg.weights import resolve_weights

logger = logging.getLogger(__name__)

C = TypeVar("C")

# settings that checkpoints written before the search and the template refinement became stages stored in their
# model config; they are stage settings now (osreg.matchers registry) and are ignored when a model is rebuilt
LEGACY_STAGE_KEYS = frozenset({
    "rotations", "scales", "search_side", "rectify_iterations", "accept_inliers", "accept_ratio", "prescreen_side",
    "prescreen_keep", "template_refine", "template_radius", "template_min_correction",
})


def read_checkpoint(path: str | Path, kind: str, required: tuple[str, ...]) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) and check that it holds the ``required`` entries.

    Args:
        path: the file.
        kind: what it should be ("TAR", "PromptMID", "TAR training"), for messages.
        required: top-level entries it must have.

    Raises:
        CheckpointError: unreadable, not a dictionary, objects other than tensors and plain data, or entries missing.
    """
    p = Path(path)
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p} is not a {kind} checkpoint: it holds objects other than tensors and plain data, which osreg "
            f"refuses to load ({first})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{p} is not a {kind} checkpoint: cannot read it ({exc})") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{p} is not a {kind} checkpoint (it holds a {type(ck).__name__}, not a dictionary)")
    missing = [k for k in required if k not in ck]
    if missing:
        raise CheckpointError(f"{p} is not a {kind} checkpoint (no {' / '.join(missing)} entries)")
    return ck


def checkpoint_config(ck: dict[str, Any], config_cls: type[C], path: str | Path, kind: str) -> C:
    """Rebuild the model config saved in a checkpoint (stage settings of older checkpoints are dropped)."""
    saved = ck["model_config"]
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} is not a {kind} checkpoint (model_config is not a dictionary)")
    legacy = sorted(set(saved) & LEGACY_STAGE_KEYS - {f.name for f in fields(config_cls)})  # type: ignore[arg-type]
    if legacy:
        logger.debug("%s: ignoring stage settings saved with the model: %s", path, legacy)
    try:
        return config_cls.from_dict({k: v for k, v in saved.items() if k not in legacy})  # type: ignore[attr-defined]
    except (InputError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a {kind} checkpoint this osreg can rebuild: {exc}") from None


def with_inference_options(cfg: C, overrides: dict[str, Any], inference_fields: tuple[str, ...], kind: str) -> C:
    """``cfg`` with the inference settings in ``overrides`` changed.

    Raises:
        InputError: an override would change the trained network.
    """
    fixed = sorted(set(overrides) - set(inference_fields))
    if fixed:
        raise InputError(f"{kind} options {fixed} define the trained network and cannot be changed at inference; "
                         f"changeable: {', '.join(sorted(inference_fields))}")
    return replace(cfg, **overrides)  # type: ignore[type-var]


def read_trained(weights: str | Path | None, shipped: str, kind: str, state_key: str, config_cls: type[C],
                 inference_fields: tuple[str, ...], overrides: dict[str, Any]) -> tuple[Path, dict[str, Any], C]:
    """The checkpoint of a trained matcher (``weights``, or the one ``shipped`` in the package), read safely, and the
    config it was trained with, changed by the inference ``overrides``: ``(path, checkpoint, config)``.

    Raises:
        WeightsNotFoundError: no file where it looked.
        CheckpointError: not a ``kind`` checkpoint (or one holding objects other than tensors and plain data).
        InputError: an override would change the trained network.
    """
    path = resolve_weights(weights, "osreg", shipped, "reinstall osreg (the weights ship inside the package)")
    ck = read_checkpoint(path, kind, (state_key, "model_config"))
    cfg = with_inference_options(checkpoint_config(ck, config_cls, path, kind), overrides, inference_fields, kind)
    return path, ck, cfg


def load_state(module: torch.nn.Module, state: Any, path: str | Path, kind: str) -> None:
    """Load weights strictly into ``module``.

    Raises:
        CheckpointError: the weights do not fit the network the checkpoint's config describes.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a {kind} checkpoint (its weights are not a state dictionary)")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        detail = " ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else type(exc).__name__
        raise CheckpointError(f"the weights in {path} do not fit the {kind} network: {detail}") from None
