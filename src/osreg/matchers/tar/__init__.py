"""TAR: text semantic assisted registration (MSFL + TAFE + CFDM).

- :mod:`.config`: the frozen config and its presets (torch-free);
- :mod:`.model`: the network;
- :mod:`.matcher`: :class:`TARMatcher` (the matcher contract) and :func:`load_tar` (checkpoints).

The matcher and the loader are imported lazily, so that reading the config never loads torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"TARMatcher": "matcher", "load_tar": "matcher", "SHIPPED": "matcher", "TARModel": "model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SHIPPED", "TARMatcher", "TARModel", "load_tar"]
