"""The settings of a whole-scene registration (torch-free, validated at the boundary)."""

from __future__ import annotations

from dataclasses import dataclass

import rasterio

from osreg.errors import InputError

SCENE_MODELS = ("auto", "local", "affine", "homography", "similarity")


@dataclass(frozen=True)
class SceneConfig:
    """How a scene is registered: coarse to fine over windows.

    Attributes:
        coarse_side: longest side of the decimated pair of the global stage (pixels).
        spacing: distance between tie-point windows at full resolution (optical pixels).
        window: side of a tie-point window (optical pixels).
        model: "local" (global affine plus a smoothed thin-plate-spline correction of the tie points), "affine",
            "homography", "similarity", or "auto" (local where the tie points support it: enough windows, and a
            smaller cross-validated error than the affine fit).
        min_window_matches: matches a window needs to give a tie point.
        min_local_windows: windows the local model needs.
        field_step: lattice spacing of the displacement field (optical pixels).
        block: side of the blocks resampled at a time (pixels).
        chunk: windows matched by one task (one matcher built per task).
        gdal_cache_mb: GDAL's block cache during the run (bounds memory).
    """

    coarse_side: int = 1024
    spacing: int = 512
    window: int = 320
    model: str = "auto"
    min_window_matches: int = 6
    min_local_windows: int = 12
    field_step: int = 32
    block: int = 1024
    chunk: int = 16
    gdal_cache_mb: int = 256

    def __post_init__(self) -> None:
        if self.model not in SCENE_MODELS:
            raise InputError(f"unknown scene model {self.model!r}; expected one of {', '.join(SCENE_MODELS)}")
        for name in ("coarse_side", "window"):
            if getattr(self, name) < 128:
                raise InputError(f"scene {name} must be at least 128 pixels, got {getattr(self, name)}")
        if self.spacing < 64:
            raise InputError(f"tie-point spacing must be at least 64 pixels, got {self.spacing}")
        if not 4 <= self.field_step <= 256:
            raise InputError(f"field step must be 4 to 256 pixels, got {self.field_step}")
        if self.block < 64:
            raise InputError(f"resampling block must be at least 64 pixels, got {self.block}")
        if self.min_window_matches < 3 or self.min_local_windows < 4 or self.chunk < 1:
            raise InputError("scene needs min_window_matches >= 3, min_local_windows >= 4 and chunk >= 1")


def gdal_env(scene: SceneConfig) -> rasterio.Env:
    """GDAL settings of a scene run: a bounded block cache (rasterio takes GDAL_CACHEMAX in bytes)."""
    return rasterio.Env(GDAL_CACHEMAX=scene.gdal_cache_mb * 2**20)
