"""The registration of two rasters: read -> valid pixels -> georeferenced starting guess -> preprocess -> the core.

Matching happens between the optical image and a *working* SAR image: the SAR resampled onto the optical grid
when both are georeferenced, else the SAR as read. The match -> fit -> refine -> verdict steps are the core's
(:func:`osreg.core.register_arrays`); this module prepares the rasters for it and maps its result back to original
pixel coordinates of both images.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from osreg.core import register_arrays
from osreg.geometry import Estimate, GeometryConfig, apply_transform
from osreg.io.georef import GridMapping, ground_distance_m, pixel_ground_size_m, reproject_sar_to_optical_grid
from osreg.io.raster import Raster, read_raster
from osreg.io.validity import check_overlap_area, check_usable, mask_edge_borders
from osreg.matchers import Matcher, MethodSetup, build_matcher, method_setup, parse_method_spec
from osreg.preprocess import PreprocessConfig, check_band_count, prepare_optical, prepare_sar, resolve_sar_scale
from osreg.types import MatchResult
from osreg.verdict import Verdict, VerdictConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterConfig:
    """Everything that decides a registration.

    Attributes:
        method: the checked method (matcher options and stages), from :func:`osreg.matchers.method_setup`.
        preprocess, geometry, verdict: the stage configs.
        optical_bands: 1-based optical bands to read (None: all).
        sar_band: 1-based SAR band to read (None: all).
        use_georeference: resample the SAR onto the optical grid when both are georeferenced.
        mask_borders: mask edge-connected exact-zero borders of inputs that declare no nodata (GDAL ``nearblack``).
    """

    method: MethodSetup = field(default_factory=lambda: method_setup("cfog"))
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    optical_bands: tuple[int, ...] | None = None
    sar_band: int | None = None
    use_georeference: bool = True
    mask_borders: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method.to_dict(), "preprocess": vars(self.preprocess),
                "geometry": vars(self.geometry), "verdict": vars(self.verdict),
                "optical_bands": self.optical_bands, "sar_band": self.sar_band,
                "use_georeference": self.use_georeference, "mask_borders": self.mask_borders}


def make_config(method: str = "cfog", matcher_options: dict[str, Any] | None = None, **kwargs) -> RegisterConfig:
    """Build a :class:`RegisterConfig`; ``method`` is a name or a ``name[key=value,...]`` spec, ``matcher_options``
    more options (both checked by :func:`osreg.matchers.method_setup`)."""
    name, spec_options = parse_method_spec(method)
    setup = method_setup(name, {**spec_options, **(matcher_options or {})})
    return RegisterConfig(method=setup, **kwargs)


@dataclass
class Registration:
    """The outcome of :func:`run_registration` (whether trusted or not).

    Attributes:
        config: what was done.
        optical, sar: the inputs as read (masks include detected borders).
        working_sar: the SAR the matcher saw (on the optical grid when georeferenced).
        mapping: how working-SAR pixels map to original SAR pixels (None in pixel space).
        matches: matches, keypoints1 in *working* SAR pixels.
        estimate: robust fit (optical px -> working SAR px).
        verdict: trust checks.
        timings: seconds per stage.
        optical_image, sar_image: the preprocessed images the matcher saw.
        refine_report: what the template refinement did (empty when off).
        border_masked_px: pixels masked as edge-connected borders, per input.
    """

    config: RegisterConfig
    optical: Raster
    sar: Raster
    working_sar: Raster
    mapping: GridMapping | None
    matches: MatchResult
    estimate: Estimate
    verdict: Verdict
    timings: dict[str, float]
    optical_image: np.ndarray
    sar_image: np.ndarray
    refine_report: dict = field(default_factory=dict)
    border_masked_px: dict[str, int] = field(default_factory=dict)

    @property
    def georeferenced(self) -> bool:
        return self.mapping is not None

    def keypoints1_in_sar(self) -> np.ndarray:
        """Match positions in original SAR pixel coordinates."""
        if self.mapping is None:
            return self.matches.keypoints1
        return self.mapping.grid_to_sar_pixels(self.matches.keypoints1)

    def transform_to_sar(self) -> tuple[np.ndarray | None, bool]:
        """The optical px -> original SAR px transform, and whether it is exact.

        In pixel space it is the fit itself. With georeferencing in one CRS it is the fit composed exactly with
        the two geotransforms; across CRSs the composition is not a plane transform and is approximated by a
        homography fitted to a 20x20 grid of points.
        """
        H = self.estimate.H
        if H is None or self.mapping is None:
            return H, True
        o, s = self.optical, self.sar
        if o.crs == s.crs:
            half = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
            unhalf = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
            to = np.vstack([np.array(o.transform).reshape(3, 3)[:2], [0, 0, 1]])
            ts = np.vstack([np.array(s.transform).reshape(3, 3)[:2], [0, 0, 1]])
            G = unhalf @ np.linalg.inv(ts) @ to @ half
            return G @ H, True
        gx, gy = np.meshgrid(np.linspace(0, o.width - 1, 20), np.linspace(0, o.height - 1, 20))
        p0 = np.stack([gx.ravel(), gy.ravel()], axis=1)
        p1 = self.mapping.grid_to_sar_pixels(apply_transform(H, p0))
        ok = np.all(np.isfinite(p1), axis=1)
        G, _ = cv2.findHomography(p0[ok].astype(np.float32), p1[ok].astype(np.float32), 0)
        return G, False


def read_inputs(optical_path: str, sar_path: str, config: RegisterConfig = RegisterConfig()) -> tuple[Raster, Raster]:
    """Read both inputs with the bands the config selects.

    Raises:
        RasterReadError, InputError, NodataError: see :func:`osreg.io.raster.read_raster`.
    """
    optical = read_raster(optical_path, "optical", config.optical_bands)
    sar = read_raster(sar_path, "SAR", None if config.sar_band is None else [config.sar_band])
    return optical, sar


def mask_borders(optical: Raster, sar: Raster, config: RegisterConfig = RegisterConfig()
                 ) -> tuple[Raster, Raster, dict[str, int]]:
    """Both inputs with their edge-connected exact-zero borders masked when ``config.mask_borders`` (inputs that
    declare no nodata; :func:`osreg.io.validity.mask_edge_borders`), and the pixels masked per input (empty when
    off)."""
    masked: dict[str, int] = {}
    if config.mask_borders:
        optical, masked["optical"] = mask_edge_borders(optical, "optical")
        sar, masked["sar"] = mask_edge_borders(sar, "SAR")
    return optical, sar, masked


def run_registration(
    optical_path: str,
    sar_path: str,
    config: RegisterConfig = RegisterConfig(),
    matcher: Matcher | None = None,
) -> Registration:
    """Register a SAR image to an optical image.

    Args:
        optical_path, sar_path: raster files.
        config: what to do.
        matcher: a ready matcher for ``config.method`` (reused across calls to avoid reloading weights); built from
            the config if None.

    Raises:
        InputError (and subclasses): unreadable files, no overlap, nodata-only, constant or too small images, too
            little valid data or overlap, unknown method, unusable band counts.
    """
    t0 = time.perf_counter()
    optical, sar = read_inputs(optical_path, sar_path, config)
    return register_rasters(optical, sar, config, matcher, t_read=time.perf_counter() - t0)


def register_rasters(
    optical: Raster,
    sar: Raster,
    config: RegisterConfig = RegisterConfig(),
    matcher: Matcher | None = None,
    t_read: float = 0.0,
) -> Registration:
    """:func:`run_registration` on rasters already in memory."""
    timings = {"read_s": t_read}
    use_georeference = config.use_georeference and optical.is_georeferenced and sar.is_georeferenced
    fallback = matcher is None and use_georeference and config.method.search == "auto"
    if matcher is None:
        # search=auto: the global rotation/scale search only when there is no usable georeference
        matcher = build_matcher(config.method, georeferenced=use_georeference)
    method, min_size = config.method.name, matcher.min_size
    check_band_count(optical, "optical", method)
    check_band_count(sar, "SAR", method)
    optical, sar, masked = mask_borders(optical, sar, config)
    check_usable(optical, "optical", method, min_size)
    check_usable(sar, "SAR", method, min_size)
    mapping = None
    working = sar
    t = time.perf_counter()
    if use_georeference:
        mapping = reproject_sar_to_optical_grid(optical, sar)
        working = mapping.sar_on_grid
        check_overlap_area(working.mask & optical.mask, method, min_size)
        logger.info("both inputs georeferenced: SAR resampled onto the optical grid as the starting guess")
    elif optical.is_georeferenced != sar.is_georeferenced:
        logger.warning("only one input is georeferenced: registering in pixel space")
    timings["georef_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pre = dataclasses.replace(config.preprocess, sar_scale=resolve_sar_scale(sar, config.preprocess))
    img0 = prepare_optical(optical, pre, method)
    img1 = prepare_sar(working, pre, method)
    timings["preprocess_s"] = time.perf_counter() - t
    core = register_arrays(img0, img1, optical.mask, working.mask, matcher, config.geometry, config.verdict,
                           config.method.template_refine)
    if fallback and not core.verdict.good:
        # the georeference is off by more than the matcher searches: the global search on the same pair
        logger.info("not trusted from the georeference (%s): global search", "; ".join(core.verdict.reasons))
        searched = build_matcher(dataclasses.replace(config.method, search="global"), georeferenced=False)
        again = register_arrays(img0, img1, optical.mask, working.mask, searched, config.geometry, config.verdict,
                                config.method.template_refine)
        again.timings["match_s"] += core.timings.get("match_s", 0.0)
        again.matches.info["georeference_fallback"] = "global search: " + "; ".join(core.verdict.reasons)
        if again.verdict.good:
            core = again
    timings.update(core.timings)
    return Registration(config, optical, sar, working, mapping, core.matches, core.estimate, core.verdict, timings,
                        img0, img1, core.refine_report, masked)


def residual_misregistration(reg: Registration) -> dict[str, float] | None:
    """How far the georeferenced starting guess was off: displacement of the fit over the image.

    Returns mean and max displacement in pixels and in ground metres (measured on the ellipsoid, so independent of
    the CRS's scale factor), the mean shift in pixels, and the ground size of an optical pixel at the scene centre;
    None in pixel space or without a fit.
    """
    if reg.mapping is None or reg.estimate.H is None:
        return None
    o = reg.optical
    gx, gy = np.meshgrid(np.linspace(0, o.width - 1, 16), np.linspace(0, o.height - 1, 16))
    p = np.stack([gx.ravel(), gy.ravel()], axis=1)
    q = apply_transform(reg.estimate.H, p)
    d_px = np.linalg.norm(q - p, axis=1)
    d_m = ground_distance_m(o.crs, o.pixel_to_map(p), o.pixel_to_map(q))
    px_m = pixel_ground_size_m(o.crs, o.transform, o.width, o.height)
    shift = q.mean(0) - p.mean(0)
    return {
        "mean_px": float(d_px.mean()),
        "max_px": float(d_px.max()),
        "mean_m": float(d_m.mean()),
        "max_m": float(d_m.max()),
        "shift_x_px": float(shift[0]),
        "shift_y_px": float(shift[1]),
        "ground_pixel_size_m": [float(px_m[0]), float(px_m[1])],
    }


__all__ = [
    "RegisterConfig",
    "Registration",
    "make_config",
    "read_inputs",
    "register_rasters",
    "residual_misregistration",
    "run_registration",
]
