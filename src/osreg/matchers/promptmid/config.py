"""PromptMID configuration: a frozen dataclass with named presets, saved inside every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from osreg.errors import InputError
from osreg.matchers.dense_config import DenseMatcherConfig

EXTRACTORS = ("aliked", "disk", "xfeat")
SAR_PRIORS = ("none", "sar2sar")

# channels each frozen extractor gives at the coarse (1/8) grid, per pyramid scale; and at the fine (1/2) grid
COARSE_CHANNELS = {"aliked": 128, "disk": 128, "xfeat": 64}
FINE_CHANNELS = {"aliked": 128, "disk": 128, "xfeat": 0}  # XFeat has no map finer than 1/8


@dataclass(frozen=True)
class PromptMIDConfig(DenseMatcherConfig):
    """Model and inference settings of PromptMID.

    Attributes:
        extractors: frozen networks whose dense descriptors are aggregated (from "aliked", "disk", "xfeat").
        pyramid_scales: image scales each extractor runs at; all coarse maps are resampled to the 1/8 grid of
            the input (fine features come from scale 1 only).
        hidden: width of the aggregation; descriptor_dim: coarse descriptor width; fine_dim: fine descriptor width.
        text_encoder: identity of the shared text bank (:mod:`osreg.text`); text_dim: its embedding width.
        use_prompts: condition the aggregation on land-use affinities (False: the prompt ablation, same weights).
        prompt_temperature: softmax temperature of the land-use affinities (cosine similarities).
        max_side, temperature, coarse_threshold, fine_window: see
            :class:`~osreg.matchers.dense_config.DenseMatcherConfig`.
        sar_prior: "sar2sar" despeckles the SAR with deepdespeckling's SAR2SAR before the extractors.
        diffusion_checkpoint: a local Stable Diffusion folder (diffusers format) whose UNet decoder features join
            the coarse features; None (default) leaves the branch off. A model trained without it cannot use it.
        diffusion_timestep: noise timestep at which diffusion features are read; diffusion_channels: their width.

    The rotation/scale search is a stage around the matcher (PromptMID's default for it is in the method
    registry, :mod:`osreg.matchers`).
    """

    extractors: tuple[str, ...] = ("aliked", "disk", "xfeat")
    pyramid_scales: tuple[float, ...] = (1.0, 0.5)
    hidden: int = 128
    descriptor_dim: int = 128
    fine_dim: int = 64
    text_encoder: str = "minilm-l6-v2"
    text_dim: int = 384
    use_prompts: bool = True
    prompt_temperature: float = 0.07
    sar_prior: str = "none"
    diffusion_checkpoint: str | None = None
    diffusion_timestep: int = 100
    diffusion_channels: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.extractors) - set(EXTRACTORS)
        if not self.extractors or unknown:
            raise InputError(f"extractors must be a non-empty subset of {EXTRACTORS}, got {self.extractors}")
        if self.sar_prior not in SAR_PRIORS:
            raise InputError(f"sar_prior must be one of {SAR_PRIORS}, got {self.sar_prior!r}")
        if not self.pyramid_scales or 1.0 not in self.pyramid_scales:
            raise InputError(f"pyramid_scales must include 1.0, got {self.pyramid_scales}")

    @property
    def coarse_channels(self) -> int:
        return sum(COARSE_CHANNELS[e] for e in self.extractors) * len(self.pyramid_scales) + self.diffusion_channels

    @property
    def fine_channels(self) -> int:
        return sum(FINE_CHANNELS[e] for e in self.extractors)


PRESETS: dict[str, PromptMIDConfig] = {
    "default": PromptMIDConfig(),
    # for tests and quick experiments: the cheapest extractor, one scale, a narrow head
    "tiny": PromptMIDConfig(extractors=("xfeat", "aliked"), pyramid_scales=(1.0,), hidden=32, descriptor_dim=32,
                            fine_dim=16, max_side=256),
}

# fields that may differ from the checkpoint at inference; the others define the trained network
INFERENCE_FIELDS = ("use_prompts", "max_side", "temperature", "coarse_threshold", "fine_window", "sar_prior",
                    "diffusion_checkpoint")
