"""SIFT with RootSIFT descriptors, Lowe's ratio test and a mutual check (OpenCV)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from osreg.matchers.base import Matcher, mutual_nearest_neighbours
from osreg.types import MatchResult


@dataclass(frozen=True)
class SIFTConfig:
    """Attributes: max_keypoints per image; ratio for Lowe's test; contrast_threshold of the detector;
    max_side working resolution."""

    max_keypoints: int = 2000
    ratio: float = 0.9
    contrast_threshold: float = 0.02
    max_side: int = 1024


def root_sift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012): L1-normalise, then element-wise square root."""
    d = desc.astype(np.float32)
    d /= np.maximum(np.abs(d).sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d)


class SIFTMatcher(Matcher):
    name = "sift"
    min_size = 32

    def __init__(self, **options) -> None:
        self.config = SIFTConfig(**options)
        self._sift = cv2.SIFT_create(
            nfeatures=self.config.max_keypoints, contrastThreshold=self.config.contrast_threshold
        )

    def _detect(self, img: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        u8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        m = None if mask is None else mask.astype(np.uint8) * 255
        kps, desc = self._sift.detectAndCompute(u8, m)
        if desc is None or len(kps) == 0:
            return np.zeros((0, 2)), np.zeros((0, 128), np.float32)
        xy = np.array([k.pt for k in kps], dtype=np.float64)
        return xy, root_sift(desc)

    def match_working(self, image0, image1, mask0, mask1) -> MatchResult:
        xy0, d0 = self._detect(image0, mask0)
        xy1, d1 = self._detect(image1, mask1)
        i0, i1, conf = mutual_nearest_neighbours(d0, d1, self.config.ratio)
        return MatchResult(xy0[i0], xy1[i1], conf, {"n_kpts0": len(xy0), "n_kpts1": len(xy1),
                                                    "config": asdict(self.config)})
