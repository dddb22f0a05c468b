"""CSTF: scale-invariant keypoints in both images, cross-spatial correspondence maps, matching as classification.

- :mod:`.config`: the frozen config and its presets (torch-free);
- :mod:`.keypoints`: the multi-scale keypoint detector on modality-robust maps (numpy/OpenCV);
- :mod:`.model`: the network (feature encoders, correspondence maps, fully convolutional classifier);
- :mod:`.matcher`: :class:`CSTFMatcher` (the matcher contract) and :func:`load_cstf` (checkpoints).

The design and the reasons for each choice are in ``docs/cstf.md``. The matcher and the loader are imported
lazily, so that reading the config never loads torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"CSTFMatcher": "matcher", "load_cstf": "matcher", "SHIPPED": "matcher", "CSTFNet": "model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SHIPPED", "CSTFMatcher", "CSTFNet", "load_cstf"]
