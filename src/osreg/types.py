"""The result type every matcher returns.

Pixel convention (used everywhere in osreg): coordinates are ``(x, y)`` = (column, row), 0-based, with
``(0, 0)`` the centre of the top-left pixel (OpenCV's convention). A raster's affine geotransform maps the
pixel *corner* ``(col, row)``, so the map position of pixel ``(x, y)`` is ``transform @ (x + 0.5, y + 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# a matcher's raw output before it becomes a MatchResult: keypoints0 (N, 2), keypoints1 (N, 2), confidence (N,)
Matches = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class MatchResult:
    """Correspondences between image 0 (optical) and image 1 (SAR).

    Attributes:
        keypoints0: ``(N, 2)`` float64 pixel coordinates in image 0.
        keypoints1: ``(N, 2)`` float64 pixel coordinates in image 1; row ``i`` corresponds to row ``i`` of
            ``keypoints0``.
        confidence: ``(N,)`` float64 in ``[0, 1]``, higher is more reliable.
        info: free-form diagnostics of the matcher (counts, timings); never needed to use the result.
    """

    keypoints0: np.ndarray
    keypoints1: np.ndarray
    confidence: np.ndarray
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        k0 = np.asarray(self.keypoints0, dtype=np.float64).reshape(-1, 2)
        k1 = np.asarray(self.keypoints1, dtype=np.float64).reshape(-1, 2)
        c = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
        if not (len(k0) == len(k1) == len(c)):
            raise ValueError(
                f"MatchResult needs equal lengths, got keypoints0={len(k0)}, keypoints1={len(k1)}, "
                f"confidence={len(c)}"
            )
        object.__setattr__(self, "keypoints0", k0)
        object.__setattr__(self, "keypoints1", k1)
        object.__setattr__(self, "confidence", c)

    def __len__(self) -> int:
        return len(self.keypoints0)

    @classmethod
    def empty(cls, **info) -> MatchResult:
        """A correctly shaped result with no match."""
        return cls(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), dict(info))

    def subset(self, keep: np.ndarray) -> MatchResult:
        """The matches selected by a boolean mask or index array."""
        return MatchResult(self.keypoints0[keep], self.keypoints1[keep], self.confidence[keep], dict(self.info))

    def scaled(self, scale0: float, scale1: float) -> MatchResult:
        """Map coordinates found on images resized by ``scale`` back to the original pixel grid.

        With pixel centres at integers, a pixel ``x_s`` of an image resized by ``s`` lies at
        ``(x_s + 0.5) / s - 0.5`` in the original image.
        """
        k0 = (self.keypoints0 + 0.5) / scale0 - 0.5
        k1 = (self.keypoints1 + 0.5) / scale1 - 0.5
        return MatchResult(k0, k1, self.confidence, dict(self.info))
