"""TAR configuration: a frozen dataclass with named presets, saved inside every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, replace

from osreg.errors import InputError
from osreg.matchers.dense_config import DenseMatcherConfig


@dataclass(frozen=True)
class TARConfig(DenseMatcherConfig):
    """Model and inference settings of TAR.

    Attributes:
        stem_channels, trunk_channels: MSFL widths (1/2 stem; 1/4 and 1/8 trunk).
        d_model: coarse (1/8) feature width; fine_dim: fine (1/2) feature width.
        n_heads: attention heads; layers: attention layer types in order ("self" / "cross").
        text_encoder: identity of the text bank used by TAFE; text_dim: its embedding width.
        use_text: inject text descriptors (False: the TAFE ablation, same weights, gated residual skipped).
        fine_attention: refine coarse matches with self- and cross-attention between the two fine windows
            (:class:`~osreg.matchers.tar.model.FineWindowRefiner`) instead of a plain correlation window.
        max_side, temperature, coarse_threshold, fine_window: see
            :class:`~osreg.matchers.dense_config.DenseMatcherConfig`.

    The rotation/scale search and the template refinement are stages around the matcher, not part of its config:
    TAR's defaults for them are in the method registry (:mod:`osreg.matchers`), with the reasons.
    """

    stem_channels: int = 24
    trunk_channels: tuple[int, int] = (48, 96)
    d_model: int = 96
    fine_dim: int = 48
    n_heads: int = 4
    layers: tuple[str, ...] = ("self", "cross", "self", "cross")
    text_encoder: str = "minilm-l6-v2"
    text_dim: int = 384
    use_text: bool = True
    fine_attention: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.n_heads:
            raise InputError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")


PRESETS: dict[str, TARConfig] = {
    "default": TARConfig(),
    "fine_attention": TARConfig(fine_attention=True),
    "tiny": TARConfig(stem_channels=8, trunk_channels=(16, 32), d_model=32, fine_dim=16, n_heads=2,
                      layers=("self", "cross"), max_side=256),
}
PRESETS["tiny_fine_attention"] = replace(PRESETS["tiny"], fine_attention=True)

# fields that may differ from the checkpoint at inference; the others define the trained network
INFERENCE_FIELDS = ("use_text", "max_side", "temperature", "coarse_threshold", "fine_window")
