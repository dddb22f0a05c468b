"""Settings shared by the dense matchers (TAR, PromptMID): working resolution and dense matching (torch-free, so that
method options can be checked without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass

from osreg.configs import DictConfig
from osreg.errors import InputError


@dataclass(frozen=True)
class DenseMatcherConfig(DictConfig):
    """Attributes:
    max_side: working resolution of inference (longer side of the optical image, px).
    temperature: dual-softmax temperature of coarse matching.
    coarse_threshold: smallest coarse confidence kept.
    fine_window: fine refinement window (pixels of the 1/2 grid, odd).
    """

    max_side: int = 512
    temperature: float = 0.1
    coarse_threshold: float = 0.05
    fine_window: int = 7

    def __post_init__(self) -> None:
        if self.fine_window % 2 == 0:
            raise InputError(f"fine_window must be odd, got {self.fine_window}")
        if self.max_side < 64:
            raise InputError(f"max_side must be at least 64 px, got {self.max_side}")
