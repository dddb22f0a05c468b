"""Whole-scene registration, coarse to fine, never holding a full-resolution raster in memory.

1. Decimated reads of both scenes (GDAL uses overviews when the files have them).
2. The global stage: the registration core on the decimated pair (:func:`osreg.pipeline.register_rasters`: the
   georeference as starting guess, or the global rotation/scale search without one; the verdict).
3. Tie points at full resolution: windows on a regular grid, each matched by the method's matcher against the
   SAR pre-aligned by the coarse transform (:mod:`osreg.scene.tiles`), in this process or on a Dask cluster.
4. Per-window shifts, local outlier rejection and the model (:mod:`osreg.scene.model`): ``local`` where the tie
   points support it, else a plane transform.
5. The displacement field on a lattice, from which the outputs are resampled block by block
   (:mod:`osreg.scene.resample`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from rasterio.enums import Resampling

from osreg.geometry import apply_transform
from osreg.io.georef import pixel_ground_size_m
from osreg.io.windows import RasterSource
from osreg.pipeline import RegisterConfig, Registration, register_rasters
from osreg.preprocess import optical_limits, resolve_sar_scale, sar_limits
from osreg.progress import ProgressFactory, silent
from osreg.scene.config import SceneConfig, gdal_env
from osreg.scene.field import DisplacementField, WorkingFrame
from osreg.scene.model import SceneModel, WindowShifts, consistent_with_neighbours, fit_scene_model, window_shifts
from osreg.scene.resample import Grid
from osreg.scene.sample import CoarseMask
from osreg.scene.tiles import WindowContext, WindowMatches, match_windows, window_centres
from osreg.types import MatchResult
from osreg.verdict import Verdict

logger = logging.getLogger(__name__)


@dataclass
class SceneRegistration:
    """The outcome of :func:`register_scene`, trusted or not.

    Attributes:
        config, scene: what was done.
        optical, sar: the scene files.
        coarse: the global stage (the core on the decimated pair).
        verdict: the global stage's verdict (a scene is trusted when its global stage is).
        H: the coarse transform at full resolution, optical px -> working px (None when untrusted).
        frame: working frame -> SAR pixels.
        centres: ``(M, 2)`` window centres matched.
        matches: all window matches, keypoints0 optical px, keypoints1 working px.
        kept: ``(N,)`` matches that made tie points (their window agreed with itself and its neighbours).
        shifts: the tie point of every kept window (pre-aligned frame).
        model: the correction.
        displacement: the displacement field (optical px -> working px) the outputs are resampled with.
        residual_px: per kept window, distance of its shift from the model.
        timings: seconds per stage.
    """

    config: RegisterConfig
    scene: SceneConfig
    optical: RasterSource
    sar: RasterSource
    coarse: Registration
    verdict: Verdict
    H: np.ndarray | None = None
    frame: WorkingFrame = field(default_factory=WorkingFrame.pixel_space)
    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    matches: MatchResult = field(default_factory=MatchResult.empty)
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    shifts: WindowShifts | None = None
    model: SceneModel | None = None
    displacement: DisplacementField | None = None
    residual_px: np.ndarray = field(default_factory=lambda: np.zeros(0))
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def georeferenced(self) -> bool:
        return self.frame.georeferenced

    @property
    def grid(self) -> Grid:
        o = self.optical
        return Grid(o.width, o.height, o.crs, o.transform) if o.is_georeferenced else Grid(o.width, o.height)

    def sar_border(self) -> CoarseMask | None:
        """The SAR's black borders found on the decimated scene (None when there were none)."""
        if not self.coarse.border_masked_px.get("sar"):
            return None
        m = self.coarse.sar.mask
        return CoarseMask(m, m.shape[1] / self.sar.width, m.shape[0] / self.sar.height)

    def optical_border(self) -> CoarseMask | None:
        if not self.coarse.border_masked_px.get("optical"):
            return None
        m = self.coarse.optical.mask
        return CoarseMask(m, m.shape[1] / self.optical.width, m.shape[0] / self.optical.height)


def _ground_pixel_m(src: RasterSource) -> float:
    """Ground size of a pixel at the scene centre (metres; geometric mean of its sides)."""
    return float(np.sqrt(np.prod(pixel_ground_size_m(src.crs, src.transform, src.width, src.height))))


def _decimation(scale_x: float, scale_y: float) -> np.ndarray:
    """Full-resolution px -> decimated px (pixel centres at integers)."""
    return np.array([[scale_x, 0, 0.5 * scale_x - 0.5], [0, scale_y, 0.5 * scale_y - 0.5], [0, 0, 1.0]])


def _run_windows(ctx: WindowContext, centres: np.ndarray, chunk: int, client, progress: ProgressFactory
                 ) -> list[WindowMatches]:
    """Match every window, ``chunk`` windows per task, here or on the Dask cluster of ``client``."""
    idx = np.arange(len(centres))
    groups = [(centres[i:i + chunk], idx[i:i + chunk]) for i in range(0, len(centres), chunk)]
    bar = progress("tie points", len(centres))
    results: list[WindowMatches] = []
    try:
        if client is None:
            for c, i in groups:
                results += match_windows(ctx, c, i)
                bar.update(len(i))
        else:
            from distributed import as_completed

            ctx_future = client.scatter(ctx, broadcast=True)
            futures = [client.submit(match_windows, ctx_future, c, i, pure=False, retries=2) for c, i in groups]
            for fut in as_completed(futures):
                part = fut.result()
                results += part
                bar.update(len(part))
    finally:
        bar.close()
    return sorted(results, key=lambda r: r.index)


def register_scene(optical_path: str, sar_path: str, config: RegisterConfig = RegisterConfig(),
                   scene: SceneConfig = SceneConfig(), progress: ProgressFactory = silent, client=None
                   ) -> SceneRegistration:
    """Register a SAR scene to an optical scene of any size.

    Args:
        optical_path, sar_path: raster files.
        config: the method, preprocessing, geometry (of the global stage) and verdict, as for a chip.
        scene: the windows, the model and the resampling.
        progress: progress reporting (see :mod:`osreg.progress`).
        client: a ``distributed.Client`` to match the windows on its workers (None: in this process).

    Raises:
        InputError (and subclasses): as :func:`osreg.pipeline.run_registration`.
    """
    timings: dict[str, float] = {}
    t = time.perf_counter()
    optical = RasterSource.open(optical_path, "optical", config.optical_bands)
    sar = RasterSource.open(sar_path, "SAR", None if config.sar_band is None else [config.sar_band])
    georef = config.use_georeference and optical.is_georeferenced and sar.is_georeferenced
    fo = optical.decimation(scene.coarse_side)
    fs = sar.decimation(scene.coarse_side)
    if georef:  # the SAR decimated to about the ground resolution of the decimated optical image
        fs = max(1, int(np.floor(fo * _ground_pixel_m(optical) / _ground_pixel_m(sar) + 1e-6)))
    with gdal_env(scene):
        opt_dec, sar_dec = optical.read(factor=fo), sar.read(factor=fs)
        opt_nn = optical.read(factor=fo, resampling=Resampling.nearest)  # unaveraged samples for the statistics
        sar_nn = sar.read(factor=fs, resampling=Resampling.nearest)
    timings["read_s"] = time.perf_counter() - t
    logger.info("scene %dx%d (optical) and %dx%d (SAR); global stage at 1/%d and 1/%d", optical.width,
                optical.height, sar.width, sar.height, fo, fs)
    cfg = config if georef or not config.use_georeference else dataclasses.replace(config, use_georeference=False)
    t = time.perf_counter()
    coarse = register_rasters(opt_dec, sar_dec, cfg)
    timings["global_s"] = time.perf_counter() - t
    result = SceneRegistration(config, scene, optical, sar, coarse, coarse.verdict, timings=timings)
    if not coarse.verdict.good or coarse.estimate.H is None:
        logger.warning("global stage not trusted: %s", "; ".join(coarse.verdict.reasons))
        return result
    Do = _decimation(opt_dec.width / optical.width, opt_dec.height / optical.height)
    if georef:
        result.H = np.linalg.inv(Do) @ coarse.estimate.H @ Do
        result.frame = WorkingFrame(True, optical.crs, optical.transform, sar.crs, sar.transform)
    else:
        Ds = _decimation(sar_dec.width / sar.width, sar_dec.height / sar.height)
        result.H = np.linalg.inv(Ds) @ coarse.estimate.H @ Do
    _tie_points(result, opt_nn, sar_nn, progress, client)
    return result


def _tie_points(result: SceneRegistration, opt_nn, sar_nn, progress: ProgressFactory, client) -> None:
    """Steps 3 to 5 of :func:`register_scene` on a trusted global stage."""
    config, scene, optical, sar = result.config, result.scene, result.optical, result.sar
    name = config.method.name
    pre = dataclasses.replace(config.preprocess, sar_scale=resolve_sar_scale(sar_nn, config.preprocess))
    window_method = dataclasses.replace(config.method, search="off", template_refine=None)
    if name == "cfog" and "min_grid_cells" not in dict(window_method.options):
        # the windows keep CFOG's fixed 24 px template grid: they are pre-aligned and many, and the denser grid of
        # small images cost 37 % more time at 8192 px for 0.02 px less median residual (docs/scenes.md)
        window_method = dataclasses.replace(window_method, options=window_method.options + (("min_grid_cells", 0),))
    ctx = WindowContext(optical, sar, result.frame, result.H, window_method, pre,
                        optical_limits(opt_nn, pre, name), sar_limits(sar_nn, pre, name), scene.window,
                        result.optical_border(), result.sar_border())
    centres = window_centres(optical.width, optical.height, scene.spacing, scene.window)
    centres = centres[_usable_centres(result, centres)]
    t = time.perf_counter()
    with gdal_env(scene):
        windows = _run_windows(ctx, centres, scene.chunk, client, progress)
    result.timings["windows_s"] = time.perf_counter() - t
    t = time.perf_counter()
    k0 = np.concatenate([w.keypoints0 for w in windows] + [np.zeros((0, 2))])
    k1 = np.concatenate([w.keypoints1 for w in windows] + [np.zeros((0, 2))])
    conf = np.concatenate([w.confidence for w in windows] + [np.zeros(0)])
    owner = np.concatenate([np.full(len(w.keypoints0), w.index) for w in windows] + [np.zeros(0, int)])
    shifts, kept = window_shifts(windows, scene.min_window_matches)
    agree = consistent_with_neighbours(shifts, scene.spacing)
    kept &= np.isin(owner, shifts.window[agree])
    shifts = shifts.subset(agree)
    logger.info("%d of %d windows gave tie points (%d rejected by their neighbours)", len(shifts), len(centres),
                int((~agree).sum()))
    model = fit_scene_model(shifts, k0[kept], k1[kept], scene.model, scene.spacing, config.geometry,
                            scene.min_local_windows)
    H = result.H

    def mapping(p: np.ndarray) -> np.ndarray:
        return apply_transform(H, p + model.correction(p))

    result.displacement = DisplacementField.from_mapping(mapping, optical.width, optical.height, scene.field_step)
    working = apply_transform(H, k1)
    # inliers as for a pair: matches of agreeing windows within the inlier threshold of the final registration
    kept &= np.linalg.norm(working - mapping(k0), axis=1) <= config.geometry.threshold_px
    result.centres, result.kept, result.shifts, result.model = centres, kept, shifts, model
    result.matches = MatchResult(k0, working, conf, {"windows": len(centres)})
    if len(shifts):
        result.residual_px = np.linalg.norm(shifts.shift - model.correction(shifts.position), axis=1)
    result.timings["model_s"] = time.perf_counter() - t
    logger.info("scene model %s: %s", model.kind, model.info.get("reason", ""))


def _usable_centres(result: SceneRegistration, centres: np.ndarray) -> np.ndarray:
    """Windows whose centre is valid in the optical scene and lands on valid SAR under the coarse transform."""
    if len(centres) == 0:
        return np.zeros(0, bool)
    om = result.coarse.optical.mask
    sx, sy = om.shape[1] / result.optical.width, om.shape[0] / result.optical.height
    ci = np.clip(((centres[:, 0] + 0.5) * sx).astype(int), 0, om.shape[1] - 1)
    ri = np.clip(((centres[:, 1] + 0.5) * sy).astype(int), 0, om.shape[0] - 1)
    ok = om[ri, ci]
    q = apply_transform(result.H, centres)
    x, y = result.frame.to_sar(q[:, 0], q[:, 1])
    sm = result.coarse.sar.mask
    inside = (x >= 0) & (y >= 0) & (x < result.sar.width) & (y < result.sar.height)
    scx, scy = sm.shape[1] / result.sar.width, sm.shape[0] / result.sar.height
    xi = np.clip(((np.nan_to_num(x) + 0.5) * scx).astype(int), 0, sm.shape[1] - 1)
    yi = np.clip(((np.nan_to_num(y) + 0.5) * scy).astype(int), 0, sm.shape[0] - 1)
    return ok & inside & sm[yi, xi]


__all__ = ["SceneRegistration", "register_scene"]
