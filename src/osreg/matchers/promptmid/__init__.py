"""PromptMID: zero-shot modality-invariant descriptors from frozen networks, guided by land-use prompts.

- :mod:`.config`: the frozen config and its presets (torch-free);
- :mod:`.frozen`, :mod:`.model`, :mod:`.diffusion`: the frozen extractors, the trained aggregator, the optional
  diffusion branch;
- :mod:`.matcher`: :class:`PromptMIDMatcher` (the matcher contract), :func:`load_promptmid` (checkpoints) and
  :func:`build_promptmid` (an untrained model for training).

The matcher and the loaders are imported lazily, so that reading the config never loads torch.
"""

from __future__ import annotations

from typing import Any

from osreg.matchers.promptmid.config import PRESETS, PromptMIDConfig

_LAZY = {"PromptMIDMatcher": "matcher", "load_promptmid": "matcher", "build_promptmid": "matcher",
         "despeckle_display": "matcher", "SHIPPED": "matcher", "MIN_CELL_STD": "matcher", "PromptMIDNet": "model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PRESETS", "PromptMIDConfig", "PromptMIDMatcher", "PromptMIDNet", "build_promptmid", "load_promptmid"]
