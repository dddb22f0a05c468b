"""TAR configuration: a frozen dataclass with named presets, saved inside every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, replace

from osreg.errors import InputError
from osreg.matchers.search import DenseMatcherConfig


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
        temperature, coarse_threshold, fine_window: see :class:`~osreg.matchers.search.DenseMatcherConfig`.
        max_side, rotations, scales, search_side, rectify_iterations, accept_inliers, accept_ratio: see
            :class:`~osreg.matchers.search.SearchConfig`. TAR stops its search at a hypothesis with 80 coarse
            inliers making up half its matches: on 40 calibration cases from volkov's training split
            (``scripts/calibrate_search.py``) no wrong hypothesis had more than 69, and the stop never changed
            which hypothesis was right (docs/tar.md).
        prescreen_side, prescreen_keep: see :class:`~osreg.matchers.search.SearchConfig`. Off for TAR: a
            prescreen at 128-160 px saved about 1.5 s a large-deformation pair on 20 volkov training pairs but
            registered one or two fewer of them (docs/tar.md, "Speed and memory").
        template_refine, template_radius: see :class:`~osreg.matchers.search.SearchConfig`. On for TAR: CFOG
            template matching on the pair TAR has aligned replaces TAR's matches where it agrees with them
            (on 20 volkov training pairs, SR@3 40 -> 70 % aligned and 0 -> 30 % under large deformation,
            docs/tar.md); ``tar[template_refine=false]`` is TAR's own matches.
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
    accept_inliers: int = 80
    accept_ratio: float = 0.5
    template_refine: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d_model % self.n_heads:
            raise InputError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")


PRESETS: dict[str, TARConfig] = {
    "default": TARConfig(),
    "fine_attention": TARConfig(fine_attention=True),
    "tiny": TARConfig(stem_channels=8, trunk_channels=(16, 32), d_model=32, fine_dim=16, n_heads=2,
                      layers=("self", "cross"), max_side=256, search_side=128),
}
PRESETS["tiny_fine_attention"] = replace(PRESETS["tiny"], fine_attention=True)
