"""Progress of long work, reported through a factory the caller passes (the CLI's draws a bar on stderr).

The library never draws anything itself: a function that takes ``progress`` calls ``progress(description,
total)`` once per stage and ``update(n)`` / ``close()`` on what it returns (``tqdm`` fits this contract).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ProgressBar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> object: ...


ProgressFactory = Callable[[str, int], ProgressBar]


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def silent(description: str, total: int) -> ProgressBar:
    """The default factory: no output."""
    return _Silent()


__all__ = ["ProgressBar", "ProgressFactory", "silent"]
