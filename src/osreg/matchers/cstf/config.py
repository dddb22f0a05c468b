"""CSTF configuration: a frozen dataclass with named presets, saved inside every checkpoint (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from osreg.configs import DictConfig
from osreg.errors import InputError


@dataclass(frozen=True)
class CSTFConfig(DictConfig):
    """Network and inference settings of CSTF.

    Attributes:
        n_orientations: oriented-gradient channels fed to the encoders beside the image.
        channels: encoder widths; the features are at half resolution.
        dim: dimension of the learned part of the feature (the fixed CFOG-like part adds ``n_orientations``).
        template: side of a keypoint's template (pixels; its four quadrants are the regions of the maps).
        radius: the correspondence map covers candidates within this many pixels of the predicted position.
        stride: candidate spacing (pixels; the features' resolution).
        head_channels: width of the fully convolutional classifier.
        max_keypoints: optical keypoints matched (inference); SAR keypoints detected likewise.
        min_confidence: smallest probability mass of the candidates (renormalised without "no match") on the 3x3
            cells around the winner, for a kept match (a keypoint is matched at all when "no match" has probability
            below 1/2).
        max_side: working resolution (longer side, pixels).
        keypoint_scales: scales of the detector (sigma of the smallest, per octave, octaves).
    """

    n_orientations: int = 8
    channels: tuple[int, int] = (24, 48)
    dim: int = 32
    template: int = 32
    radius: int = 16
    stride: int = 2
    head_channels: int = 32
    max_keypoints: int = 512
    min_confidence: float = 0.3
    max_side: int = 1024
    keypoint_scales: tuple[float, int, int] = (1.6, 3, 3)

    def __post_init__(self) -> None:
        if self.radius % self.stride:
            raise InputError(f"radius {self.radius} must be a multiple of stride {self.stride}")
        if self.stride != 2:
            raise InputError("the CSTF features are at half resolution: stride must be 2")
        if self.template % (2 * self.stride) or self.template < 8:
            raise InputError(f"template must be a multiple of {2 * self.stride} px and at least 8, got {self.template}")
        if not 0 <= self.min_confidence <= 1:
            raise InputError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.max_side < 64:
            raise InputError(f"max_side must be at least 64 px, got {self.max_side}")

    @property
    def cells(self) -> int:
        """Candidates per side of a correspondence map."""
        return 2 * self.radius // self.stride + 1


PRESETS: dict[str, CSTFConfig] = {
    "default": CSTFConfig(),
    "tiny": CSTFConfig(channels=(8, 16), dim=16, head_channels=8, max_keypoints=128, radius=12, template=16,
                       max_side=256),
}
PRESETS["wide"] = replace(PRESETS["default"], radius=32)

# fields that may differ from the checkpoint at inference; the others define the trained network
INFERENCE_FIELDS = ("max_keypoints", "min_confidence", "max_side", "radius")
