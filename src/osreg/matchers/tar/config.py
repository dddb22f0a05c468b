"""TAR configuration: a frozen dataclass with named presets, saved inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from osreg.errors import InputError


@dataclass(frozen=True)
class TARConfig:
    """Model and inference settings of TAR.

    Attributes:
        stem_channels, trunk_channels: MSFL widths (1/2 stem; 1/4 and 1/8 trunk).
        d_model: coarse (1/8) feature width; fine_dim: fine (1/2) feature width.
        n_heads: attention heads; layers: attention layer types in order ("self" / "cross").
        text_encoder: identity of the text bank used by TAFE; text_dim: its embedding width.
        use_text: inject text descriptors (False: the TAFE ablation, same weights, gated residual skipped).
        temperature: dual-softmax temperature; coarse_threshold: smallest coarse confidence kept.
        fine_window: fine refinement window (fine pixels, odd).
        max_side: working resolution of inference.
        rotations: test-time rotations of the SAR (degrees, counter-clockwise on screen) searched; multiples of 90
            are exact, others resample onto a canvas that holds the whole turned image.
        scales: test-time rescalings of the SAR searched.
        search_side: working resolution of the hypothesis search.
        rectify_iterations: coarse passes that refine the rectification of the SAR before the fine pass.
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
    temperature: float = 0.1
    coarse_threshold: float = 0.05
    fine_window: int = 7
    max_side: int = 512
    rotations: tuple[int, ...] = (0, 45, 90, 135, 180, 225, 270, 315)
    scales: tuple[float, ...] = (0.7, 1.0, 1.4)
    search_side: int = 256
    rectify_iterations: int = 2

    def __post_init__(self) -> None:
        if self.fine_window % 2 == 0:
            raise InputError(f"fine_window must be odd, got {self.fine_window}")
        if self.d_model % self.n_heads:
            raise InputError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TARConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown TAR config fields {sorted(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


PRESETS: dict[str, TARConfig] = {
    "default": TARConfig(),
    "tiny": TARConfig(stem_channels=8, trunk_channels=(16, 32), d_model=32, fine_dim=16, n_heads=2,
                      layers=("self", "cross"), max_side=256, search_side=128),
}
